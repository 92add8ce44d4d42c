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

// The n <= 8 bytes at p as a little-endian word, zero-padded, without reading past p + n and without a
// memcpy call: two overlapping loads (n >= 4) or three single bytes.
inline uint64_t load_tail(const char* p, size_t n) {
  using namespace hash_detail;
  if (n == 8) return load64(p);
  if (n >= 4) return load32(p) | (load32(p + n - 4) << (8 * (n - 4)));
  if (n == 0) return 0;
  const auto byte = [&](size_t i) {
    return static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  };
  return byte(0) | byte(n / 2) | byte(n - 1);
}

inline uint64_t hash_bytes(std::string_view s) {
  using namespace hash_detail;
  const char* p = s.data();
  size_t n = s.size();
  uint64_t h = kP2 ^ n;
  for (; n > 8; p += 8, n -= 8) h = mum(h ^ load64(p), kP0);
  return mum(h ^ load_tail(p, n), kP1);
}

// A 64-bit integer mixer (the MurmurHash3 finalizer) for integer keys.
inline uint64_t hash_u64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return k;
}

}  // namespace miniseq::tok
