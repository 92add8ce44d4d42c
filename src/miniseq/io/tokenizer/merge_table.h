// The BPE merges as an open-addressing hash table (left id, right id) -> rank, with the merged ids in a
// separate array indexed by rank. Probing is the cost of every uncached piece (about three probes per
// character), and the probes are cache misses: one slot is 8 bytes (left 21 bits, right 21 bits, rank 22
// bits) instead of 16, so twice as many slots share the caches, and the merged id is only read for the merge
// that is applied. Limits: ids < 2^21 - 1 (2M tokens) and < 2^22 merges, checked at load.
#pragma once

#include <cstdint>
#include <vector>

#include "miniseq/io/tokenizer/hash.h"

namespace miniseq::tok {

class MergeTable {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;  // rank of a pair that does not merge
  static constexpr int kIdBits = 21, kRankBits = 22;
  static constexpr int64_t kMaxIds = (int64_t{1} << kIdBits) - 1, kMaxMerges = int64_t{1} << kRankBits;

  // n: number of merges (rank < n).
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;  // load <= 1/2
    slots_.assign(cap, kEmpty);
    mask_ = cap - 1;
    merged_.assign(n, -1);
  }
  // A repeated pair keeps the later rank, as Hugging Face. Requires a, b < kMaxIds, rank < kMaxMerges.
  void put(int32_t a, int32_t b, uint32_t rank, int32_t merged) {
    const uint64_t key = pair_key(a, b);
    for (uint64_t i = hash_u64(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i] == kEmpty || (slots_[i] >> kRankBits) == key) {
        slots_[i] = (key << kRankBits) | rank;
        merged_[rank] = merged;
        return;
      }
    }
  }
  // Starts loading the pair's home slot (several independent lookups then overlap their cache misses).
  void prefetch(int32_t a, int32_t b) const { __builtin_prefetch(&slots_[hash_u64(pair_key(a, b)) & mask_]); }
  // The rank of merging (a, b), or kNone.
  uint32_t rank(int32_t a, int32_t b) const {
    const uint64_t key = pair_key(a, b);
    for (uint64_t i = hash_u64(key) & mask_;; i = (i + 1) & mask_) {
      const uint64_t s = slots_[i];
      if ((s >> kRankBits) == key) return static_cast<uint32_t>(s & ((uint64_t{1} << kRankBits) - 1));
      if (s == kEmpty) return kNone;
    }
  }
  // Starts loading the merged id of a rank that may be applied soon (a separate array: another cache miss).
  void prefetch_merged(uint32_t rank) const {
    if (rank != kNone) __builtin_prefetch(&merged_[rank]);
  }
  // The token that the merge of this rank produces.
  int32_t merged(uint32_t rank) const { return merged_[rank]; }

 private:
  static constexpr uint64_t kEmpty = UINT64_MAX;  // key bits all ones: ids < kMaxIds never produce it
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(a) << kIdBits) | static_cast<uint64_t>(b);
  }
  std::vector<uint64_t> slots_;  // pair key << kRankBits | rank
  std::vector<int32_t> merged_;  // by rank
  uint64_t mask_ = 0;
};

}  // namespace miniseq::tok
