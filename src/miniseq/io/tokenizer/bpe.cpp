#include "miniseq/io/tokenizer/bpe.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <queue>

#include "miniseq/core/check.h"
#include "miniseq/io/tokenizer/utf8.h"

namespace miniseq::tok {

using nlohmann::json;

namespace {
constexpr size_t kHeapThreshold = 64;  // pieces with more symbols use the O(n log n) heap merge
constexpr const char* kMetaspace = "\u2581";

inline uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return k;
}
}  // namespace

// The merge cache: per thread and per model, a direct-mapped table piece -> ids (no locks; a colliding piece
// replaces the slot). Each model has a serial number so that a thread's tables never mix two models.
namespace {
constexpr size_t kCacheSlots = size_t{1} << 16;
std::atomic<uint64_t> g_next_serial{1};

// One cache line: the piece and its ids inline (pieces over 22 bytes or 8 ids are not cached).
struct alignas(64) CacheSlot {
  static constexpr size_t kKeyBytes = 22, kIds = 8;
  uint64_t hash = 0;
  uint8_t key_len = 0, n_ids = 0;
  char key[kKeyBytes];
  int32_t ids[kIds];
};
// Longer pieces (up to 256 bytes, as Hugging Face's cache): fewer slots, heap-allocated.
struct LongSlot {
  uint64_t hash = 0;
  std::string key;
  std::vector<int32_t> ids;
};
constexpr size_t kLongSlots = size_t{1} << 12, kMaxCachedBytes = 256;
struct ThreadCache {
  uint64_t owner = 0;
  std::vector<CacheSlot> slots;
  std::vector<LongSlot> long_slots;
};

ThreadCache& thread_cache(uint64_t serial) {
  thread_local std::array<ThreadCache, 4> caches;
  thread_local unsigned next = 0;
  for (auto& c : caches)
    if (c.owner == serial) return c;
  ThreadCache& c = caches[next++ % caches.size()];
  c.owner = serial;
  c.slots.assign(kCacheSlots, CacheSlot{});
  c.long_slots.assign(kLongSlots, LongSlot{});
  return c;
}
}  // namespace

void BpeModel::MergeTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  slots.assign(cap, Slot{UINT64_MAX, 0});
  mask = cap - 1;
}

void BpeModel::MergeTable::put(int32_t a, int32_t b, uint32_t rank, int32_t id) {
  const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  for (uint64_t i = mix(key) & mask;; i = (i + 1) & mask) {
    if (slots[i].key == UINT64_MAX ||
        slots[i].key == key) {  // a repeated pair: the later line wins, as in HF
      slots[i].key = key;
      slots[i].value = (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(id);
      return;
    }
  }
}

bool BpeModel::MergeTable::get(int32_t a, int32_t b, uint32_t* rank, int32_t* id) const {
  const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  for (uint64_t i = mix(key) & mask;; i = (i + 1) & mask) {
    const Slot& s = slots[i];
    if (s.key == key) {
      *rank = static_cast<uint32_t>(s.value >> 32);
      *id = static_cast<int32_t>(s.value & 0xFFFFFFFFu);
      return true;
    }
    if (s.key == UINT64_MAX) return false;
  }
}

BpeModel::BpeModel(const json& j, const std::string& where) : serial_(g_next_serial.fetch_add(1)) {
  MS_CHECK(j.contains("vocab") && j["vocab"].is_object(), where,
           ".vocab: missing or not an object {token: id}");
  MS_CHECK(j.contains("merges") && j["merges"].is_array(), where, ".merges: missing or not an array");
  auto opt_string = [&](const char* key) -> std::string {
    if (!j.contains(key) || j[key].is_null()) return "";
    MS_CHECK(j[key].is_string(), where, ".", key, ": expected a string or null");
    return j[key].get<std::string>();
  };
  MS_CHECK(!j.contains("dropout") || j["dropout"].is_null() || j["dropout"] == 0.0, where,
           ".dropout: BPE dropout is not supported (set it to null for deterministic encoding)");
  prefix_ = opt_string("continuing_subword_prefix");
  suffix_ = opt_string("end_of_word_suffix");
  fuse_unk_ = j.value("fuse_unk", false);
  byte_fallback_ = j.value("byte_fallback", false);
  ignore_merges_ = j.value("ignore_merges", false);

  int32_t max_id = -1;
  vocab_.reserve(j["vocab"].size());
  for (const auto& [token, id] : j["vocab"].items()) {
    MS_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < INT32_MAX, where,
             ".vocab[\"", token, "\"]: id must be a non-negative integer");
    vocab_[token] = id.get<int32_t>();
    max_id = std::max(max_id, id.get<int32_t>());
  }
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  has_id_.assign(static_cast<size_t>(max_id + 1), 0);
  for (const auto& [token, id] : vocab_) id_to_token_[id] = token, has_id_[id] = 1;

  if (j.contains("unk_token") && !j["unk_token"].is_null()) {
    unk_token_ = opt_string("unk_token");
    has_unk_ = true;
    unk_id_ = token_to_id(unk_token_);  // absent: an error when first needed, as Hugging Face
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    byte_ids_[b] = token_to_id(name);
  }
  ascii_ids_.assign(0x800, -1);
  metaspace_split_ = prefix_.empty() && suffix_.empty() && vocab_.count(kMetaspace);
  for (const auto& [token, id] : vocab_) {
    size_t i = 0;
    const char32_t cp = token.empty() ? 0 : utf8_next(token, i);
    if (!token.empty() && i == token.size()) {
      if (cp < 0x800)
        ascii_ids_[cp] = id;
      else
        char_ids_[cp] = id;
    }
    // "▁" anywhere but in the leading run would let a merge cross the split point.
    size_t lead = 0;
    while (token.compare(lead, 3, kMetaspace) == 0) lead += 3;
    if (token.find(kMetaspace, lead) != std::string::npos) metaspace_split_ = false;
  }

  const json& merges = j["merges"];
  merges_.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m;
      const size_t sp = s.find(' ');
      MS_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, where, ".merges[", r,
               "]: expected \"left right\" with one space, got \"", s, "\"");
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else {
      MS_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), where, ".merges[", r,
               "]: expected \"left right\" or [\"left\", \"right\"]");
      a = m[0], b = m[1];
    }
    const int32_t ia = token_to_id(a), ib = token_to_id(b);
    MS_CHECK(ia >= 0, where, ".merges[", r, "]: token \"", a, "\" is not in ", where, ".vocab");
    MS_CHECK(ib >= 0, where, ".merges[", r, "]: token \"", b, "\" is not in ", where, ".vocab");
    const std::string merged = a + b.substr(std::min(prefix_.size(), b.size()));
    const int32_t im = token_to_id(merged);
    MS_CHECK(im >= 0, where, ".merges[", r, "]: merged token \"", merged, "\" is not in ", where, ".vocab");
    merges_.put(ia, ib, static_cast<uint32_t>(r), im);
  }
}

