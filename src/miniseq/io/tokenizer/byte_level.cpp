#include "miniseq/io/tokenizer/byte_level.h"

#include <cstring>

#include "miniseq/io/tokenizer/utf8.h"

namespace miniseq::tok {

ByteLevelTable::ByteLevelTable() {
  to_byte.fill(-1);
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    to_char[b] = printable ? static_cast<char32_t>(b) : next++;
    utf8_append(to_utf8[b], to_char[b]);
    to_byte[to_char[b]] = static_cast<int16_t>(b);
    utf8_len[b] = static_cast<uint8_t>(to_utf8[b].size());
    const auto lo = static_cast<unsigned char>(to_utf8[b][0]);
    const auto hi = to_utf8[b].size() > 1 ? static_cast<unsigned char>(to_utf8[b][1]) : 0;
    utf8_pair[b] = static_cast<uint16_t>(lo | (hi << 8));
  }
}

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table;
  return table;
}

void byte_level_encode(std::string_view text, std::string& out) {
  const auto& t = byte_level_table();
  const size_t start = out.size();
  out.resize(start + 2 * text.size());
  char* p = out.data() + start;
  for (unsigned char b : text) {  // write 2 bytes, advance by the character's length
    std::memcpy(p, &t.utf8_pair[b], 2);
    p += t.utf8_len[b];
  }
  out.resize(static_cast<size_t>(p - out.data()));
}

bool byte_level_decode(std::string_view token, std::string& out) {
  const auto& t = byte_level_table();
  const size_t start = out.size();
  for (size_t i = 0; i < token.size();) {
    const char32_t c = utf8_next(token, i);
    if (c >= t.to_byte.size() || t.to_byte[c] < 0) {
      out.resize(start);
      return false;
    }
    out.push_back(static_cast<char>(t.to_byte[c]));
  }
  return true;
}

}  // namespace miniseq::tok
