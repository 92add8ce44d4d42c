// Which keys a query attends to: the ONE place that defines the causal and sliding-window convention, shared
// by every backend and by the scalar reference in tests.
//
// Convention (Hugging Face Mistral; confirmed for transformers 5.24.0 eager and flash paths, see docs/goldens.md):
// query i attends key j iff  j <= i (causal)  and  i - j < window (sliding_window > 0).
// So a window of W keeps W keys per query: i-W+1 … i. The allowed keys of query i are the contiguous range
// [first_key(i), last_key(i)], and both ends are non-decreasing in i; the tiled kernels rely on both facts to
// skip and to classify tiles. To change the convention, change first_key()/last_key() only.
//
// S²-Attn (LongLoRA's shifted sparse attention, training only): with group > 0, a query also attends only to keys of
// its own group of `group` positions. Heads [0, H/2) use groups [0, G), [G, 2G), …; heads [H/2, H) (H/2 rounded
// down, as LongLoRA's num_heads // 2) use groups shifted by G/2: [0, G/2), [G/2, G/2 + G), … LongLoRA rolls the
// shifted heads' tokens by −G/2, which puts the last half group and the first one into one group, so that the
// first G/2 tokens see the last G/2 (its issues #15, #90); here the first half group is a group of its own and no
// query sees a key outside [group start, itself]. The groups are on positions, so GQA needs nothing special: a kv
// head read by shifted and unshifted query heads is masked per query head (for_head). Sliding window and groups
// combine (both must allow). Ranges stay contiguous and non-decreasing in i.
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
  int64_t group = 0;     // S²-Attn group size G; 0 = no groups
  int64_t shift = 0;     // 0, or G/2 for the shifted half of the heads (for_head)
  // Sequence parallelism: the H heads of a call are the model's heads [head_offset, head_offset + H) of
  // heads_total (0: the call has all heads). The shifted half is the model's, not the call's.
  int64_t head_offset = 0, heads_total = 0;

  // The mask of query head h of H: the shifted groups for the model's heads >= heads_total/2 (H/2 when the
  // call holds all heads) when there are groups.
  AttentionMask for_head(int64_t h, int64_t H) const {
    AttentionMask m = *this;
    const int64_t all = heads_total > 0 ? heads_total : H;
    m.shift = (group > 0 && h + head_offset >= all / 2) ? group / 2 : 0;
    return m;
  }
  // First position of the group holding position p (0 without groups).
  int64_t group_start(int64_t p) const {
    if (group <= 0) return 0;
    if (p < shift) return 0;
    return shift + ((p - shift) / group) * group;
  }
  int64_t group_end(int64_t p) const {  // one past the group's last position
    return group <= 0 ? seq : std::min<int64_t>(seq, p < shift ? shift : group_start(p) + group);
  }
  int64_t first_key(int64_t i) const {
    const int64_t p = i + q_offset;
    const int64_t w = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
    return std::max(w, group_start(p));
  }
  int64_t last_key(int64_t i) const {
    const int64_t p = i + q_offset;
    const int64_t c = causal ? std::min<int64_t>(p, seq - 1) : seq - 1;
    return std::min(c, group_end(p) - 1);
  }
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
