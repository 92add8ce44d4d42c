// LongLoRA's model preparation: context extension by linear RoPE scaling, and a grown vocabulary when a pad token
// has to be added (new embedding / LM-head rows = mean of the old rows).
#pragma once

#include <cstdint>

#include "miniseq/io/safetensors.h"
#include "miniseq/model/params.h"

namespace miniseq {

// LongLoRA's rule: orig = max_position_embeddings × existing linear factor; if model_max_length > orig the positions
// are divided by a further ceil(model_max_length / orig). Returns the total linear factor to use (unchanged when the
// context already suffices). Llama-2 (4096) at 32768 → 8; Llama-3-8B (8192) at 32768 → 4; Mistral (32768) → 1.
double rope_factor_for(const ModelConfig& c, int64_t model_max_length);

// The configuration trained after the tokenizer got its special tokens (train/special_tokens.h): vocab_size
// grows to len(tokenizer) and pad_token_id becomes the tokenizer's, as the Trainer's align_special_tokens
// sets it (saved configs carry it). embedding_padding_idx keeps config.json's pad_token_id: transformers'
// resize_token_embeddings copies the grown table into the existing nn.Embedding, whose padding_idx stays (it
// is cleared only when the vocabulary shrinks below it), so lookups of a new [PAD] still add to its row's
// gradient.
void grow_for_tokenizer(ModelConfig& c, int64_t tokenizer_vocab_size, int64_t tokenizer_pad_id);

// Loads weights whose files may hold fewer vocabulary rows than `config` (after adding tokens): the file rows are
// copied, every new row of model.embed_tokens.weight and lm_head.weight is the mean of the file's rows.
void load_params_grown(const SafetensorsModel& files, const ModelConfig& file_config, const ModelConfig& config,
                       const ParamSet& params, Backend* backend = nullptr);

}  // namespace miniseq
