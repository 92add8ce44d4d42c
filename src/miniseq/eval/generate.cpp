#include "miniseq/eval/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "miniseq/core/random.h"
#include "miniseq/ops/dry_backend.h"

namespace miniseq {

int32_t pick_token(const std::vector<float>& logits, const SamplingParams& p, uint64_t step) {
  const auto V = static_cast<int64_t>(logits.size());
  const auto first_max = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  if (!p.sample) return first_max;
  MS_CHECK(p.temperature > 0.0, "--temperature must be > 0, got ", p.temperature);
  MS_CHECK(p.top_p > 0.0 && p.top_p <= 1.0, "--top_p must lie in (0, 1], got ", p.top_p);
  // Softmax of logits / T in double, then the nucleus: most likely first, up to cumulative top_p (at least one).
  std::vector<double> prob(static_cast<size_t>(V));
  const double m = logits[static_cast<size_t>(first_max)];
  double z = 0.0;
  for (int64_t i = 0; i < V; ++i) z += prob[static_cast<size_t>(i)] = std::exp((logits[static_cast<size_t>(i)] - m) / p.temperature);
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return prob[static_cast<size_t>(a)] > prob[static_cast<size_t>(b)]; });
  double kept = 0.0;
  size_t n = 0;
  while (n < order.size() && (n == 0 || kept < p.top_p * z)) kept += prob[static_cast<size_t>(order[n++])];
  // One draw per step from a stream of (seed, step): the same seed gives the same text.
  Rng rng(p.seed * 0x9e3779b97f4a7c15ull + step);
  double u = rng.uniform() * kept;
  for (size_t i = 0; i < n; ++i) {
    u -= prob[static_cast<size_t>(order[i])];
    if (u < 0.0) return order[i];
  }
  return order[n - 1];
}

std::vector<int32_t> generate(Decoder& model, MemoryPlan& plan, DType kv_dtype, const std::vector<int32_t>& prompt,
                              const GenerateOptions& opt, const StepPolicy& policy,
                              const std::function<void(int32_t)>& on_token) {
  MS_CHECK(!prompt.empty(), "the prompt has no tokens");
  MS_CHECK(opt.max_new_tokens >= 0, "--max_new_tokens must be >= 0");
  const auto P = static_cast<int64_t>(prompt.size());
  const int64_t total = P + opt.max_new_tokens;
  std::vector<int32_t> seq = prompt, out;
  if (opt.max_new_tokens == 0) return out;
  if (opt.use_cache) {
    KvCache cache(model.config(), plan, kv_dtype, total, P);
    std::vector<float> logits = model.forward_cached(prompt, cache, policy);
    for (int64_t step = 0;; ++step) {
      const int32_t tok = pick_token(logits, opt.sampling, static_cast<uint64_t>(step));
      out.push_back(tok);
      if (on_token) on_token(tok);
      if ((tok == opt.eos_id && !plan.is_dry()) || static_cast<int64_t>(out.size()) == opt.max_new_tokens) break;
      logits = model.forward_cached({tok}, cache, policy);
    }
  } else {
    for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
      const auto n = static_cast<int64_t>(seq.size());
      KvCache cache(model.config(), plan, kv_dtype, n, n);  // fresh: the whole sequence again
      const int32_t tok = pick_token(model.forward_cached(seq, cache, policy), opt.sampling,
                                     static_cast<uint64_t>(step));
      seq.push_back(tok);
      out.push_back(tok);
      if (on_token) on_token(tok);
      if (tok == opt.eos_id && !plan.is_dry()) break;
    }
  }
  return out;
}

MemReport plan_generation(const ModelConfig& config, int64_t prompt_tokens, const GenerateOptions& opt,
                          const StepPolicy& policy, Device device, DType params, DType activations,
                          const LoraConfig& lora) {
  MemoryPlan plan = MemoryPlan::dry(device);
  DryBackend be(device, params, DType::F32, activations);
  Decoder model(config, be, plan, GradStorage::None, lora);
  generate(model, plan, activations, std::vector<int32_t>(static_cast<size_t>(prompt_tokens), 0), opt, policy);
  return plan.report();
}

}  // namespace miniseq
