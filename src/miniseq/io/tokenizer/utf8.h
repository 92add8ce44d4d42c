// UTF-8 helpers for the tokenizer: code point iteration, lossy repair of invalid input (the same U+FFFD
// substitution as Rust's String::from_utf8_lossy and Python's errors="replace"), Unicode White_Space.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace miniseq::tok {

// Length of the UTF-8 sequence that starts with byte b (1 for continuation or invalid bytes).
inline size_t utf8_len(unsigned char b) {
  return b < 0x80 ? 1 : b < 0xE0 ? (b < 0xC0 ? 1 : 2) : b < 0xF0 ? 3 : 4;
}

// Decodes the code point at s[i] and advances i. Requires valid UTF-8 (see utf8_repair).
inline char32_t utf8_next(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const size_t n = utf8_len(b0);
  char32_t cp = n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

// The first position at or after i that holds a non-ASCII byte (s.size() when none); 8 bytes per step, since
// English text is nearly all ASCII.
inline size_t skip_ascii(std::string_view s, size_t i) {
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    if (w & 0x8080808080808080ULL) break;
  }
  while (i < s.size() && static_cast<unsigned char>(s[i]) < 0x80) ++i;
  return i;
}

void utf8_append(std::string& out, char32_t cp);

// True when s is well-formed UTF-8.
bool utf8_valid(std::string_view s);

// s with every ill-formed subsequence replaced by U+FFFD, one per maximal subpart (Unicode 3.9, Table 3-7).
std::string utf8_repair(std::string_view s);

// Unicode White_Space property (Rust's char::is_whitespace).
bool is_unicode_whitespace(char32_t c);

}  // namespace miniseq::tok
