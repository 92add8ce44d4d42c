#include "miniseq/io/tokenizer/added_tokens.h"

#include <algorithm>

#include "miniseq/io/tokenizer/utf8.h"

namespace miniseq::tok {

namespace {
// Approximates Rust's char::is_alphanumeric || '_' (used by single_word): ASCII letters/digits/underscore and
// every non-ASCII character that is not whitespace.
bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  return !is_unicode_whitespace(c);
}
char32_t last_char(std::string_view s) {
  size_t k = s.size() - 1;
  while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
  return utf8_next(s, k);
}
}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens, std::vector<std::string> patterns)
    : tokens_(std::move(tokens)), patterns_(std::move(patterns)), by_first_byte_(256) {
  for (size_t i = 0; i < patterns_.size(); ++i)
    if (!patterns_[i].empty())
      by_first_byte_[static_cast<unsigned char>(patterns_[i][0])].push_back(static_cast<int>(i));
  for (int b = 0; b < 256; ++b) first_byte_[b] = !by_first_byte_[b].empty();
  for (auto& v : by_first_byte_)
    std::stable_sort(v.begin(), v.end(),
                     [&](int a, int b) { return patterns_[a].size() > patterns_[b].size(); });
}

int AddedTokenMatcher::find_at(std::string_view text, size_t pos) const {
  for (int i : by_first_byte_[static_cast<unsigned char>(text[pos])])
    if (text.compare(pos, patterns_[i].size(), patterns_[i]) == 0) return i;
  return -1;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& out) const {
  size_t start_offset = 0;  // end of the last emitted added token
  for (size_t pos = 0; pos < text.size();) {
    const int k = first_byte_[static_cast<unsigned char>(text[pos])] ? find_at(text, pos) : -1;
    if (k < 0) {
      ++pos;
      continue;
    }
    const AddedToken& t = tokens_[k];
    size_t start = pos, stop = pos + patterns_[k].size();
    pos = stop;  // the matcher resumes after this match whether or not it is kept
    if (start < start_offset) continue;
    if (t.single_word) {
      const bool start_ok = start == 0 || !is_word_char(last_char(text.substr(0, start)));
      size_t j = stop;
      const bool stop_ok = stop == text.size() || !is_word_char(utf8_next(text, j));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) {
      size_t s = start;
      while (s > start_offset) {
        size_t k2 = s - 1;
        while (k2 > 0 && (static_cast<unsigned char>(text[k2]) & 0xC0) == 0x80) --k2;
        size_t j = k2;
        if (!is_unicode_whitespace(utf8_next(text, j))) break;
        s = k2;
      }
      start = s;
    }
    if (t.rstrip) {
      while (stop < text.size()) {
        size_t j = stop;
        if (!is_unicode_whitespace(utf8_next(text, j))) break;
        stop = j;
      }
      pos = std::max(pos, stop);
    }
    if (start > start_offset) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, t.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

}  // namespace miniseq::tok
