// An immutable-after-build string -> id table (the BPE vocabulary): open addressing over one contiguous key
// arena, 16-byte slots that carry 32 bits of the hash, so a probe usually touches one slot and one key.
// Replaces std::unordered_map<std::string, int32_t>, whose node chasing and out-of-line hashing dominated
// the vocabulary lookups of encode (Llama-3's ignore_merges looks up every uncached piece) and of loading
// (three lookups per merge).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace miniseq::tok {

class StringIdMap {
 public:
  // Room for n keys without rehashing.
  void reserve(size_t n);
  // Adds key -> id; a key already present gets the new id.
  void insert(std::string_view key, int32_t id);
  // The id of key, or -1.
  int32_t find(std::string_view key) const;
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint32_t tag = 0;     // high 32 bits of the key's hash
    uint32_t offset = 0;  // key bytes in arena_
    uint32_t length = 0;
    int32_t id = -1;  // -1: empty slot
  };
  void grow();
  std::vector<Slot> slots_;
  std::string arena_;
  size_t mask_ = 0, size_ = 0;
};

}  // namespace miniseq::tok
