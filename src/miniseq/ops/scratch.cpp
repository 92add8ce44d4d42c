#include "miniseq/ops/scratch.h"

#include <algorithm>

namespace miniseq {

namespace {
// Fixed reduction grids of the CUDA kernels (their files say why each is fixed): elementwise.cu kSumBlocks,
// rmsnorm.cu kMaxBackwardBlocks, linear.cu kRowsPerBlock / kMaxRowGroups.
constexpr int64_t kSumBlocks = 1024, kNormBlocks = 512, kBiasRowsPerBlock = 256, kBiasRowGroups = 1024;
}  // namespace

ScratchLayout cuda_scratch_layout(const ScratchShape& s) {
  const int64_t T = s.B * s.S, half = s.D / 2;
  const int64_t bias_groups = std::min((T + kBiasRowsPerBlock - 1) / kBiasRowsPerBlock, kBiasRowGroups);
  const auto i32 = [](int64_t n) { return static_cast<size_t>(std::max<int64_t>(n, 1)) * 4; };
  ScratchLayout l;
  auto set = [&](ScratchSlot slot, size_t bytes) { l.bytes[static_cast<size_t>(slot)] = bytes; };
  set(ScratchSlot::Ids, i32(T));               // embedding forward: ids [T]
  set(ScratchSlot::Labels, i32(s.loss_rows));  // cross-entropy: labels [C]
  set(ScratchSlot::RowLoss, static_cast<size_t>(std::max<int64_t>(s.loss_rows, 1)) * 8);  // fp64 [C]
  set(ScratchSlot::RowArg, i32(s.loss_rows));                                             // argmax [C]
  set(ScratchSlot::Partials,  // fp32/fp64 block partials
      std::max({static_cast<size_t>(kSumBlocks) * 8, static_cast<size_t>(kNormBlocks * s.norm_cols) * 4,
                static_cast<size_t>(bias_groups * s.bias_cols) * 4}));
  set(ScratchSlot::RowTerms,
      s.backward ? static_cast<size_t>(s.B * s.H * s.S) * 4 : 0);  // attention Δ [B, H, S]
  set(ScratchSlot::RopeTable,
      static_cast<size_t>(half + 2 * s.S * half) * 4 + i32(s.S));  // inv_freq, cos, sin, pos
  set(ScratchSlot::Csr, i32(3 * T + 1));                           // embedding backward: ids grouped by token
  for (size_t k = 0; k < l.bytes.size(); ++k) {
    l.offset[k] = l.total;
    l.total += (l.bytes[k] + ScratchLayout::kAlign - 1) / ScratchLayout::kAlign * ScratchLayout::kAlign;
  }
  return l;
}

}  // namespace miniseq
