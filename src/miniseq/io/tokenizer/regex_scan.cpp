#include "miniseq/io/tokenizer/regex_scan.h"

#include <array>
#include <cstdint>

namespace miniseq::tok {

namespace {
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwenPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// ASCII classes: \p{L}, \p{N}, \s (Oniguruma's: \t-\r and the space of \p{Z}), everything else.
enum : uint8_t { kOther, kLetter, kDigit, kSpace };
constexpr std::array<uint8_t, 128> make_classes() {
  std::array<uint8_t, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      t[c] = kLetter;
    else if (c >= '0' && c <= '9')
      t[c] = kDigit;
    else if ((c >= '\t' && c <= '\r') || c == ' ')
      t[c] = kSpace;
    else
      t[c] = kOther;
  }
  return t;
}
constexpr std::array<uint8_t, 128> kClasses = make_classes();
constexpr uint8_t kNonAscii = 0xFF;

bool is_newline(uint8_t c) {
  return c == '\r' || c == '\n';
}
}  // namespace

ScanPattern scan_pattern_of(std::string_view regex) {
  if (regex == kLlama3Pattern) return ScanPattern::kLlama3;
  if (regex == kQwenPattern) return ScanPattern::kQwen;
  return ScanPattern::kNone;
}

size_t scan_match(ScanPattern p, std::string_view s, size_t pos) {
  const size_t n = s.size();
  const auto cls = [&](size_t i) {
    const auto c = static_cast<unsigned char>(s[i]);
    return c < 0x80 ? kClasses[c] : kNonAscii;
  };
  // The end of the run of class k from i, or 0 when the run stops at a non-ASCII character (which might
  // continue it).
  const auto run = [&](size_t i, uint8_t k) -> size_t {
    while (i < n && cls(i) == k) ++i;
    return i < n && cls(i) == kNonAscii ? 0 : i;
  };
  const auto b = static_cast<unsigned char>(s[pos]);
  const uint8_t c0 = cls(pos);
  if (c0 == kNonAscii) return 0;

  // (?i:'s|'t|'re|'ve|'m|'ll|'d). Non-ASCII: U+017F matches 's' without case.
  if (b == '\'' && pos + 1 < n) {
    const uint8_t c1 = cls(pos + 1);
    if (c1 == kNonAscii) return 0;
    const unsigned char l1 = s[pos + 1] | 0x20;  // lower case of a letter
    if (c1 == kLetter && (l1 == 's' || l1 == 't' || l1 == 'm' || l1 == 'd')) return pos + 2;
    if (c1 == kLetter && (l1 == 'r' || l1 == 'v' || l1 == 'l') && pos + 2 < n) {
      const uint8_t c2 = cls(pos + 2);
      if (c2 == kNonAscii) return 0;
      const unsigned char l2 = s[pos + 2] | 0x20;
      if (c2 == kLetter && l2 == (l1 == 'l' ? 'l' : 'e')) return pos + 3;
    }
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+ : a letter run, possibly after one character that is not CR/LF or a number.
  if (c0 == kLetter) return run(pos + 1, kLetter);
  if (c0 != kDigit && !is_newline(b) && pos + 1 < n) {
    const uint8_t c1 = cls(pos + 1);
    if (c1 == kNonAscii) return 0;
    if (c1 == kLetter) return run(pos + 2, kLetter);
  }
  // \p{N}{1,3} (Qwen: \p{N}).
  if (c0 == kDigit) {
    const size_t max = p == ScanPattern::kLlama3 ? 3 : 1;
    size_t i = pos + 1;
    while (i < n && i - pos < max && cls(i) == kDigit) ++i;
    return i - pos < max && i < n && cls(i) == kNonAscii ? 0 : i;
  }
  // " ?[^\s\p{L}\p{N}]+[\r\n]*" (without the space, a space would have to be the first symbol: no match).
  if (const size_t start = pos + (b == ' ' ? 1 : 0); start < n) {
    const uint8_t c = cls(start);
    if (c == kNonAscii) return 0;
    if (c == kOther) {
      size_t i = run(start + 1, kOther);
      if (i == 0) return 0;
      while (i < n && is_newline(static_cast<unsigned char>(s[i]))) ++i;
      return i;
    }
  }
  if (c0 != kSpace) return 0;  // not reached: every ASCII class is handled above
  // The whitespace run [pos, e) decides the last three alternatives.
  const size_t e = run(pos + 1, kSpace);
  if (e == 0) return 0;
  // \s*[\r\n]+ : up to the run's last CR/LF (\s* backtracks to it).
  for (size_t k = e; k > pos; --k)
    if (is_newline(static_cast<unsigned char>(s[k - 1]))) return k;
  // \s+(?!\S) : the whole run at the end of the text, else the run but its last character (which then
  // starts the next match, e.g. the space of " word").
  if (e == n) return e;
  if (e - pos >= 2) return e - 1;
  return e;  // \s+
}

}  // namespace miniseq::tok
