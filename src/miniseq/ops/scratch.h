// Per-call scratch of a backend's ops (token ids, labels, per-row losses, reduction partials, attention's row
// terms, the RoPE table), as a bound computed from the step's sizes, so that it is part of the memory plan:
// the decoder allocates it from the plan (category workspace) before the step and hands it to the backend
// (Backend:: set_scratch), and a plan that fills the device cannot run out of memory inside a step.
//
// The CPU backend needs none (its ops use thread-local buffers); the CUDA backend's needs per slot are
// scratch_layout(): both the planner (DryBackend for CUDA) and the CUDA backend read them from here.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace miniseq {

// The largest sizes of the ops of one decoder call (a training step, an evaluation batch or a decoding call).
struct ScratchShape {
  int64_t B = 0, S = 0;   // batch rows and sequence length of the call (T = B·S)
  int64_t H = 0, D = 0;   // attention heads, head_dim
  int64_t norm_cols = 0;  // widest RMSNorm row: max(hidden, head_dim)
  int64_t bias_cols = 0;  // widest biased linear output (0 without biases)
  int64_t loss_rows = 0;  // rows of an LM-head chunk (0: no loss in this call)
  bool backward = false;  // attention backward's row terms
};

// The CUDA backend's scratch slots (backend/cuda/cuda_ops.h uses the same order).
enum class ScratchSlot : int { Ids, Labels, RowLoss, RowArg, Partials, RowTerms, RopeTable, Csr, Count };

struct ScratchLayout {
  static constexpr size_t kAlign = 256;
  std::array<size_t, static_cast<size_t>(ScratchSlot::Count)> offset{}, bytes{};
  size_t total = 0;
};

// Slot sizes for the CUDA backend's ops on `shape` (each slot 256-byte aligned).
ScratchLayout cuda_scratch_layout(const ScratchShape& shape);

}  // namespace miniseq