BpeModel::~BpeModel() = default;

int32_t BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size()) || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

int32_t BpeModel::char_id(char32_t cp, std::string_view utf8) const {
  if (!prefix_.empty() || !suffix_.empty()) return token_to_id(utf8);
  if (cp < 0x800) return ascii_ids_[cp];
  auto it = char_ids_.find(cp);
  return it == char_ids_.end() ? -1 : it->second;
}

void BpeModel::initial_symbols(std::string_view w, std::vector<int32_t>& ids) const {
  int32_t pending_unk = -1;  // fused-unk state, as Hugging Face's merge_word
  std::string with_affix;
  for (size_t i = 0; i < w.size();) {
    const size_t start = i;
    const char32_t cp = utf8_next(w, i);
    std::string_view s = w.substr(start, i - start);
    int32_t id;
    if (prefix_.empty() && suffix_.empty()) {
      id = char_id(cp, s);
    } else {
      with_affix.assign(start > 0 ? prefix_ : std::string());
      with_affix.append(s);
      if (i == w.size()) with_affix += suffix_;
      s = with_affix;
      id = token_to_id(s);
    }
    if (id >= 0) {
      if (pending_unk >= 0) ids.push_back(pending_unk), pending_unk = -1;
      ids.push_back(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
      if (all) {  // Hugging Face adds the bytes without flushing a pending unk first
        for (unsigned char b : s) ids.push_back(byte_ids_[b]);
        continue;
      }
    }
    if (has_unk_) {
      MS_CHECK(unk_id_ >= 0, "tokenizer.json: model.unk_token \"", unk_token_,
               "\" is not in model.vocab but the text needs it; add it to the vocabulary");
      if (pending_unk >= 0 && !fuse_unk_) ids.push_back(pending_unk);
      pending_unk = unk_id_;
    }
    // without an unk token the character is dropped, as Hugging Face does
  }
  if (pending_unk >= 0) ids.push_back(pending_unk);
}

void BpeModel::merge_all(std::vector<int32_t>& ids) const {
  const size_t n = ids.size();
  if (n < 2) return;
  if (n > kHeapThreshold) return merge_all_heap(ids);
  // Small pieces: rank[i] is the rank of pair (i, i+1); repeatedly merge the leftmost lowest rank.
  uint32_t rank[kHeapThreshold];
  int32_t merged[kHeapThreshold];
  size_t m = n;
  for (size_t i = 0; i + 1 < m; ++i)
    if (!merges_.get(ids[i], ids[i + 1], &rank[i], &merged[i])) rank[i] = UINT32_MAX;
  while (m > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < m; ++i)
      if (rank[i] < rank[best]) best = i;
    if (rank[best] == UINT32_MAX) break;
    ids[best] = merged[best];
    for (size_t i = best + 1; i + 1 < m; ++i)
      ids[i] = ids[i + 1], rank[i] = rank[i + 1], merged[i] = merged[i + 1];
    --m;
    if (best + 1 < m && !merges_.get(ids[best], ids[best + 1], &rank[best], &merged[best]))
      rank[best] = UINT32_MAX;
    if (best + 1 >= m) rank[best] = UINT32_MAX;
    if (best > 0 && !merges_.get(ids[best - 1], ids[best], &rank[best - 1], &merged[best - 1]))
      rank[best - 1] = UINT32_MAX;
  }
  ids.resize(m);
}

