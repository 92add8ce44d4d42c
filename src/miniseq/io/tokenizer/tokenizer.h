// A Hugging Face tokenizer (tokenizer.json with a BPE model, plus tokenizer_config.json) that produces the
// same ids as the `tokenizers` library: added tokens -> normalizer -> pre-tokenizer -> BPE -> BOS/EOS, and
// back with decode. Both families of our models are covered: SentencePiece-style (Llama-2, Mistral:
// Prepend/Replace "▁" normalizer or Metaspace, byte_fallback) and byte-level (Llama-3, Qwen2/3: regex Split +
// ByteLevel, NFC for Qwen).
//
// Thread-safe: encode/decode are const and may run concurrently (the merge cache and scratch buffers are per
// thread).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "miniseq/io/tokenizer/added_tokens.h"
#include "miniseq/io/tokenizer/bpe.h"
#include "miniseq/io/tokenizer/decoder.h"
#include "miniseq/io/tokenizer/normalizer.h"
#include "miniseq/io/tokenizer/pre_tokenizer.h"

namespace miniseq::tok {

class Tokenizer {
 public:
  // Reads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json.
  static Tokenizer load(const std::string& dir);
  // From file contents; config_json may be empty. `where` names the source in error messages.
  static Tokenizer from_json(const std::string& tokenizer_json, const std::string& config_json,
                             const std::string& where);

  // Text -> ids. Invalid UTF-8 is first repaired with U+FFFD (as Python's errors="replace").
  // add_special_tokens: BOS/EOS as configured (see special_tokens_source()).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // encode() over many documents in parallel (threads <= 0: all OpenMP threads); results in input order.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts,
                                                 bool add_special_tokens = true, int threads = 0) const;
  // Ids -> text through the decoder; unknown ids are skipped.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int32_t token_to_id(std::string_view token) const;  // -1 when absent
  std::optional<std::string> id_to_token(int32_t id) const;
  int32_t vocab_size() const { return vocab_size_; }  // largest id + 1, added tokens included
  int32_t bos_id() const { return bos_id_; }          // -1 when none
  int32_t eos_id() const { return eos_id_; }          // -1 when none
  const std::vector<int32_t>& prefix_ids() const { return prefix_ids_; }  // added before the text
  const std::vector<int32_t>& suffix_ids() const { return suffix_ids_; }  // added after the text
  const std::string& special_tokens_source() const { return special_source_; }
  bool is_special(int32_t id) const;

 private:
  Tokenizer() = default;
  void encode_plain(std::string_view text, bool at_text_start, std::vector<int32_t>& out) const;
  void encode_normalized(std::string_view text, bool at_text_start, std::vector<int32_t>& out) const;

  std::unique_ptr<BpeModel> model_;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  Decoder decoder_;
  std::vector<AddedToken> added_;
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  std::string special_source_;
  int32_t bos_id_ = -1, eos_id_ = -1, vocab_size_ = 0;
};

}  // namespace miniseq::tok
