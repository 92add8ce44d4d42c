// A fast, non-cryptographic hash for the tokenizer's hot-path tables (vocabulary lookups, the merge cache).
// std::hash<std::string_view> (MurmurHash2 through a non-inlined library call) cost several percent of
// encode time on short pieces; this one is inline, reads 8 bytes per step and mixes with 64x64->128-bit
// multiplies (the wyhash construction). Quality is ample for power-of-two open-addressing tables.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace miniseq::tok {

namespace hash_detail {
inline uint64_t mum(uint64_t a, uint64_t b) {
  const unsigned __int128 r = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}
inline uint64_t load64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t load32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
constexpr uint64_t kP0 = 0xa0761d6478bd642fULL, kP1 = 0xe7037ed1a0b428dbULL, kP2 = 0x8ebc6af09c88c6e3ULL;
}  // namespace hash_detail

inline uint64_t hash_bytes(std::string_view s) {
  using namespace hash_detail;
  const char* p = s.data();
  size_t n = s.size();
  uint64_t h = kP2 ^ n;
  for (; n > 8; p += 8, n -= 8) h = mum(h ^ load64(p), kP0);
  // The last 1..8 bytes without reading past the end: overlapping loads (or three single bytes).
  uint64_t tail;
  if (n >= 4)
    tail = (load32(p) << 32) | load32(p + n - 4);
  else if (n > 0)
    tail = (static_cast<uint64_t>(static_cast<unsigned char>(p[0])) << 16) |
           (static_cast<uint64_t>(static_cast<unsigned char>(p[n / 2])) << 8) |
           static_cast<unsigned char>(p[n - 1]);
  else
    tail = 0;
  return mum(h ^ tail, kP1);
}

// A 64-bit integer mixer (the MurmurHash3 finalizer) for integer keys.
inline uint64_t hash_u64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return k;
}

}  // namespace miniseq::tok
