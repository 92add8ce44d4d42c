// The attention mask convention of ops/attention_mask.h, callable on the device (and on the host, where
// tests/test_ops_cuda.cpp checks it element by element against AttentionMask). Same formulas, copied because
// AttentionMask's functions are host-only; AttentionMask stays the one definition of the convention.
#pragma once

#include <cstdint>

#include "miniseq/ops/attention_mask.h"

#ifdef __CUDACC__
#define MS_HOST_DEVICE __host__ __device__
#else
#define MS_HOST_DEVICE
#endif

namespace miniseq::cuda::attn {

struct DeviceMask {
  int64_t seq;  // keys
  bool causal;
  int64_t window;
  int64_t q_offset;  // key row of query row 0
  int64_t queries;   // query rows (= seq in training)
  int64_t group;     // S²-Attn group size, 0 = none
  int64_t shift;     // 0, or group / 2 for the shifted half of the heads (for_head)
  int64_t head_offset, heads_total;  // sequence parallelism: the call's heads among the model's (0, 0: all)
  // The mask of query head h of H (AttentionMask::for_head): the kernels call it per query head, so a kv head
  // read by shifted and unshifted query heads (GQA) is masked per query head.
  MS_HOST_DEVICE DeviceMask for_head(int64_t h, int64_t H) const {
    DeviceMask m = *this;
    const int64_t all = heads_total > 0 ? heads_total : H;
    m.shift = (group > 0 && h + head_offset >= all / 2) ? group / 2 : 0;
    return m;
  }
  MS_HOST_DEVICE int64_t group_start(int64_t p) const {
    if (group <= 0 || p < shift) return 0;
    return shift + ((p - shift) / group) * group;
  }
  MS_HOST_DEVICE int64_t group_end(int64_t p) const {  // one past the group's last position
    if (group <= 0) return seq;
    const int64_t e = p < shift ? shift : group_start(p) + group;
    return e < seq ? e : seq;
  }
  MS_HOST_DEVICE int64_t first_key(int64_t i) const {
    const int64_t p = i + q_offset;
    const int64_t w = window > 0 ? (p - window + 1 > 0 ? p - window + 1 : 0) : 0;
    const int64_t g = group_start(p);
    return w > g ? w : g;
  }
  MS_HOST_DEVICE int64_t last_key(int64_t i) const {
    const int64_t p = i + q_offset;
    const int64_t c = causal ? (p < seq - 1 ? p : seq - 1) : seq - 1;
    const int64_t g = group_end(p) - 1;
    return c < g ? c : g;
  }
  // Also false for padding rows or columns past the queries or keys (tiles extend past the sequence).
  MS_HOST_DEVICE bool allowed(int64_t i, int64_t j) const {
    return i < queries && j < seq && j >= first_key(i) && j <= last_key(i);
  }
  MS_HOST_DEVICE bool tile_any(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    return j0 <= last_key(i1 - 1) && j1 - 1 >= first_key(i0);
  }
  MS_HOST_DEVICE bool tile_all(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    return j1 - 1 <= last_key(i0) && j0 >= first_key(i1 - 1);
  }
  static DeviceMask from(const AttentionMask& m, int64_t queries) {
    return DeviceMask{m.seq,   m.causal, m.window,      m.q_offset,   queries,
                      m.group, m.shift,  m.head_offset, m.heads_total};
  }
};

}  // namespace miniseq::cuda::attn
