// Cross-entropy on a chunk of logits [C, V] with labels [C] (-100 = ignore), fused with its gradient:
// the mini-sequence LM head calls it per chunk so the full S × V logits never exist.
// Per valid row (fp32 log-softmax with max subtraction, as torch's log_softmax):
//   m = max(x); Z = Σ exp(x − m); loss = m + log Z − x[label];  dlogits = (exp(x − m)/Z − onehot) · scale.
#include <cmath>
#include <vector>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/backend/cpu/simd_math.h"
#include "miniseq/ops/labels.h"

namespace miniseq {

namespace {
constexpr int32_t kIgnoreIndex = kIgnoreLabel;

}  // namespace

double CpuBackend::cross_entropy_forward_backward(const Tensor& logits, const int32_t* labels, float scale) {
  const int64_t C = logits.size(0), V = logits.size(1);
  float* px = logits.f32();
  check_labels(labels, C, V);
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

// Evaluation: the same loss per row, plus the first argmax; the logits stay as they are.
CrossEntropyStats CpuBackend::cross_entropy_forward(const Tensor& logits, const int32_t* labels) {
  const int64_t C = logits.size(0), V = logits.size(1);
  const float* px = logits.f32();
  check_labels(labels, C, V);
  double loss = 0.0;
  int64_t counted = 0, correct = 0;
#pragma omp parallel reduction(+ : loss, counted, correct) if (C * V > (1 << 15))
  {
    std::vector<float> scratch(static_cast<size_t>(V));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < C; ++r) {
      const float* x = px + r * V;
      const int32_t label = labels[r];
      if (label == kIgnoreIndex) continue;
      const float m = cpu::max_of(x, V);
      const float z = static_cast<float>(cpu::exp_affine_sum(x, 1.0f, -m, scratch.data(), V));
      loss += static_cast<double>(m) + std::log(static_cast<double>(z)) - static_cast<double>(x[label]);
      int64_t arg = 0;
      while (arg < V && x[arg] != m) ++arg;  // the first maximum (a NaN row has none: counted wrong)
      ++counted;
      if (arg == label) ++correct;
    }
  }
  return {loss, counted, correct};
}

}  // namespace miniseq
