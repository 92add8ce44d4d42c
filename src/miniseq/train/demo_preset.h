// `miniseq train --preset demo`: a tiny Mistral-architecture model (sliding window included) created in process and
// trained on synthetic long documents — passkey retrieval buried in filler text — over a byte-level vocabulary
// (0 <pad>, 1 <s>, 2 </s>, 3 + byte). No file is needed; it shows the whole pipeline in a few minutes on 2 cores.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "miniseq/io/model_config.h"
#include "miniseq/model/params.h"

namespace miniseq {

ModelConfig demo_model_config(int64_t max_position_embeddings);
// Deterministic random weights with transformers' initialization (normal, std 0.02; norms 1).
void init_random_weights(const ParamSet& weights, uint64_t seed, Backend* backend = nullptr);
// Synthetic documents (BOS … EOS), concatenated, about `tokens` tokens in total.
std::vector<int32_t> demo_token_stream(int64_t tokens, int64_t doc_tokens, uint64_t seed);
// Bytes → ids of the demo vocabulary and back (for printing).
std::vector<int32_t> demo_encode(const std::string& text);
std::string demo_decode(const std::vector<int32_t>& ids);
// The demo vocabulary as Hugging Face tokenizer files ({"tokenizer.json": …, "tokenizer_config.json": …}): a BPE
// model with no merges whose only tokens are the 256 byte-fallback tokens <0x00>…<0xFF> (ids 3…258) and the
// specials, so every text encodes byte by byte exactly as demo_encode, with <s> first. Saved with every demo
// checkpoint, so that `miniseq eval/passkey/generate` (and transformers) can read text with it.
std::map<std::string, std::string> demo_tokenizer_files();

}  // namespace miniseq
