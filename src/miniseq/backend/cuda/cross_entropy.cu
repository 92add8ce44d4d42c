// Cross-entropy on a chunk of logits [C, V] (bf16), labels [C] (-100 = ignore), fused with its gradient: one
// block per row reads the row twice. Pass 1: online max and Σ exp(x − max) in fp32 per thread, combined over
// the block in a fixed tree; the row's loss m + log Z − x[label] is formed in double. Pass 2: dlogits =
// (exp(x − m)/Z − onehot)·scale overwrites the logits (0 on ignored rows). The per-row losses go to the host,
// which sums them in row order (deterministic, fp64 as the CPU backend).
#include <vector>

#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace {

constexpr int kThreads = 512;

template <typename T>
__global__ void cross_entropy_kernel(T* logits, const int32_t* labels, int64_t V, float scale,
                                     double* row_loss) {
  __shared__ float red_m[32], red_s[32];
  const int64_t r = blockIdx.x;
  T* x = logits + r * V;
  const int32_t label = labels[r];
  if (label < 0) {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) x[j] = from_f32<T>(0.0f);
    if (threadIdx.x == 0) row_loss[r] = 0.0;
    return;
  }
  float m = -INFINITY, s = 0.0f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const float v = to_f32(x[j]);
    if (v > m) {
      s = s * expf(m - v) + 1.0f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  const float gm = block_max(m, red_m);
  s = m == -INFINITY ? 0.0f : s * expf(m - gm);
  const float z = block_sum(s, red_s);
  const float target = to_f32(x[label]);
  __syncthreads();  // everyone has read x[label] before it is overwritten
  if (threadIdx.x == 0)
    row_loss[r] = static_cast<double>(gm) + log(static_cast<double>(z)) - static_cast<double>(target);
  const float k = scale / z;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    float p = expf(to_f32(x[j]) - gm) * k;
    if (j == label) p -= scale;
    x[j] = from_f32<T>(p);
  }
}

}  // namespace

double CudaBackend::cross_entropy_forward_backward(const Tensor& logits, const int32_t* labels, float scale) {
  const int64_t C = logits.size(0), V = logits.size(1);
  if (C == 0) return 0.0;
  for (int64_t r = 0; r < C; ++r)
    MS_CHECK(labels[r] == -100 || (labels[r] >= 0 && labels[r] < V), "label ", labels[r], " at row ", r,
             " is outside the vocabulary [0, ", V,
             ") and is not the ignore index -100: check the data's labels");
  const int32_t* dlabels = upload_ints(kLabels, labels, C);
  auto* row_loss = static_cast<double*>(scratch(kRowLoss, static_cast<size_t>(C) * sizeof(double)));
  dispatch_dtype(logits.dtype, "cross_entropy", [&](auto tl) {
    using T = decltype(tl);
    cross_entropy_kernel<<<static_cast<unsigned>(C), kThreads>>>(static_cast<T*>(logits.data), dlabels, V,
                                                                 scale, row_loss);
  });
  MS_CUDA_LAUNCH_CHECK();
  std::vector<double> host(static_cast<size_t>(C));
  MS_CUDA_CHECK(cudaMemcpy(host.data(), row_loss, host.size() * sizeof(double), cudaMemcpyDeviceToHost));
  double loss = 0.0;
  for (double v : host) loss += v;
  return loss;
}

}  // namespace miniseq::cuda
