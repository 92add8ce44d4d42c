// Shared by the libFuzzer harnesses (fuzz/README.md). A parser of outside input may answer bad bytes only
// with miniseq::Error (the user's "miniseq: error: FILE: ..."); any other exception escapes the harness and
// aborts, which libFuzzer reports together with the input, as it does for ASan and UBSan findings.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "miniseq/core/check.h"

namespace miniseq::fuzz {

template <typename F>
int expect_user_error_only(F&& f) {
  try {
    f();
  } catch (const miniseq::Error&) {
  }
  return 0;
}

// The input as a file (an in-memory one), for the readers that take a path. Reused across runs.
class InputFile {
 public:
  InputFile() : fd_(memfd_create("fuzz-input", 0)) {
    if (fd_ < 0) std::abort();
  }
  const std::string& write(const uint8_t* data, size_t size) {
    if (ftruncate(fd_, 0) != 0 || pwrite(fd_, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
    return path_;
  }

 private:
  int fd_;
  std::string path_ = "/proc/self/fd/" + std::to_string(fd_);
};

}  // namespace miniseq::fuzz
