// Decoding: greedy (Hugging Face's do_sample=False, the passkey test's mode) or temperature + top-p sampling, with a
// KV cache (the prompt in one pass, then one position per new token) or without (the whole sequence again for every
// token: the reference the cache is tested against).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "miniseq/core/memory_plan.h"
#include "miniseq/model/decoder.h"

namespace miniseq {

struct SamplingParams {
  bool sample = false;       // false: greedy (the first maximum, as torch.argmax)
  double temperature = 1.0;  // logits / temperature before the softmax
  double top_p = 1.0;        // nucleus: the smallest set of most likely tokens whose probability reaches top_p
  uint64_t seed = 0;
};

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  int32_t eos_id = -1;  // stop after generating it (-1: never)
  bool use_cache = true;
  SamplingParams sampling;
};

// The next token from the logits of the last position [V].
int32_t pick_token(const std::vector<float>& logits, const SamplingParams& p, uint64_t step);

// The new tokens after `prompt` (at most max_new_tokens; the EOS token, when produced, is the last). `on_token` is
// called with each new token as it is produced. On a dry plan the same allocations happen (and EOS is ignored).
std::vector<int32_t> generate(Decoder& model, MemoryPlan& plan, DType kv_dtype, const std::vector<int32_t>& prompt,
                              const GenerateOptions& opt, const StepPolicy& policy,
                              const std::function<void(int32_t)>& on_token = {});

// The planned memory of generate(): the same calls on a dry plan.
MemReport plan_generation(const ModelConfig& config, int64_t prompt_tokens, const GenerateOptions& opt,
                          const StepPolicy& policy, Device device, DType params, DType activations,
                          const LoraConfig& lora = {});

}  // namespace miniseq
