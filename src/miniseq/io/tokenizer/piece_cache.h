// The BPE merge cache: piece (as given to the model) -> final ids. One per thread and per model (a model's
// serial number), so lookups take no lock; direct-mapped, a colliding piece replaces the slot.
//
// Pieces of up to 24 bytes (nearly all English words) live in one 64-byte cache line: the key is held as
// three zero-padded 64-bit words, so a lookup is a hash of three words and three integer compares, with
// no call to memcmp or std::hash. Longer pieces (up to 255 bytes, as Hugging Face's cache) use a smaller
// table of heap-allocated slots.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "miniseq/io/tokenizer/hash.h"

namespace miniseq::tok {

class PieceCache {
 public:
  static constexpr size_t kShortBytes = 24, kShortIds = 8, kMaxBytes = 255;

  // Where a piece lives (or would be stored after a miss).
  struct Ref {
    uint64_t key[3];  // short pieces: the zero-padded bytes
    uint64_t hash;
    void* slot;  // nullptr: not cacheable (too long)
    bool is_short;
  };

  // This thread's cache for the model with this serial number (created empty on first use).
  static PieceCache& for_model(uint64_t serial) {
    thread_local PieceCache* last = nullptr;
    if (last && last->owner_ == serial) return *last;
    return *(last = &lookup_slow(serial));
  }

  // Appends the cached ids of piece and returns true, or fills ref for store() and returns false.
  bool find(std::string_view piece, std::vector<int32_t>& out, Ref& ref) {
    const size_t n = piece.size();
    if (n <= kShortBytes) {
      const char* p = piece.data();
      ref.key[0] = load_tail(p, std::min<size_t>(n, 8));
      ref.key[1] = n > 8 ? load_tail(p + 8, std::min<size_t>(n - 8, 8)) : 0;
      ref.key[2] = n > 16 ? load_tail(p + 16, n - 16) : 0;
      using namespace hash_detail;
      ref.hash = mum(ref.key[0] ^ kP0 ^ n, ref.key[1] ^ kP1) ^ mum(ref.key[2] ^ kP2, kP0);
      ShortSlot& s = short_[ref.hash & (kShortSlots - 1)];
      ref.slot = &s, ref.is_short = true;
      if (s.length != n || s.key[0] != ref.key[0] || s.key[1] != ref.key[1] || s.key[2] != ref.key[2])
        return false;
      for (int k = 0; k < s.n_ids; ++k) out.push_back(s.ids[k]);  // a few ids: cheaper than insert's memmove
      return true;
    }
    ref.is_short = false;
    if (n > kMaxBytes) return ref.slot = nullptr, false;
    ref.hash = hash_bytes(piece);
    LongSlot& s = long_[ref.hash & (kLongSlots - 1)];
    ref.slot = &s;
    if (s.hash != ref.hash || s.key != piece) return false;
    out.insert(out.end(), s.ids.begin(), s.ids.end());
    return true;
  }

  // Stores the ids of the piece that find() missed.
  static void store(const Ref& ref, std::string_view piece, const std::vector<int32_t>& ids) {
    if (!ref.slot) return;
    if (ref.is_short) {
      if (ids.size() > kShortIds) return;
      auto& s = *static_cast<ShortSlot*>(ref.slot);
      std::memcpy(s.key, ref.key, sizeof s.key);
      s.length = static_cast<uint8_t>(piece.size());
      s.n_ids = static_cast<uint8_t>(ids.size());
      if (!ids.empty()) std::memcpy(s.ids, ids.data(), ids.size() * sizeof(int32_t));  // data() may be null
    } else {
      auto& s = *static_cast<LongSlot*>(ref.slot);
      s.hash = ref.hash;
      s.key.assign(piece);
      s.ids.assign(ids.begin(), ids.end());
    }
  }

 private:
  static constexpr size_t kShortSlots = size_t{1} << 16, kLongSlots = size_t{1} << 12;
  struct alignas(64) ShortSlot {
    uint64_t key[3] = {0, 0, 0};
    uint8_t length = 0, n_ids = 0;  // length 0: empty (pieces are never empty)
    int32_t ids[kShortIds];
  };
  struct LongSlot {
    uint64_t hash = 0;
    std::string key;
    std::vector<int32_t> ids;
  };
  static PieceCache& lookup_slow(uint64_t serial);

  uint64_t owner_ = 0;
  std::vector<ShortSlot> short_;
  std::vector<LongSlot> long_;
};

}  // namespace miniseq::tok
