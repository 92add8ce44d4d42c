#include "miniseq/io/tokenizer/utf8.h"

namespace miniseq::tok {

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {
// Number of bytes of the well-formed prefix of the sequence at s[i] (its full length when complete), and the
// sequence's expected length in *want (0 for a byte that can never start a sequence).
size_t valid_prefix(std::string_view s, size_t i, size_t* want) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return *want = 1, 1;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF)
    *want = 2;
  else if (b0 >= 0xE0 && b0 <= 0xEF)
    *want = 3, lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
  else if (b0 >= 0xF0 && b0 <= 0xF4)
    *want = 4, lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
  else
    return *want = 0, 0;
  size_t k = 1;
  for (; k < *want && i + k < s.size(); ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < lo || b > hi) break;
    lo = 0x80, hi = 0xBF;  // only the second byte has a narrowed range
  }
  return k;
}
}  // namespace

bool utf8_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      i = skip_ascii(s, i);
      continue;
    }
    size_t want = 0;
    const size_t got = valid_prefix(s, i, &want);
    if (want == 0 || got != want) return false;
    i += got;
  }
  return true;
}

std::string utf8_repair(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      out.push_back(s[i++]);
      continue;
    }
    size_t want = 0;
    const size_t got = valid_prefix(s, i, &want);
    if (want != 0 && got == want) {
      out.append(s.substr(i, got));
      i += got;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD for the maximal subpart (at least one byte)
      i += got == 0 ? 1 : got;
    }
  }
  return out;
}

bool is_unicode_whitespace(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace miniseq::tok
