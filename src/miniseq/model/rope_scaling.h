// RoPE inverse frequencies and the cos/sin scale of every rope_type the config can name (io/model_config.h),
// in transformers' own arithmetic (modeling_rope_utils.py, transformers 5.24): the same fp32 operations in
// the same order, so that the tables equal transformers' up to the last bit of powf/cosf/sinf. Computed on
// the host once per call and handed to either backend's rope op (ops/backend.h, RopeParams).
//
// Dynamic NTK depends on the sequence: transformers recomputes inv_freq from seq_len = max(position_ids) + 1
// whenever that exceeds max_position_embeddings (and the longest length it has cached). miniseq takes seq_len
// of each call without that cache; the two agree whenever calls never get shorter while staying above
// max_position_embeddings (training at one length, evaluation windows of one length, decoding; docs/rope.md).
#pragma once

#include <cstdint>

#include "miniseq/io/model_config.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

// The rope parameters for a call whose positions are all < seq_len.
RopeParams rope_params(const ModelConfig& c, int64_t seq_len);

// Plain RoPE (rope_theta, optional linear factor) for a head dimension D: op tests and benchmarks.
RopeParams rope_params_plain(double theta, int64_t D, double linear_factor = 1.0);

}  // namespace miniseq
