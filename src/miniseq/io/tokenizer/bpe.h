// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}): vocab, ranked merges, byte_fallback, unk
// (fused or not), continuing_subword_prefix / end_of_word_suffix, ignore_merges. Each piece from the
// pre-tokenizer is split into characters, then the adjacent pair with the lowest merge rank is merged
// (leftmost first on ties) until no pair merges, exactly as Hugging Face's Word::merge_all. Results for
// pieces under 256 bytes are kept in a per-thread (lock-free) merge cache (piece_cache.h). dropout is not
// supported (training-time randomness).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "miniseq/io/tokenizer/merge_table.h"
#include "miniseq/io/tokenizer/string_id_map.h"

namespace miniseq::tok {

class PieceCache;

class BpeModel {
 public:
  // j: the "model" object; where: its JSON path for error messages.
  BpeModel(const nlohmann::json& j, const std::string& where);
  ~BpeModel();

  // From now on encode() takes pieces as raw bytes and maps each byte to its byte-level character itself
  // (the ByteLevel pre-tokenizer's last step, deferred). The cache is then keyed by the raw bytes, and the
  // mapping is only done for pieces that miss it. Call before the first encode().
  void set_byte_level_input();

  // Appends the ids of one piece.
  void encode(std::string_view piece, std::vector<int32_t>& out) const;

  int32_t token_to_id(std::string_view token) const { return vocab_.find(token); }  // -1 when absent
  const std::string* id_to_token(int32_t id) const;                                 // nullptr when absent
  size_t vocab_size() const { return vocab_.size(); }
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }
  // True when pieces are split before every "▁" that follows another character (exact for this vocabulary).
  bool splits_at_metaspace() const { return metaspace_split_; }

 private:
  void encode_metaspace_chunk(std::string_view chunk, PieceCache& cache, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, PieceCache& cache, std::vector<int32_t>& out) const;
  void word_ids(std::string_view word, std::vector<int32_t>& ids) const;
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;
  int32_t char_id(char32_t cp, std::string_view utf8) const;
  void merge_all(std::vector<int32_t>& ids) const;
  void merge_all_heap(std::vector<int32_t>& ids) const;

  StringIdMap vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<uint8_t> has_id_;
  MergeTable merges_;
  // Single-character tokens by code point below kLowChars (Latin to CJK punctuation, "▁" included: a flat
  // array rather than a hash lookup per character), -1 when absent; the others in char_ids_.
  static constexpr char32_t kLowChars = 0x3000;
  std::vector<int32_t> low_char_ids_;
  std::unordered_map<char32_t, int32_t> char_ids_;  // other single-character tokens
  int32_t byte_ids_[256];                           // <0xXX> tokens (-1)
  std::string unk_token_;
  int32_t unk_id_ = -1;
  bool has_unk_ = false, fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  bool metaspace_split_ = false;
  // Leading "▁" runs are split off chunks (see encode_metaspace_chunk); metaspace_id_ is the id of "▁".
  bool metaspace_runs_ = false;
  int32_t metaspace_id_ = -1;
  // Byte-level input (set_byte_level_input): vocabulary keyed by raw bytes, and byte -> id of its character.
  bool byte_level_input_ = false;
  StringIdMap raw_vocab_;
  int32_t byte_char_ids_[256];
  uint64_t serial_;  // identifies this model in the per-thread merge caches
};

}  // namespace miniseq::tok
