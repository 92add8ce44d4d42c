// A hand-written matcher for the pre-tokenizer regex of Llama-3 and Qwen2/Qwen3 (tokenizer.json "Split"):
//
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|
//   \s+(?!\S)|\s+                                            (Qwen: \p{N} instead of \p{N}{1,3})
//
// PCRE2's JIT spent about 40% of Llama-3's encode time on it (every character goes through the Unicode
// property tables). This matcher decides matches that only involve ASCII characters from a 128-entry class
// table and gives up (returns 0) as soon as the answer depends on a non-ASCII character; Regex::find_all then
// asks PCRE2 for that one match. So the matches are PCRE2's by construction wherever the matcher answers.
#pragma once

#include <cstddef>
#include <string_view>

namespace miniseq::tok {

// Which pattern a Regex is, when it is one this matcher knows; kNone otherwise.
enum class ScanPattern { kNone, kLlama3, kQwen };
ScanPattern scan_pattern_of(std::string_view regex);

// The end of the match that starts at s[pos] (the pattern matches at every position), or 0 when deciding it
// needs a non-ASCII character's Unicode class.
size_t scan_match(ScanPattern p, std::string_view s, size_t pos);

}  // namespace miniseq::tok
