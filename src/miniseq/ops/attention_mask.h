// Which keys a query attends to: the ONE place that defines the causal and sliding-window convention, shared
// by every backend and by the scalar reference in tests.
//
// Convention (Hugging Face Mistral; confirmed for transformers 5.24.0 eager and flash paths, see docs/goldens.md):
// query i attends key j iff  j <= i (causal)  and  i - j < window (sliding_window > 0).
// So a window of W keeps W keys per query: i-W+1 … i. The allowed keys of query i are the contiguous range
// [first_key(i), last_key(i)], and both ends are non-decreasing in i; the tiled kernels rely on both facts to
// skip and to classify tiles. To change the convention, change first_key()/last_key() only.
//
// Decoding with a KV cache: the queries are the newest positions, the keys the cached ones. Query row i then
// sits at position i + q_offset of the key rows (q_offset = cached keys before the first query), and the same
// rule applies to that position. Training has q_offset = 0 and as many queries as keys.
#pragma once

#include <algorithm>
#include <cstdint>

namespace miniseq {

struct AttentionMask {
  int64_t seq = 0;  // keys: S (keys and queries share positions 0 … S-1 when q_offset = 0)
  bool causal = true;
  int64_t window = 0;    // 0 = no sliding window
  int64_t q_offset = 0;  // key row of query row 0

  int64_t first_key(int64_t i) const {
    return window > 0 ? std::max<int64_t>(0, i + q_offset - window + 1) : 0;
  }
  int64_t last_key(int64_t i) const { return causal ? std::min<int64_t>(i + q_offset, seq - 1) : seq - 1; }
  bool allowed(int64_t i, int64_t j) const { return j >= first_key(i) && j <= last_key(i); }

  // Tiles of queries [i0, i1) × keys [j0, j1): does any pair attend, and do all pairs attend?
  bool tile_any(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    return j0 <= last_key(i1 - 1) && j1 - 1 >= first_key(i0);
  }
  bool tile_all(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    return j1 - 1 <= last_key(i0) && j0 >= first_key(i1 - 1);
  }
};

}  // namespace miniseq
