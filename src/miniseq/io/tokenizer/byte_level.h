// The GPT-2 byte-to-unicode table of the ByteLevel pre-tokenizer and decoder: printable bytes map to
// themselves (as code points), the other 68 bytes to U+0100 + n in byte order, so every byte becomes a
// visible character.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace miniseq::tok {

struct ByteLevelTable {
  std::array<char32_t, 256> to_char{};     // byte -> code point
  std::array<std::string, 256> to_utf8{};  // byte -> UTF-8 of that code point
  std::array<uint16_t, 256> utf8_pair{};   // the same as 2 bytes (second byte 0 for a 1-byte character)
  std::array<uint8_t, 256> utf8_len{};     // 1 or 2
  std::array<int16_t, 324> to_byte{};      // code point -> byte, -1 when not a byte-level character

  ByteLevelTable();
};

const ByteLevelTable& byte_level_table();

// Maps every byte of text to its byte-level character (the ByteLevel pre-tokenizer's alphabet).
void byte_level_encode(std::string_view text, std::string& out);

// Inverse of byte_level_encode for one token: false (out untouched) when a character is not byte-level.
bool byte_level_decode(std::string_view token, std::string& out);

}  // namespace miniseq::tok
