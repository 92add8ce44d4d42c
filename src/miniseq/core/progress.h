// A progress line on stderr for long runs: redrawn in place on a terminal, otherwise printed at every 10%.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include <unistd.h>

namespace miniseq {

class Progress {
 public:
  Progress(std::string what, int64_t total, bool enabled = true)
      : what_(std::move(what)), total_(total), enabled_(enabled && total > 0), tty_(isatty(STDERR_FILENO) != 0),
        start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  // `extra` is appended after the count, e.g. "812 tokens/s".
  void update(int64_t done, const std::string& extra = "") {
    if (!enabled_) return;
    const int64_t tenth = done * 10 / total_;
    if (!tty_ && tenth == last_tenth_ && done != total_) return;
    last_tenth_ = tenth;
    constexpr int kWidth = 30;
    const int fill = static_cast<int>(done * kWidth / total_);
    std::string bar(static_cast<size_t>(fill), '=');
    bar.resize(kWidth, ' ');
    std::fprintf(stderr, "%s%s [%s] %lld/%lld %s%s", tty_ ? "\r" : "", what_.c_str(), bar.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_), extra.c_str(), tty_ ? "" : "\n");
    if (tty_ && done == total_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  std::string what_;
  int64_t total_;
  bool enabled_, tty_;
  int64_t last_tenth_ = -1;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace miniseq
