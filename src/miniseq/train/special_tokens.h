// LongLoRA's tokenizer preparation (fine-tune.py, smart_tokenizer_and_embedding_resize): a tokenizer without a pad
// token gets "[PAD]", and "</s>", "<s>", "<unk>" when it lacks an eos, bos or unk token, in that order; each new
// token takes the next id (len(tokenizer)) unless the vocabulary already has it. The model's embedding and LM head
// then grow to the new vocabulary size with rows equal to the mean of the old ones (train/model_setup.h), and the
// saved tokenizer files carry the added tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "miniseq/io/tokenizer/tokenizer.h"

namespace miniseq {

struct PreparedTokenizer {
  int32_t pad_id = -1, eos_id = -1, bos_id = -1;
  int64_t vocab_size = 0;                 // len(tokenizer) after the additions
  std::vector<std::string> added;         // tokens added, in order
  nlohmann::json file_overrides = nlohmann::json::object();  // file name -> new contents (tokenizer files)
};

// Reads DIR/tokenizer.json, tokenizer_config.json and special_tokens_map.json; decides the additions.
PreparedTokenizer prepare_special_tokens(const std::string& dir, const tok::Tokenizer& tokenizer);

}  // namespace miniseq
