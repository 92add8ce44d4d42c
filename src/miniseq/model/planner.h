// The memory planner: the real training-step schedule (model/decoder.cpp) executed on a dry memory plan with the
// dry backend, for any model config, length, batch and policy, on any machine. Used by `miniseq memplan`, by the
// trainer before step 0 (refusal when it does not fit) and for the automatic choice of chunk sizes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "miniseq/core/memory_plan.h"
#include "miniseq/model/lora.h"
#include "miniseq/model/param_spec.h"
#include "miniseq/model/step_policy.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

// Host-side staging of the host optimizer (train/host_optimizer.cpp), in fp32 elements: a ring with room for
// two of the largest gradient groups (a layer; the LM head with the final norm; the embedding), so the device
// hands a whole group over without waiting while the CPU still updates the previous one.
int64_t host_staging_floats(const std::vector<ParamSpec>& specs);
// The host staging of offloaded ZeRO shards (train/zero_optimizer.cpp), in fp32 elements: room for the
// largest piece a rank updates (a parameter's part in one shard of ceil(N / ranks) elements).
int64_t zero_staging_floats(const std::vector<ParamSpec>& specs, int64_t ranks);

// Storage of a run: where and in which dtypes the plan is made.
struct PlanTarget {
  Device device = Device::CPU;
  DType params = DType::F32, grads = DType::F32, activations = DType::F32;
  bool optimizer = true;               // AdamW moments are part of the run
  DType moments = DType::F32;          // their dtype (memory policy: fp32 or bf16)
  bool optimizer_in_backward = false;  // per-group gradients, consumed inside the backward pass
  // Host offload (issue 7): AdamW moments and fp32 master weights in host memory, updated there by the CPU; and the
  // checkpointed inputs of the first `offload_layers` layers in host memory (-1: all of them).
  bool offload_optimizer = false;
  int64_t offload_layers = 0;
  // Precision policy (issue 14): fp32 master weights beside weights stored below fp32 (false: the bf16 weights are
  // updated with stochastic rounding, no master); the gradients' precision (`grads` is their storage: BF16 on CUDA,
  // F32 on the CPU, which emulates bf16 gradients in fp32 buffers). Set both with with_precision.
  bool master_weights = true;
  DType grad_precision = DType::F32;
  // ZeRO stage 1 (train/zero_optimizer.h): the AdamW moments and master weights of one rank's 1/zero_ranks of
  // the parameters, as three flat buffers (0: not sharded); with offload_optimizer in host memory, with a
  // staging buffer (zero_staging_floats).
  int64_t zero_ranks = 0;
  // LoRA / LoRA+ (model/lora.h): the frozen weights have no gradient, no optimizer state and no master copy;
  // the LoRA tensors and the trained base tensors have all three. Disabled: full fine-tuning.
  LoraConfig lora = {};
  // ZeRO stage 2: no full gradient buffer (the backward hands each group's gradients over, as with the optimizer
  // in backward) and one rank's flat fp32 gradient shard.
  bool zero_grads = false;
  // Ulysses sequence parallelism (model/sequence_parallel.h): the plan of one rank of a group of this many,
  // its S/P tokens and the head exchange's buffers (0: none; 1: the same schedule on one rank, as a launched
  // P = 1 runs it).
  int64_t sequence_parallel = 0;
  static PlanTarget cpu() { return {}; }
  // The CUDA backend's storage (backend/cuda/cuda_ops.h): bf16 weights and activations, fp32 gradients (they
  // accumulate over chunks and micro-batches, docs/cuda.md), fp32 AdamW moments.
  static PlanTarget cuda() {
    PlanTarget t;
    t.device = Device::CUDA;
    t.params = t.activations = DType::BF16;
    t.grads = DType::F32;
    return t;
  }
};

// The storage of `backend` (device and dtypes), with or without AdamW state.
PlanTarget plan_target_for(const Backend& backend, bool optimizer);

