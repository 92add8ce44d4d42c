// The BPE model: loading, the encode entry points and the merge cache. The merge step itself is in
// bpe_merge.cpp.
#include "miniseq/io/tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"
#include "miniseq/io/tokenizer/byte_level.h"
#include "miniseq/io/tokenizer/piece_cache.h"
#include "miniseq/io/tokenizer/utf8.h"

namespace miniseq::tok {

using nlohmann::json;

namespace {
constexpr std::string_view kMetaspace = "\u2581";
std::atomic<uint64_t> g_next_serial{1};

// Number of "▁" at the start of s.
size_t leading_metaspaces(std::string_view s) {
  size_t n = 0;
  while (s.substr(3 * n, 3) == kMetaspace) ++n;
  return n;
}
bool all_metaspace(std::string_view s) {
  return !s.empty() && leading_metaspaces(s) * 3 == s.size();
}
}  // namespace

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
  const jsonio::Obj o(j, where);
  fuse_unk_ = o.boolean("fuse_unk", false);
  byte_fallback_ = o.boolean("byte_fallback", false);
  ignore_merges_ = o.boolean("ignore_merges", false);

  // Ids are checked before anything is sized by them: the largest decides the id -> token table.
  int32_t max_id = -1;
  const json& vocab = j["vocab"];
  for (const auto& [token, id] : vocab.items()) {
    MS_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < MergeTable::kMaxIds,
             where, ".vocab[\"", jsonio::excerpt(token), "\"]: id must be an integer in [0, ",
             MergeTable::kMaxIds, "), found ", jsonio::describe(id));
    max_id = std::max(max_id, id.get<int32_t>());
  }
  vocab_.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) vocab_.insert(token, id.get<int32_t>());
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  has_id_.assign(static_cast<size_t>(max_id + 1), 0);
  for (const auto& [token, id] : vocab.items()) id_to_token_[id] = token, has_id_[id] = 1;

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
  low_char_ids_.assign(kLowChars, -1);
  // With ignore_merges a piece found whole in the vocabulary is one token, so pieces must not be cut.
  metaspace_split_ = prefix_.empty() && suffix_.empty() && !ignore_merges_ && token_to_id(kMetaspace) >= 0;
  metaspace_id_ = token_to_id(kMetaspace);
  metaspace_runs_ = metaspace_split_;
  for (const auto& [token, id_json] : vocab.items()) {
    const int32_t id = id_json.get<int32_t>();
    size_t i = 0;
    const char32_t cp = token.empty() ? 0 : utf8_next(token, i);
    if (!token.empty() && i == token.size()) {
      if (cp < kLowChars)
        low_char_ids_[cp] = id;
      else
        char_ids_[cp] = id;
    }
    // "▁" anywhere but in the leading run would let a merge cross the split point.
    const size_t lead = leading_metaspaces(token);
    if (token.find(kMetaspace, 3 * lead) != std::string::npos) metaspace_split_ = false;
    if (lead > 1 && !all_metaspace(token)) metaspace_runs_ = false;
  }
  metaspace_runs_ = metaspace_runs_ && metaspace_split_;

  const json& merges = j["merges"];
  MS_CHECK(max_id < MergeTable::kMaxIds && static_cast<int64_t>(merges.size()) <= MergeTable::kMaxMerges,
           where, ": ", max_id + 1, " tokens and ", merges.size(), " merges: at most ", MergeTable::kMaxIds,
           " tokens and ", MergeTable::kMaxMerges, " merges are supported");
  merges_.reserve(merges.size());
  int64_t last_mixed_rank = -1, first_pure_rank = INT64_MAX;  // merges into "▁"-only / other tokens
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
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
    if (metaspace_runs_) {
      const auto rank = static_cast<int64_t>(r);
      if (all_metaspace(merged))
        first_pure_rank = std::min(first_pure_rank, rank);
      else
        last_mixed_rank = rank;
    }
  }
  // See encode_metaspace_chunk: every "▁▁..." merge must come after every other merge.
  metaspace_runs_ = metaspace_runs_ && last_mixed_rank < first_pure_rank;
}

BpeModel::~BpeModel() = default;

