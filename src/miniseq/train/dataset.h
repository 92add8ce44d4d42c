// Training data, LongLoRA / RedPajama style: JSONL documents, tokenized without truncation, joined with EOS and cut
// into blocks of exactly model_max_length tokens; the last partial block is padded with the pad token and its pad
// positions get label -100. Pre-tokenized JSONL ({"input_ids": [...]}, optional "labels") is used block by block
// when every record already has model_max_length tokens, and otherwise joined and cut like text.
// The order of blocks is a deterministic shuffle of (seed, epoch).
// Supervised fine-tuning (train/sft_dataset.h) holds variable-length examples instead: one per index, never
// packed, and a micro-batch is right-padded to its longest example (Hugging Face's pad_sequence).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "miniseq/model/batch.h"

namespace miniseq {

// Tokenizes a batch of documents (in parallel, results in input order), BOS/EOS as the tokenizer adds them.
using TokenizeFn = std::function<std::vector<std::vector<int32_t>>(const std::vector<std::string>& texts)>;

struct DataSpec {
  int64_t seq = 0;       // model_max_length
  int64_t vocab = 0;     // ids must lie in [0, vocab)
  int32_t eos_id = -1;   // appended after every document (-1: none)
  int32_t pad_id = 0;    // fills the last block (labels -100)
};

class Dataset {
 public:
  // Reads `path`. Text records need `tokenize` (a clear error otherwise).
  static Dataset from_jsonl(const std::string& path, const DataSpec& spec, const TokenizeFn& tokenize);
  // The same blocks from the token cache beside `path` (train/token_cache.h, built when missing or stale; `key`
  // names the tokenizer), read block by block: memory does not grow with the data. Pre-tokenized blocks
  // (a first record of exactly model_max_length input_ids) are read as from_jsonl does.
  static Dataset from_jsonl_cached(const std::string& path, const DataSpec& spec, const TokenizeFn& tokenize,
                                   const std::string& key, bool progress);
  // From a token stream already joined (the demo's synthetic documents).
  static Dataset from_stream(const std::vector<int32_t>& tokens, const DataSpec& spec);
  // Examples of 1..max_len tokens; example i's labels are its ids with the first prompt_len[i] set to -100.
  // batch() pads with pad_id (labels -100) to the longest example of the batch.
  static Dataset from_examples(const std::vector<std::vector<int32_t>>& ids, const std::vector<int64_t>& prompt_len,
                               int64_t max_len, int32_t pad_id);

  int64_t size() const { return blocks_; }  // blocks (or examples)
  int64_t seq() const { return seq_; }       // model_max_length: the longest a batch row can be
  bool examples() const { return !offsets_.empty(); }
  int64_t tokens_in_documents() const { return doc_tokens_; }
  // Block indices of epoch `epoch` in training order.
  std::vector<int64_t> order(uint64_t seed, int64_t epoch) const;
  // The micro-batch of the given block indices.
  TokenBatch batch(const std::vector<int64_t>& blocks) const;

 private:
  void add_stream(const std::vector<int32_t>& tokens, const DataSpec& spec);
  int64_t seq_ = 0;
  int64_t doc_tokens_ = 0;
  int64_t blocks_ = 0;
  std::vector<int32_t> ids_, labels_;  // [blocks, seq] (in memory)
  std::vector<int64_t> offsets_, prompt_len_;  // examples: example i is ids_[offsets_[i], offsets_[i + 1])
  std::shared_ptr<const class TokenCache> cache_;  // or the joined stream on disk: blocks cut on the fly
  int32_t pad_id_ = 0;
};

}  // namespace miniseq
