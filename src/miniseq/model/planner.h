// The memory planner: the real training-step schedule (model/decoder.cpp) executed on a dry memory plan with the
// dry backend, for any model config, length, batch and policy, on any machine. Used by `miniseq memplan`, by the
// trainer before step 0 (refusal when it does not fit) and for the automatic choice of chunk sizes.
#pragma once

#include <cstdint>
#include <string>

#include "miniseq/core/memory_plan.h"
#include "miniseq/model/step_policy.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

// Storage of a run: where and in which dtypes the plan is made.
struct PlanTarget {
  Device device = Device::CPU;
  DType params = DType::F32, grads = DType::F32, activations = DType::F32;
  bool optimizer = true;               // AdamW moments are part of the run
  DType moments = DType::F32;          // their dtype (memory policy: fp32 or bf16)
  bool optimizer_in_backward = false;  // per-group gradients, consumed inside the backward pass
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

// Peak of one optimizer step (weights, grads, optimizer state, one micro-batch [B, S] forward + backward).
MemReport plan_step(const ModelConfig& config, int64_t batch, int64_t seq, const StepPolicy& policy,
                    const PlanTarget& target);

// The longest S (≤ limit) whose planned arena fits in `budget` bytes; 0 when not even S = 1 fits.
int64_t find_max_length(const ModelConfig& config, int64_t batch, const StepPolicy& policy, const PlanTarget& target,
                        size_t budget, int64_t limit = int64_t{1} << 24);

// Chunk sizes for `policy` (MsT on) that fit `budget` with the fewest chunks (largest GEMMs): the MLP chunk rows
// and LM-head chunk count are searched from "no split" down to small chunks. Returns false if nothing fits.
bool auto_chunks(const ModelConfig& config, int64_t batch, int64_t seq, const PlanTarget& target, size_t budget,
                 StepPolicy* policy);

}  // namespace miniseq