void BpeModel::merge_all_heap(std::vector<int32_t>& ids) const {
  // Hugging Face's Word::merge_all: a min-heap of (rank, position) over a linked list of symbols.
  struct Entry {
    uint32_t rank;
    int32_t pos, merged;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const auto n = static_cast<int32_t>(ids.size());
  std::vector<int32_t> prev(n), next(n);
  for (int32_t i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
  std::vector<Entry> storage;
  storage.reserve(static_cast<size_t>(n));
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap(std::greater<Entry>{},
                                                                           std::move(storage));
  auto push = [&](int32_t pos) {
    uint32_t r;
    int32_t m;
    if (pos >= 0 && next[pos] >= 0 && merges_.get(ids[pos], ids[next[pos]], &r, &m)) heap.push({r, pos, m});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const int32_t p = top.pos;
    if (ids[p] < 0 || next[p] < 0) continue;
    const int32_t q = next[p];
    uint32_t r;
    int32_t m;
    if (!merges_.get(ids[p], ids[q], &r, &m) || m != top.merged) continue;  // stale entry
    ids[p] = m;
    ids[q] = -1;
    next[p] = next[q];
    if (next[q] >= 0) prev[next[q]] = p;
    push(prev[p]);
    push(p);
  }
  ids.erase(std::remove(ids.begin(), ids.end(), -1), ids.end());
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  // The cache holds final ids (ignore_merges included), so it is consulted first.
  CacheSlot* slot = nullptr;
  LongSlot* long_slot = nullptr;
  uint64_t hash = 0;
  if (word.size() < kMaxCachedBytes) {
    hash = std::hash<std::string_view>{}(word) | 1;  // never 0, the empty slot's hash
    ThreadCache& cache = thread_cache(serial_);
    if (word.size() <= CacheSlot::kKeyBytes) {
      slot = &cache.slots[(hash >> 1) & (kCacheSlots - 1)];
      if (slot->hash == hash && slot->key_len == word.size() &&
          std::memcmp(slot->key, word.data(), word.size()) == 0) {
        out.insert(out.end(), slot->ids, slot->ids + slot->n_ids);
        return;
      }
    } else {
      long_slot = &cache.long_slots[(hash >> 1) & (kLongSlots - 1)];
      if (long_slot->hash == hash && long_slot->key == word) {
        out.insert(out.end(), long_slot->ids.begin(), long_slot->ids.end());
        return;
      }
    }
  }
  thread_local std::vector<int32_t> ids;
  ids.clear();
  if (const int32_t id = ignore_merges_ ? token_to_id(word) : -1; id >= 0) {
    ids.push_back(id);
  } else {
    initial_symbols(word, ids);
    merge_all(ids);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (slot && ids.size() <= CacheSlot::kIds) {
    slot->hash = hash;
    slot->key_len = static_cast<uint8_t>(word.size());
    std::memcpy(slot->key, word.data(), word.size());
    slot->n_ids = static_cast<uint8_t>(ids.size());
    std::copy(ids.begin(), ids.end(), slot->ids);
  } else if (long_slot) {
    long_slot->hash = hash;
    long_slot->key.assign(word);
    long_slot->ids.assign(ids.begin(), ids.end());
  }
}

void BpeModel::encode(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (!metaspace_split_) return encode_word(piece, out);
  // Chunks "▁*[^▁]*": no vocabulary token contains "▁" after another character, so no merge crosses a chunk
  // start.
  size_t start = 0;
  for (size_t i = 0; i + 2 < piece.size(); ++i) {
    if (piece.compare(i, 3, kMetaspace) != 0) continue;
    const bool after_metaspace = i >= start + 3 && piece.compare(i - 3, 3, kMetaspace) == 0;
    if (i > start && !after_metaspace) {
      encode_word(piece.substr(start, i - start), out);
      start = i;
    }
    i += 2;
  }
  encode_word(piece.substr(start), out);
}

}  // namespace miniseq::tok
