// Added tokens of tokenizer.json ("added_tokens"): found in the text before the model runs, leftmost-longest
// as Hugging Face's Aho-Corasick matcher, with the single_word / lstrip / rstrip flags. Tokens with
// normalized=false are matched on the raw text, the others on the normalized text (their content normalized
// first).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace miniseq::tok {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

class AddedTokenMatcher {
 public:
  struct Segment {
    size_t begin, end;  // byte range of the text
    int32_t id;         // the added token, or -1 for plain text
  };

  // patterns[i] is the string to find for tokens[i].
  AddedTokenMatcher(std::vector<AddedToken> tokens, std::vector<std::string> patterns);
  AddedTokenMatcher() = default;

  bool empty() const { return tokens_.empty(); }
  // Splits text into added tokens and the plain text between them (empty plain segments are omitted).
  void split(std::string_view text, std::vector<Segment>& out) const;

 private:
  // The first position >= pos where a pattern may start (text.size() when none).
  size_t next_candidate(std::string_view text, size_t pos) const;
  // Longest pattern matching at text[pos], or -1.
  int find_at(std::string_view text, size_t pos) const;
  std::vector<AddedToken> tokens_;
  std::vector<std::string> patterns_;
  std::vector<std::vector<int>> by_first_byte_;  // [256] pattern indices, longest first
  bool first_byte_[256] = {};                    // some pattern starts with this byte
  int only_first_byte_ = -1;                     // the one byte that starts every pattern, or -1
  bool one_byte_pattern_[256] = {};              // a pattern is this single byte
  uint64_t first_pairs_[256 * 256 / 64] = {};    // bit set: some pattern starts with these two bytes
};

}  // namespace miniseq::tok
