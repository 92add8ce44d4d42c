#include "miniseq/dist/watchdog.h"

#include <unistd.h>

#include <cstdio>

namespace miniseq::dist {

namespace {
int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

Watchdog::Watchdog(int rank, int size, double timeout_seconds)
    : rank_(rank), size_(size), timeout_ms_(static_cast<int64_t>(timeout_seconds * 1000.0)) {
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Watchdog::enter(const char* what) {
  since_ms_.store(now_ms());
  what_.store(what);
}

void Watchdog::leave() {
  what_.store(nullptr);
}

void Watchdog::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; })) {
    const char* what = what_.load();
    const int64_t limit = timeout_ms_.load();
    if (!what || limit <= 0) continue;
    const int64_t waited = now_ms() - since_ms_.load();
    if (waited < limit || what_.load() != what) continue;
    std::fprintf(
        stderr,
        "miniseq: error: rank %d of %d waited %.0f s in %s for the other ranks (--dist_timeout %.0f): a rank "
        "died or hangs; ending this rank so that the launcher ends the job\n",
        rank_, size_, static_cast<double>(waited) / 1000.0, what, static_cast<double>(limit) / 1000.0);
    std::fflush(stderr);
    std::fflush(stdout);
    _exit(3);
  }
}

}  // namespace miniseq::dist
