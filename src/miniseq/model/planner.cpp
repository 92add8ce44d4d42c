#include "miniseq/model/planner.h"

#include <algorithm>
#include <map>
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

PlanTarget with_precision(PlanTarget t, bool master_weights, DType grads) {
  t.master_weights = master_weights;
  t.grad_precision = grads;
  t.grads = t.device == Device::CUDA ? grads : DType::F32;
  return t;
}

bool keeps_master(const PlanTarget& t) {
  return t.params != DType::F32 && t.master_weights;
}

int64_t host_staging_floats(const std::vector<ParamSpec>& specs) {
  std::map<int, int64_t> groups;  // the decoder's gradient groups: a layer, or -1 head, -2 embedding
  for (const auto& s : specs)
    groups[s.layer >= 0 ? s.layer : s.role == ParamRole::Embedding ? -2 : -1] += s.shape.numel();
  int64_t largest = 0;
  for (const auto& [g, n] : groups) largest = std::max(largest, n);
  return 2 * largest;
}

int64_t zero_staging_floats(const std::vector<ParamSpec>& specs, int64_t ranks) {
  const int64_t shard = (param_count(specs) + ranks - 1) / ranks;
  int64_t largest = 0;
  for (const auto& s : specs) largest = std::max(largest, s.shape.numel());
  return std::min(largest, shard);
}

RunPlan plan_run(const ModelConfig& config, int64_t batch, int64_t seq, const StepPolicy& policy,
                 const PlanTarget& target) {
  MemoryPlan plan = MemoryPlan::dry(target.device);
  MemoryPlan host = MemoryPlan::dry(Device::CPU);
  DryBackend be(target.device, target.params, target.grads, target.activations);
  Decoder model(config, be, plan,
                target.optimizer_in_backward || (target.zero_ranks > 0 && target.zero_grads) ? GradStorage::PerGroup
                                                                                             : GradStorage::Persistent,
                target.lora);
  model.set_checkpoint_offload(&host, target.offload_layers);
  if (target.sequence_parallel > 0)
    model.set_sequence_parallel({nullptr, 0, static_cast<int>(target.sequence_parallel)});
  // The host optimizer's downloads overlap the backward; offloaded ZeRO shards copy synchronously.
  model.set_async_grad_reads(target.optimizer && target.offload_optimizer && target.optimizer_in_backward &&
                             target.zero_ranks == 0);
  const auto specs = trainable_specs(config, target.lora);  // what the optimizer updates
  std::optional<ParamSet> m, v, master;
  std::optional<Buffer> staging, zero_m, zero_v, zero_master, zero_g;
  if (target.optimizer && target.zero_ranks > 0) {  // laid out exactly as train/zero_optimizer.cpp
    const int64_t shard = (param_count(specs) + target.zero_ranks - 1) / target.zero_ranks;
    MemoryPlan& state = target.offload_optimizer ? host : plan;
    zero_m = state.alloc("exp_avg:shard", {shard}, target.moments, MemCategory::Optimizer);
    zero_v = state.alloc("exp_avg_sq:shard", {shard}, target.moments, MemCategory::Optimizer);
    if (target.offload_optimizer) {
      zero_master = host.alloc("master:shard", {shard}, DType::F32, MemCategory::Optimizer);
      staging = host.alloc("grad_staging", {zero_staging_floats(specs, target.zero_ranks)}, DType::F32,
                           MemCategory::Workspace);
    } else if (keeps_master(target)) {
      zero_master = plan.alloc("master:shard", {shard}, DType::F32, MemCategory::Optimizer);
    }
    if (target.zero_grads && target.optimizer_in_backward)  // one piece's sum at a time
      zero_g = plan.alloc("grad_piece", {zero_staging_floats(specs, target.zero_ranks)}, DType::F32,
                          MemCategory::Grads);
    else if (target.zero_grads)
      zero_g = plan.alloc("grads:shard", {shard}, DType::F32, MemCategory::Grads);
  } else if (target.optimizer && target.offload_optimizer) {  // laid out exactly as train/host_optimizer.cpp
    master.emplace(host, specs, DType::F32, MemCategory::Weights, "master:");
    m.emplace(host, specs, target.moments, MemCategory::Optimizer, "exp_avg:");
    v.emplace(host, specs, target.moments, MemCategory::Optimizer, "exp_avg_sq:");
    staging = host.alloc("grad_staging", {host_staging_floats(specs)}, DType::F32, MemCategory::Workspace);
  } else if (target.optimizer) {  // laid out exactly as train/optimizer.cpp's AdamW
    m.emplace(plan, specs, target.moments, MemCategory::Optimizer, "exp_avg:");
    v.emplace(plan, specs, target.moments, MemCategory::Optimizer, "exp_avg_sq:");
    if (keeps_master(target)) master.emplace(plan, specs, DType::F32, MemCategory::Optimizer, "master:");
  }
  TokenBatch b;
  b.batch = batch, b.seq = seq;
  b.input_ids.assign(static_cast<size_t>(batch * seq), 0);
  b.labels.assign(static_cast<size_t>(batch * seq), 0);
  model.forward_backward(b, policy, 1);
  return {plan.report(), host.report()};
}

MemReport plan_step(const ModelConfig& config, int64_t batch, int64_t seq, const StepPolicy& policy,
                    const PlanTarget& target) {
  return plan_run(config, batch, seq, policy, target).device;
}

