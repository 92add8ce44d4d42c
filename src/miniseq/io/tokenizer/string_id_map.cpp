#include "miniseq/io/tokenizer/string_id_map.h"

#include <cstring>

#include "miniseq/io/tokenizer/hash.h"

namespace miniseq::tok {

void StringIdMap::reserve(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;  // load factor <= 1/2: short probe sequences
  if (cap <= slots_.size()) return;
  std::vector<Slot> old(cap, Slot{});
  old.swap(slots_);
  mask_ = cap - 1;
  for (const Slot& s : old) {  // move the slots to their new home (keys stay in the arena)
    if (s.id < 0) continue;
    size_t i = hash_bytes(std::string_view(arena_).substr(s.offset, s.length)) & mask_;
    while (slots_[i].id >= 0) i = (i + 1) & mask_;
    slots_[i] = s;
  }
}

void StringIdMap::grow() {
  reserve(slots_.empty() ? 8 : slots_.size());
}

void StringIdMap::insert(std::string_view key, int32_t id) {
  if (2 * (size_ + 1) > slots_.size()) grow();
  const uint64_t h = hash_bytes(key);
  const auto tag = static_cast<uint32_t>(h >> 32);
  for (size_t i = h & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.id < 0) {
      s = {tag, static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(key.size()), id};
      arena_.append(key);
      ++size_;
      return;
    }
    if (s.tag == tag && std::string_view(arena_).substr(s.offset, s.length) == key) {
      s.id = id;
      return;
    }
  }
}

int32_t StringIdMap::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  const uint64_t h = hash_bytes(key);
  const auto tag = static_cast<uint32_t>(h >> 32);
  for (size_t i = h & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.id < 0) return -1;
    if (s.tag == tag && s.length == key.size() &&
        std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0)
      return s.id;
  }
}

}  // namespace miniseq::tok
