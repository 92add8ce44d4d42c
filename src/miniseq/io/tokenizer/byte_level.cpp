#include "miniseq/io/tokenizer/byte_level.h"

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
  }
}

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table;
  return table;
}

void byte_level_encode(std::string_view text, std::string& out) {
  const auto& t = byte_level_table();
  for (unsigned char b : text) out.append(t.to_utf8[b]);
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
