// Cross-entropy on a chunk of logits [C, V] with labels [C] (-100 = ignore), fused with its gradient:
// the mini-sequence LM head calls it per chunk so the full S × V logits never exist.
// Per valid row (fp32 log-softmax with max subtraction, as torch's log_softmax):
//   m = max(x); Z = Σ exp(x − m); loss = m + log Z − x[label];  dlogits = (exp(x − m)/Z − onehot) · scale.
#include <cmath>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/backend/cpu/simd_math.h"

namespace miniseq {

namespace {
constexpr int32_t kIgnoreIndex = -100;
}

double CpuBackend::cross_entropy_forward_backward(const Tensor& logits, const int32_t* labels, float scale) {
  const int64_t C = logits.size(0), V = logits.size(1);
  float* px = logits.f32();
  for (int64_t r = 0; r < C; ++r)
    MS_CHECK(labels[r] == kIgnoreIndex || (labels[r] >= 0 && labels[r] < V), "label ", labels[r], " at row ",
             r, " is outside the vocabulary [0, ", V,
             ") and is not the ignore index -100: check the data's labels");
  double loss = 0.0;
#pragma omp parallel for reduction(+ : loss) schedule(static) if (C * V > (1 << 15))
  for (int64_t r = 0; r < C; ++r) {
    float* x = px + r * V;
    const int32_t label = labels[r];
    if (label == kIgnoreIndex) {
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) x[j] = 0.0f;
      continue;
    }
    const float m = cpu::max_of(x, V);
    const float target = x[label];
    const float z = static_cast<float>(cpu::exp_affine_sum(x, 1.0f, -m, x, V));  // x ← exp(x − m)
    loss += static_cast<double>(m) + std::log(static_cast<double>(z)) - static_cast<double>(target);
    const float k = scale / z;
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) x[j] *= k;
    x[label] -= scale;
  }
  return loss;
}

}  // namespace miniseq
