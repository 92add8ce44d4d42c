// The argument check every backend's copy_columns makes (ops/backend.h): two 2-D tensors of one dtype with
// the same rows, and both column ranges inside their tensor.
#pragma once

#include <cstdint>

#include "miniseq/core/check.h"
#include "miniseq/core/tensor.h"

namespace miniseq {

inline void check_copy_columns(const Tensor& dst, int64_t dst_col, const Tensor& src, int64_t src_col,
                               int64_t cols) {
  MS_CHECK(dst.ndim() == 2 && src.ndim() == 2 && dst.size(0) == src.size(0) && dst.dtype == src.dtype &&
               dst_col >= 0 && src_col >= 0 && cols >= 0 && dst_col + cols <= dst.size(1) &&
               src_col + cols <= src.size(1),
           "internal: copy_columns of ", cols, " columns from ", src.shape.str(), " into ", dst.shape.str());
}

}  // namespace miniseq
