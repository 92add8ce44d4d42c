#include "miniseq/model/planner.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "miniseq/model/decoder.h"
#include "miniseq/ops/dry_backend.h"

namespace miniseq {

PlanTarget plan_target_for(const Backend& backend, bool optimizer) {
  PlanTarget t;
  t.device = backend.device();
  t.params = backend.param_dtype();
  t.grads = backend.grad_dtype();
  t.activations = backend.activation_dtype();
  t.optimizer = optimizer;
  return t;
}

MemReport plan_step(const ModelConfig& config, int64_t batch, int64_t seq, const StepPolicy& policy,
                    const PlanTarget& target) {
  MemoryPlan plan = MemoryPlan::dry(target.device);
  DryBackend be(target.device, target.params, target.grads, target.activations);
  Decoder model(config, be, plan,
                target.optimizer_in_backward ? GradStorage::PerGroup : GradStorage::Persistent);
  const auto specs = param_specs(config);
  std::optional<ParamSet> m, v;
  if (target.optimizer) {  // laid out exactly as train/optimizer.cpp's AdamW
    m.emplace(plan, specs, target.moments, MemCategory::Optimizer, "exp_avg:");
    v.emplace(plan, specs, target.moments, MemCategory::Optimizer, "exp_avg_sq:");
  }
  TokenBatch b;
  b.batch = batch, b.seq = seq;
  b.input_ids.assign(static_cast<size_t>(batch * seq), 0);
  b.labels.assign(static_cast<size_t>(batch * seq), 0);
  model.forward_backward(b, policy, 1);
  return plan.report();
}

int64_t find_max_length(const ModelConfig& config, int64_t batch, const StepPolicy& policy, const PlanTarget& target,
                        size_t budget, int64_t limit) {
  auto fits = [&](int64_t s) { return plan_step(config, batch, s, policy, target).arena_bytes <= budget; };
  if (!fits(1)) return 0;
  int64_t lo = 1, hi = 1;
  while (hi < limit && fits(std::min(hi * 2, limit))) hi = std::min(hi * 2, limit);
  if (hi == limit) return limit;
  int64_t bad = std::min(hi * 2, limit);
  lo = hi;
  while (bad - lo > 1) {  // invariant: fits(lo), !fits(bad)
    const int64_t mid = lo + (bad - lo) / 2;
    (fits(mid) ? lo : bad) = mid;
  }
  return lo;
}

bool auto_chunks(const ModelConfig& config, int64_t batch, int64_t seq, const PlanTarget& target, size_t budget,
                 StepPolicy* policy) {
  const int64_t T = batch * seq, d = config.hidden_size;
  std::vector<int64_t> mlp_rows = {T};
  for (int64_t r = 8 * d; r >= 64; r /= 2)
    if (r < T) mlp_rows.push_back(r);
  const int64_t paper_m = (config.vocab_size + d - 1) / d;
  std::vector<int64_t> head_chunks = {1};
  for (int64_t m = 2; m <= std::max<int64_t>(4 * paper_m, 2) && m <= T; m *= 2) head_chunks.push_back(m);
  // Fewest chunks first: cost = MLP chunks + LM-head chunks (each chunk is a smaller, less efficient GEMM).
  struct Candidate { int64_t rows, chunks, cost; };
  std::vector<Candidate> cands;
  for (int64_t r : mlp_rows)
    for (int64_t m : head_chunks) cands.push_back({r, m, (T + r - 1) / r + m});
  std::stable_sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) { return a.cost < b.cost; });
  for (const auto& c : cands) {
    StepPolicy p = *policy;
    p.mini_sequence = true;
    p.mlp_chunk_tokens = c.rows;
    p.lm_head_chunks = c.chunks;
    if (plan_step(config, batch, seq, p, target).arena_bytes <= budget) {
      *policy = p;
      return true;
    }
  }
  return false;
}

}  // namespace miniseq
