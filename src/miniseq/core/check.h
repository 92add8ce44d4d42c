// Two tiers of checks (style.md):
//  - MS_CHECK(cond, msg...): always on, for anything a user or a file can get wrong. Throws miniseq::Error whose
//    message says what, where and what to do.
//  - MS_DASSERT(cond): debug-only assert for internal invariants.
#pragma once

#include <cassert>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace miniseq {

// The one exception type for user-facing errors; what() is a single line.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

}  // namespace miniseq

#define MS_CHECK(cond, ...)                 \
  do {                                      \
    if (!(cond)) ::miniseq::fail(__VA_ARGS__); \
  } while (0)

#define MS_DASSERT(cond) assert(cond)