int64_t min_offload_layers(const ModelConfig& config, int64_t batch, int64_t seq, const StepPolicy& policy,
                           const PlanTarget& target, size_t budget, size_t host_budget) {
  PlanTarget t = target;
  auto device_fits = [&](int64_t k) {
    t.offload_layers = k;
    return plan_run(config, batch, seq, policy, t).device.arena_bytes <= budget;
  };
  const int64_t L = config.num_hidden_layers;
  if (!device_fits(L)) return -1;
  int64_t lo = -1, hi = L;  // invariant: !fits(lo) (or lo = -1), fits(hi); device memory falls as k grows
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (device_fits(mid) ? hi : lo) = mid;
  }
  t.offload_layers = hi;
  return plan_run(config, batch, seq, policy, t).fits(budget, host_budget) ? hi : -1;
}

int64_t find_max_length(const ModelConfig& config, int64_t batch, const StepPolicy& policy, const PlanTarget& target,
                        size_t budget, int64_t limit, size_t host_budget) {
  // Sequence parallelism plans lengths divisible by P: the search runs over S/P.
  const int64_t P = std::max<int64_t>(1, target.sequence_parallel);
  if (P > 1) {
    auto fits = [&](int64_t n) {
      if (target.offload_layers < 0)
        return min_offload_layers(config, batch, n * P, policy, target, budget, host_budget) >= 0;
      return plan_run(config, batch, n * P, policy, target).fits(budget, host_budget);
    };
    if (!fits(1)) return 0;
    int64_t lo = 1, bad = 2;
    const int64_t lim = std::max<int64_t>(1, limit / P);
    while (bad <= lim && fits(bad)) lo = bad, bad = std::min(bad * 2, lim + 1);
    if (lo == lim) return lim * P;
    while (bad - lo > 1) {  // invariant: fits(lo), !fits(bad) (or bad past the limit)
      const int64_t mid = lo + (bad - lo) / 2;
      (fits(mid) ? lo : bad) = mid;
    }
    return lo * P;
  }
  auto fits = [&](int64_t s) {
    if (target.offload_layers < 0) return min_offload_layers(config, batch, s, policy, target, budget, host_budget) >= 0;
    return plan_run(config, batch, s, policy, target).fits(budget, host_budget);
  };
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

std::vector<std::pair<std::string, PlanTarget>> policy_ladder(const PlanTarget& base, int64_t accumulation) {
  std::vector<std::pair<std::string, PlanTarget>> out;
  const bool in_backward = accumulation <= 1;
  PlanTarget t = with_precision(base, /*master_weights=*/true, DType::F32);
  t.moments = DType::F32, t.optimizer_in_backward = t.offload_optimizer = false, t.offload_layers = 0;
  out.emplace_back("fp32 moments", t);
  t.moments = DType::BF16;
  out.emplace_back("bf16 moments", t);
  t.optimizer_in_backward = true;
  if (in_backward) out.emplace_back("bf16 moments + optimizer in backward", t);
  t.optimizer_in_backward = false;
  // Inexact, on the device alone: only where there is a master to drop / gradients stored in bf16 (CUDA).
  if (keeps_master(t)) {
    PlanTarget s = with_precision(t, /*master_weights=*/false, DType::F32);
    out.emplace_back("no master (stochastic rounding) + bf16 moments", s);
    if (with_precision(s, false, DType::BF16).grads == DType::BF16) {
      s = with_precision(s, false, DType::BF16);
      out.emplace_back("no master + bf16 grads and moments", s);
    }
    s.optimizer_in_backward = true;
    if (in_backward)
      out.emplace_back(s.grads == DType::BF16 ? "no master + bf16 grads and moments + in backward"
                                              : "no master + bf16 moments + in backward",
                       s);
  }
  t.moments = DType::F32, t.offload_optimizer = true, t.optimizer_in_backward = in_backward;
  out.emplace_back(
      in_backward ? "optimizer on host (fp32 moments) + in backward" : "optimizer on host (fp32 moments)", t);
  t.offload_layers = -1;
  out.emplace_back("optimizer and checkpoints on host", t);
  t.moments = DType::BF16;
  out.emplace_back("optimizer (bf16 moments) and checkpoints on host", t);
  // Only the checkpoints on the host, the optimizer on the device: what LoRA needs at its longest (its trained
  // state is small, and the host's memory is better spent on layer inputs); for full fine-tuning it fits only
  // where the device holds the whole optimizer state, so it comes last.
  t.offload_optimizer = false, t.optimizer_in_backward = in_backward;
  out.emplace_back(in_backward ? "checkpoints on host, optimizer (bf16 moments) on the device + in backward"
                               : "checkpoints on host, optimizer (bf16 moments) on the device",
                   t);
  return out;
}

bool auto_policy(const ModelConfig& config, int64_t batch, int64_t seq, size_t budget, size_t host_budget,
                 PlanTarget* target, StepPolicy* policy, std::string* name, int64_t accumulation) {
  for (auto [label, t] : policy_ladder(*target, accumulation)) {
    if (t.offload_layers < 0) {
      const int64_t k = min_offload_layers(config, batch, seq, *policy, t, budget, host_budget);
      if (k < 0) continue;
      t.offload_layers = k;
    }
    StepPolicy p = *policy;
    if (!plan_run(config, batch, seq, p, t).fits(budget, host_budget)) {
      if (!auto_chunks(config, batch, seq, t, budget, &p)) continue;
      if (!plan_run(config, batch, seq, p, t).fits(budget, host_budget)) continue;
    }
    *target = t, *policy = p;
    if (name) *name = label;
    return true;
  }
  return false;
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
