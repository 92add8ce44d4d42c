// The hand-written matcher for the Llama-3 / Qwen pre-tokenizer regexes (io/tokenizer/regex_scan.cpp) against PCRE2
// itself: the same pattern wrapped in a non-capturing group is not recognized as one of the two fast patterns, so
// it runs through PCRE2 (JIT); both must split every string identically. Random strings over an alphabet of the
// characters where the Unicode classes are subtle (ſ and K-sign case folding, U+0085 / U+2028 line breaks, NBSP and
// ideographic space, non-ASCII digits and letters, combining marks, emoji, control bytes, CR LF runs).
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "miniseq/io/tokenizer/regex.h"
#include "miniseq/io/tokenizer/regex_scan.h"

using namespace miniseq::tok;

TEST(TokenizerRegex, FastMatcherSplitsLikePcre2) {
  const char* patterns[] = {
      // Llama-3
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
      // Qwen2 / Qwen3
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"};
  const std::vector<std::string> alphabet = {
      "a", "Z", "s", "S", "t", "r", "e", "E", "v", "l", "L", "m", "d", "D", "x", "0", "5", "9", " ", " ", "  ",
      "\t", "\n", "\r", "\r\n", "\v", "\f", "'", "'", "\"", "(", ".", ",", "-", "_", "\x01", "\x1c", "\x7f",
      "\u017f", "\u0085", "\u00a0", "\u2028", "\u180e", "\u3000", "\u00e9", "\u2014", "\u4e2d", "\u0663", "\u00b2",
      "\u2581", "\U0001F600", "\u0301", "\u212a", "\u00bd", "\u2160"};
  std::mt19937 rng(42);
  for (int pi = 0; pi < 2; ++pi) {
    const std::string wrapped = std::string("(?:") + patterns[pi] + ")";
    ASSERT_NE(scan_pattern_of(patterns[pi]), ScanPattern::kNone);  // the fast matcher is really in use
    ASSERT_EQ(scan_pattern_of(wrapped), ScanPattern::kNone);        // and the wrapped pattern is PCRE2's alone
    Regex fast(patterns[pi], "fast"), pcre(wrapped, "pcre2");
    std::vector<std::pair<size_t, size_t>> a, b;
    for (int it = 0; it < 40000; ++it) {
      std::string s;
      const int len = 1 + static_cast<int>(rng() % 12);
      for (int k = 0; k < len; ++k) s += alphabet[rng() % alphabet.size()];
      a.clear(), b.clear();
      fast.find_all(s, a);
      pcre.find_all(s, b);
      ASSERT_EQ(a, b) << "pattern " << pi << " on \"" << s << "\"";
    }
  }
}
