// The regular expressions of tokenizer.json (Split pre-tokenizer, Replace normalizer), run by PCRE2 in UTF +
// UCP mode with the JIT. Hugging Face runs them with Oniguruma; the one class whose meaning differs, \s, is
// rewritten to Oniguruma's set (\t-\r, U+0085, \p{Z}; PCRE2 would also match U+180E).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "miniseq/io/tokenizer/regex_scan.h"

namespace miniseq::tok {

class Regex {
 public:
  // Throws miniseq::Error naming `where` (the tokenizer.json field) when the pattern does not compile.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends [begin, end) byte offsets of the successive non-overlapping, non-empty matches in valid UTF-8
  // text.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  // The PCRE2 match at or after pos: false when none.
  bool match_from(std::string_view text, size_t pos, size_t* begin, size_t* end) const;

  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code*
  bool jit_ = false;
  ScanPattern scan_ = ScanPattern::kNone;  // a pattern with a hand-written ASCII matcher (regex_scan.h)
};

// A literal string as a regex pattern (for String patterns).
std::string regex_quote(std::string_view s);

// Rewrites Oniguruma-specific escapes for PCRE2 (\s, \S outside classes; \s inside classes).
std::string onig_to_pcre2(std::string_view pattern);

}  // namespace miniseq::tok
