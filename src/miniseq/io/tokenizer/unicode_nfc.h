// Unicode Normalization Form C (canonical decomposition, canonical ordering, canonical composition), with the
// tables generated from the Unicode Character Database by tools/tokenizer_nfc_tables.py. Used by the NFC
// normalizer (Qwen2/Qwen3 tokenizers).
#pragma once

#include <string>
#include <string_view>

namespace miniseq::tok {

// NFC of valid UTF-8 text. Text that passes the NFC quick check (no combining marks, no code point that NFC
// replaces or composes) is returned unchanged after one scan.
std::string nfc(std::string_view text);

// True when text is certainly NFC (UAX #15 quick check, with Maybe counted as No).
bool nfc_quick_check(std::string_view text);

// Canonical combining class of a code point (0 for starters).
int canonical_combining_class(char32_t c);

}  // namespace miniseq::tok