// `t` with the precision policy --master_weights / --grad_dtype: master_weights, grad_precision, and the gradients'
// storage (bf16 on CUDA; fp32 on the CPU, which emulates bf16 precision).
PlanTarget with_precision(PlanTarget t, bool master_weights, DType grads);
// Whether the target keeps fp32 master weights (weights stored below fp32 and master_weights).
bool keeps_master(const PlanTarget& t);

// Peak of one optimizer step (weights, grads, optimizer state, one micro-batch [B, S] forward + backward) on the
// device, and in host memory for what the target offloads there.
struct RunPlan {
  MemReport device, host;
  // Both within their budgets (a host budget of 0 means unlimited).
  bool fits(size_t device_budget, size_t host_budget) const {
    return device.arena_bytes <= device_budget && (host_budget == 0 || host.arena_bytes <= host_budget);
  }
};
RunPlan plan_run(const ModelConfig& config, int64_t batch, int64_t seq, const StepPolicy& policy,
                 const PlanTarget& target);
// The device part of plan_run.
MemReport plan_step(const ModelConfig& config, int64_t batch, int64_t seq, const StepPolicy& policy,
                    const PlanTarget& target);

// The longest S (≤ limit) whose planned arenas fit `budget` bytes on the device and `host_budget` in host memory
// (0 = unlimited); 0 when not even S = 1 fits. With target.offload_layers = -1 ("as many as needed"), each S gets
// the fewest offloaded layers that fit the device.
int64_t find_max_length(const ModelConfig& config, int64_t batch, const StepPolicy& policy, const PlanTarget& target,
                        size_t budget, int64_t limit = int64_t{1} << 24, size_t host_budget = 0);

// The fewest checkpointed layers to offload so that [batch, seq] fits the device budget (and then the host
// budget); -1 when no count fits both.
int64_t min_offload_layers(const ModelConfig& config, int64_t batch, int64_t seq, const StepPolicy& policy,
                           const PlanTarget& target, size_t budget, size_t host_budget);

// Memory policies, exact ones first, each from the cheapest in time to the one that saves the most memory: fp32
// moments on the device; bf16 moments; + optimizer in backward (no gradient buffer); then, where they save memory
// (weights stored in bf16 with a master: CUDA), the inexact device-only policies of issue 14: no master (bf16
// weights with stochastic rounding) + bf16 moments; + bf16 gradients (the LongLoRA recipe's 8 bytes per
// parameter); + optimizer in backward; and last the host offload ones, which are exact but slow: optimizer state
// and master weights on the host; + checkpointed layer inputs on the host (as few layers as fit); the same with
// bf16 moments on the host; last, the checkpointed inputs on the host with the optimizer (bf16 moments) on the
// device, which is what LoRA fits longest with (small trained state). With gradient accumulation (accumulation > 1) the optimizer cannot run inside the
// backward: those rungs are left out, and the host optimizer runs after the backward. `base` gives the device and
// dtypes.
std::vector<std::pair<std::string, PlanTarget>> policy_ladder(const PlanTarget& base, int64_t accumulation = 1);

// The first rung of policy_ladder (then chunk sizes by auto_chunks) that fits both budgets at [batch, seq]; false
// when none does. Offloading layers picks the fewest that fit.
bool auto_policy(const ModelConfig& config, int64_t batch, int64_t seq, size_t budget, size_t host_budget,
                 PlanTarget* target, StepPolicy* policy, std::string* name = nullptr, int64_t accumulation = 1);

// Chunk sizes for `policy` (MsT on) that fit `budget` with the fewest chunks (largest GEMMs): the MLP chunk rows
// and LM-head chunk count are searched from "no split" down to small chunks. Returns false if nothing fits.
bool auto_chunks(const ModelConfig& config, int64_t batch, int64_t seq, const PlanTarget& target, size_t budget,
                 StepPolicy* policy);

}  // namespace miniseq