void BpeModel::set_byte_level_input() {
  byte_level_input_ = true;
  const ByteLevelTable& t = byte_level_table();
  for (int b = 0; b < 256; ++b)
    byte_char_ids_[b] = prefix_.empty() && suffix_.empty() ? char_id(t.to_char[b], t.to_utf8[b]) : -1;
  if (!ignore_merges_) return;
  // Only tokens made of byte-level characters can equal a mapped piece; key those by their bytes.
  raw_vocab_.reserve(vocab_.size());
  std::string raw;
  for (int32_t id = 0; id <= max_id(); ++id) {
    raw.clear();
    if (has_id_[id] && byte_level_decode(id_to_token_[id], raw)) raw_vocab_.insert(raw, id);
  }
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size()) || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

// The ids of one piece, without the cache.
void BpeModel::word_ids(std::string_view word, std::vector<int32_t>& ids) const {
  if (byte_level_input_) {
    // ignore_merges: the whole piece's token, looked up by its raw bytes.
    if (const int32_t id = ignore_merges_ ? raw_vocab_.find(word) : -1; id >= 0) return ids.push_back(id);
    // Every byte's character is a token (the common case): no byte-level string is needed.
    const size_t start = ids.size();
    bool mapped = true;
    for (unsigned char b : word) {
      if (byte_char_ids_[b] < 0) {
        mapped = false;
        break;
      }
      ids.push_back(byte_char_ids_[b]);
    }
    if (!mapped) {
      thread_local std::string chars;
      chars.clear();
      byte_level_encode(word, chars);
      ids.resize(start);
      initial_symbols(chars, ids);
    }
    return merge_all(ids);
  }
  if (const int32_t id = ignore_merges_ ? token_to_id(word) : -1; id >= 0) return ids.push_back(id);
  initial_symbols(word, ids);
  merge_all(ids);
}

void BpeModel::encode_word(std::string_view word, PieceCache& cache, std::vector<int32_t>& out) const {
  // The cache holds final ids (ignore_merges included), so it is consulted first.
  PieceCache::Ref ref;
  if (cache.find(word, out, ref)) return;
  thread_local std::vector<int32_t> ids;
  ids.clear();
  word_ids(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  PieceCache::store(ref, word, ids);
}

// A chunk "▁▁...▁w" (n >= 2 leading "▁", w without "▁") is encoded as "▁...▁" (n - 1) then "▁w", unless "▁w"
// starts with the token "▁" itself, in which case as "▁...▁" (n) then the rest of "▁w". Exact when no token
// has two leading "▁" before another character and every merge into a "▁"-only token ranks after every other
// merge (checked at load; true for Mistral/Llama-2): merging the whole chunk first does all the merges of
// "▁w" exactly as alone (a lone "▁" can only join the run's "▁" through a later "▁▁" merge, and a token
// "▁..▁x" does not exist), then the "▁" runs merge among themselves, blind to w. Indented text has long
// space runs before words; this keeps the pieces short enough for the cache and the O(n^2) merge loop.
void BpeModel::encode_metaspace_chunk(std::string_view chunk, PieceCache& cache,
                                      std::vector<int32_t>& out) const {
  const size_t n = metaspace_runs_ ? leading_metaspaces(chunk) : 0;
  if (n < 2 || 3 * n == chunk.size()) return encode_word(chunk, cache, out);
  thread_local std::vector<int32_t> tail;
  tail.clear();
  encode_word(chunk.substr(3 * (n - 1)), cache, tail);
  const bool lone = tail.front() == metaspace_id_;
  encode_word(chunk.substr(0, 3 * (lone ? n : n - 1)), cache, out);
  out.insert(out.end(), tail.begin() + (lone ? 1 : 0), tail.end());
}

void BpeModel::encode(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  PieceCache& cache = PieceCache::for_model(serial_);
  if (!metaspace_split_) return encode_word(piece, cache, out);
  // Chunks "▁*[^▁]*": no vocabulary token contains "▁" after another character, so no merge crosses a chunk
  // start. "▁" is E2 96 81; chunks are short (a word), so a plain loop beats a memchr call per chunk.
  size_t start = 0;
  for (size_t i = 0;;) {
    while (i < piece.size() && piece[i] != '\xE2') ++i;
    if (i == piece.size()) break;
    if (piece.substr(i, 3) != kMetaspace) {
      ++i;
      continue;
    }
    if (i > start && !(i >= 3 && piece.substr(i - 3, 3) == kMetaspace)) {
      encode_metaspace_chunk(piece.substr(start, i - start), cache, out);
      start = i;
    }
    i += 3;
  }
  encode_metaspace_chunk(piece.substr(start), cache, out);
}

}  // namespace miniseq::tok
