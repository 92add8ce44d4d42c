// Ends a process that waits too long in a collective: a peer that hangs (or died without its launcher
// noticing) must not hold every other rank forever. One thread per process checks once a second; on a timeout
// it prints which collective waited and for how long and exits with status 3, which makes mpirun (and srun
// with
// --kill-on-bad-exit) end the other ranks.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace miniseq::dist {

class Watchdog {
 public:
  Watchdog(int rank, int size, double timeout_seconds);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void set_timeout(double seconds) { timeout_ms_.store(static_cast<int64_t>(seconds * 1000.0)); }
  double timeout() const { return static_cast<double>(timeout_ms_.load()) / 1000.0; }

  // Marks one blocking collective for as long as it lives. `what` must be a string literal.
  class Scope {
   public:
    Scope(Watchdog& w, const char* what) : w_(w) { w_.enter(what); }
    ~Scope() { w_.leave(); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Watchdog& w_;
  };

 private:
  void enter(const char* what);
  void leave();
  void run();

  const int rank_, size_;
  std::atomic<int64_t> timeout_ms_;
  std::atomic<const char*> what_{nullptr};
  std::atomic<int64_t> since_ms_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace miniseq::dist
