#include "miniseq/io/tokenizer/piece_cache.h"

#include <array>

namespace miniseq::tok {

PieceCache& PieceCache::lookup_slow(uint64_t serial) {
  // A few models per thread (e.g. tests that load several tokenizers); the oldest is recycled.
  thread_local std::array<std::unique_ptr<PieceCache>, 4> caches;
  thread_local unsigned next = 0;
  for (auto& c : caches)
    if (c && c->owner_ == serial) return *c;
  auto& c = caches[next++ % caches.size()];
  if (!c) c = std::make_unique<PieceCache>();
  c->owner_ = serial;
  c->short_.assign(kShortSlots, ShortSlot{});
  c->long_.assign(kLongSlots, LongSlot{});
  return *c;
}

}  // namespace miniseq::tok
