// Merging a LoRA adapter into its base weights, as PEFT's `merge_and_unload()` does (LongLoRA's
// merge_lora_weights_and_save_hf_model.py): for every adapted linear, W ← W + s·(B·A), s = α / r.
//
// The arithmetic is PEFT 0.21's in fp32 (LoraLayer.get_delta_weight, then `base_layer.weight.data +=`), step
// by step, so that a fp32 merge is bit-identical to it:
//   P = B·A      [out, r]·[r, in] -> [out, in], each element a fp32 sum over k = 0..r−1 in order
//   D = P · s    fp32 multiply (torch multiplies a fp32 tensor by a Python float in fp32)
//   W = W + D    fp32 add
#pragma once

#include "miniseq/model/lora.h"
#include "miniseq/model/params.h"

namespace miniseq {

// P = B·A in fp32 (see above): out[i, j] = Σ_k B[i, k]·A[k, j], accumulated as a fused multiply-add chain in
// k order from B[i, 0]·A[0, j] (what an x86 fp32 GEMM kernel does for one output element).
void lora_delta(const float* B, const float* A, int64_t out_dim, int64_t r, int64_t in_dim, float scale,
                float* delta);

// Merges the LoRA tensors of `lora_params` (roles LoraA / LoraB, PEFT names) into the weights they adapt in
// `base` (Hugging Face names). Both sets are fp32 on the CPU. Fails naming the tensor when a base weight is
// missing or its shape differs from the adapter's [out, in].
void merge_lora(const ParamSet& base, const ParamSet& lora_params, const LoraConfig& lora);

}  // namespace miniseq
