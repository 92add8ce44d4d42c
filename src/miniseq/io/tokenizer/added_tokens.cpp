#include "miniseq/io/tokenizer/added_tokens.h"

#include <algorithm>
#include <cstring>

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
  int n_first = 0;
  for (int b = 0; b < 256; ++b) {
    first_byte_[b] = !by_first_byte_[b].empty();
    if (first_byte_[b]) ++n_first, only_first_byte_ = b;
  }
  if (n_first != 1) only_first_byte_ = -1;
  for (const std::string& p : patterns_) {
    if (p.size() == 1) one_byte_pattern_[static_cast<unsigned char>(p[0])] = true;
    if (p.size() >= 2) {
      const size_t pair = static_cast<unsigned char>(p[0]) * 256 + static_cast<unsigned char>(p[1]);
      first_pairs_[pair / 64] |= uint64_t{1} << (pair % 64);
    }
  }
  for (auto& v : by_first_byte_)
    std::stable_sort(v.begin(), v.end(),
                     [&](int a, int b) { return patterns_[a].size() > patterns_[b].size(); });
}

size_t AddedTokenMatcher::next_candidate(std::string_view text, size_t pos) const {
  if (only_first_byte_ >= 0) {  // e.g. every special token starts with '<'
    const void* hit = std::memchr(text.data() + pos, only_first_byte_, text.size() - pos);
    return hit ? static_cast<size_t>(static_cast<const char*>(hit) - text.data()) : text.size();
  }
  while (pos < text.size() && !first_byte_[static_cast<unsigned char>(text[pos])]) ++pos;
  return pos;
}

int AddedTokenMatcher::find_at(std::string_view text, size_t pos) const {
  // Most candidates fail on the second byte ("<CR>" against "<|...|>"): check the pair before the patterns.
  const auto b0 = static_cast<unsigned char>(text[pos]);
  if (!one_byte_pattern_[b0]) {
    if (pos + 1 >= text.size()) return -1;
    const size_t pair = b0 * 256 + static_cast<unsigned char>(text[pos + 1]);
    if (!(first_pairs_[pair / 64] >> (pair % 64) & 1)) return -1;
  }
  for (int i : by_first_byte_[static_cast<unsigned char>(text[pos])])
    if (text.compare(pos, patterns_[i].size(), patterns_[i]) == 0) return i;
  return -1;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& out) const {
  size_t start_offset = 0;  // end of the last emitted added token
  for (size_t pos = 0; (pos = next_candidate(text, pos)) < text.size();) {
    const int k = find_at(text, pos);
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
