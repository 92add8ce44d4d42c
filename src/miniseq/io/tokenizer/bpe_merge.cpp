// The merge step of the BPE model: the (left, right) -> (rank, merged) table, a word's initial symbols
// (characters, byte fallback, unk) and the merge loops.
#include <algorithm>
#include <climits>
#include <queue>

#include "miniseq/core/check.h"
#include "miniseq/io/tokenizer/bpe.h"
#include "miniseq/io/tokenizer/hash.h"
#include "miniseq/io/tokenizer/utf8.h"

namespace miniseq::tok {

namespace {
constexpr size_t kHeapThreshold = 64;  // pieces with more symbols use the O(n log n) heap merge
}  // namespace

int32_t BpeModel::char_id(char32_t cp, std::string_view utf8) const {
  if (!prefix_.empty() || !suffix_.empty()) return token_to_id(utf8);
  if (cp < kLowChars) return low_char_ids_[cp];
  auto it = char_ids_.find(cp);
  return it == char_ids_.end() ? -1 : it->second;
}

void BpeModel::initial_symbols(std::string_view w, std::vector<int32_t>& ids) const {
  int32_t pending_unk = -1;  // fused-unk state, as Hugging Face's merge_word
  std::string with_affix;
  const bool plain = prefix_.empty() && suffix_.empty();
  for (size_t i = 0; i < w.size();) {
    // Fast path: an ASCII character that is a token, no unk pending.
    if (const auto b = static_cast<unsigned char>(w[i]); plain && b < 0x80 && pending_unk < 0) {
      if (const int32_t id = low_char_ids_[b]; id >= 0) {
        ids.push_back(id);
        ++i;
        continue;
      }
    }
    const size_t start = i;
    const char32_t cp = utf8_next(w, i);
    std::string_view s = w.substr(start, i - start);
    int32_t id;
    if (plain) {
      id = char_id(cp, s);
    } else {
      with_affix.assign(start > 0 ? prefix_ : std::string());
      with_affix.append(s);
      if (i == w.size()) with_affix += suffix_;
      s = with_affix;
      id = token_to_id(s);
    }
    if (id >= 0) {
      if (pending_unk >= 0) ids.push_back(pending_unk), pending_unk = -1;
      ids.push_back(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
      if (all) {  // Hugging Face adds the bytes without flushing a pending unk first
        for (unsigned char b : s) ids.push_back(byte_ids_[b]);
        continue;
      }
    }
    if (has_unk_) {
      MS_CHECK(unk_id_ >= 0, "tokenizer.json: model.unk_token \"", unk_token_,
               "\" is not in model.vocab but the text needs it; add it to the vocabulary");
      if (pending_unk >= 0 && !fuse_unk_) ids.push_back(pending_unk);
      pending_unk = unk_id_;
    }
    // without an unk token the character is dropped, as Hugging Face does
  }
  if (pending_unk >= 0) ids.push_back(pending_unk);
}

void BpeModel::merge_all(std::vector<int32_t>& ids) const {
  const size_t n = ids.size();
  if (n < 2) return;
  if (n > kHeapThreshold) return merge_all_heap(ids);
  // Small pieces: rank[i] is the rank of pair (i, i+1); repeatedly merge the leftmost lowest rank. The scan
  // is O(n^2) but n is small, and the cost that matters is the table probes.
  uint32_t rank[kHeapThreshold];
  size_t m = n;
  for (size_t i = 0; i + 1 < m; ++i) merges_.prefetch(ids[i], ids[i + 1]);
  for (size_t i = 0; i + 1 < m; ++i) {
    rank[i] = merges_.rank(ids[i], ids[i + 1]);
    merges_.prefetch_merged(rank[i]);
  }
  while (m > 1) {
    // The leftmost lowest rank: the minimum first (a loop the compiler vectorizes), then its position.
    uint32_t low = MergeTable::kNone;
    for (size_t i = 0; i + 1 < m; ++i) low = std::min(low, rank[i]);
    if (low == MergeTable::kNone) break;
    size_t best = 0;
    while (rank[best] != low) ++best;
    ids[best] = merges_.merged(rank[best]);
    for (size_t i = best + 1; i + 1 < m; ++i) ids[i] = ids[i + 1], rank[i] = rank[i + 1];
    --m;
    // The pairs on both sides of the new symbol changed; their two lookups overlap.
    const bool right = best + 1 < m, left = best > 0;
    if (right) merges_.prefetch(ids[best], ids[best + 1]);
    if (left) merges_.prefetch_merged(rank[best - 1] = merges_.rank(ids[best - 1], ids[best]));
    rank[best] = right ? merges_.rank(ids[best], ids[best + 1]) : MergeTable::kNone;
    merges_.prefetch_merged(rank[best]);
  }
  ids.resize(m);
}

void BpeModel::merge_all_heap(std::vector<int32_t>& ids) const {
  // Hugging Face's Word::merge_all: a min-heap of (rank, position) over a linked list of symbols.
  struct Entry {
    uint32_t rank;
    int32_t pos, merged;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const auto n = static_cast<int32_t>(ids.size());
  std::vector<int32_t> prev(n), next(n);
  for (int32_t i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
  std::vector<Entry> storage;
  storage.reserve(static_cast<size_t>(n));
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap(std::greater<Entry>{},
                                                                           std::move(storage));
  auto push = [&](int32_t pos) {
    if (pos < 0 || next[pos] < 0) return;
    const uint32_t r = merges_.rank(ids[pos], ids[next[pos]]);
    if (r != MergeTable::kNone) heap.push({r, pos, merges_.merged(r)});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const int32_t p = top.pos;
    if (ids[p] < 0 || next[p] < 0) continue;
    const int32_t q = next[p];
    const uint32_t r = merges_.rank(ids[p], ids[q]);
    if (r == MergeTable::kNone || merges_.merged(r) != top.merged) continue;  // stale entry
    ids[p] = top.merged;
    ids[q] = -1;
    next[p] = next[q];
    if (next[q] >= 0) prev[next[q]] = p;
    push(prev[p]);
    push(p);
  }
  ids.erase(std::remove(ids.begin(), ids.end(), -1), ids.end());
}

}  // namespace miniseq::tok
