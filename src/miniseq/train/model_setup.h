// LongLoRA's model preparation: context extension by linear RoPE scaling, and a grown vocabulary when a pad token
// has to be added (new embedding / LM-head rows = mean of the old rows).
#pragma once

#include <cstdint>

#include "miniseq/io/safetensors.h"
#include "miniseq/model/params.h"

namespace miniseq {

// LongLoRA's context-extension rule, per rope type (docs/rope.md). Returns the RoPE scaling to train with; unchanged
// when model_max_length ≤ the config's native context (ModelConfig::native_context).
//  - none:    linear scaling by ceil(model_max_length / max_position_embeddings) (LongLoRA: Llama-2 at 32K → 8,
//             Llama-3-8B → 4, Mistral → none);
//  - linear:  the existing factor × ceil(model_max_length / (max_position_embeddings × factor));
//  - yarn:    factor = ceil(model_max_length / original_max_position_embeddings) (YaRN's own definition);
//  - llama3:  factor × ceil(model_max_length / max_position_embeddings) (the same band split, the low frequencies
//             interpolated further);
//  - dynamic: unchanged (dynamic NTK rescales itself from the sequence length).
RopeScaling rope_for_length(const ModelConfig& c, int64_t model_max_length);

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
