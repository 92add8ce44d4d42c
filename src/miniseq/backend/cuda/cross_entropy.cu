// Cross-entropy on a chunk of logits [C, V] (bf16), labels [C] (-100 = ignore), fused with its gradient: one
// block per row reads the row twice. Pass 1: online max and Σ exp(x − max) in fp32 per thread, combined over
// the block in a fixed tree; the row's loss m + log Z − x[label] is formed in double. Pass 2: dlogits =
// (exp(x − m)/Z − onehot)·scale overwrites the logits (0 on ignored rows). The per-row losses go to the host,
// which sums them in row order (deterministic, fp64 as the CPU backend).
// Evaluation (cross_entropy_forward): pass 1 only, plus the first argmax of the row; the logits stay.
#include <climits>
#include <vector>

#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"
#include "miniseq/ops/labels.h"

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

__device__ __forceinline__ int block_min_int(int v, int* smem /* >= 32 */) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  int r = lane < nwarps ? smem[lane] : INT_MAX;
  for (int o = 16; o > 0; o >>= 1) r = min(r, __shfl_xor_sync(0xffffffffu, r, o));
  return r;
}

// One block per row: loss (fp64 from fp32 max and Σ) and the first index of the maximum (INT_MAX for an
// ignored row). Each thread visits its columns in increasing order, so its first maximum is its smallest such
// index.
template <typename T>
__global__ void cross_entropy_stats_kernel(const T* logits, const int32_t* labels, int64_t V,
                                           double* row_loss, int* row_arg) {
  __shared__ float red_m[32], red_s[32];
  __shared__ int red_i[32];
  const int64_t r = blockIdx.x;
  const T* x = logits + r * V;
  const int32_t label = labels[r];
  if (label < 0) {  // the whole block leaves together
    if (threadIdx.x == 0) row_loss[r] = 0.0, row_arg[r] = INT_MAX;
    return;
  }
  float m = -INFINITY, s = 0.0f;
  int arg = INT_MAX;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const float v = to_f32(x[j]);
    if (v > m) {
      s = s * expf(m - v) + 1.0f;
      m = v;
      arg = static_cast<int>(j);
    } else {
      s += expf(v - m);
    }
  }
  const float gm = block_max(m, red_m);
  s = m == -INFINITY ? 0.0f : s * expf(m - gm);
  const float z = block_sum(s, red_s);
  const int first = block_min_int(m == gm ? arg : INT_MAX, red_i);
  if (threadIdx.x == 0) {
    row_loss[r] =
        static_cast<double>(gm) + log(static_cast<double>(z)) - static_cast<double>(to_f32(x[label]));
    row_arg[r] = first;
  }
}

}  // namespace

CrossEntropyStats CudaBackend::cross_entropy_forward(const Tensor& logits, const int32_t* labels) {
  const int64_t C = logits.size(0), V = logits.size(1);
  CrossEntropyStats st;
  if (C == 0) return st;
  check_labels(labels, C, V);
  const int32_t* dlabels = upload_ints(kLabels, labels, C);
  auto* row_loss = static_cast<double*>(scratch(kRowLoss, static_cast<size_t>(C) * sizeof(double)));
  auto* row_arg = static_cast<int*>(scratch(kRowArg, static_cast<size_t>(C) * sizeof(int)));
  dispatch_dtype(logits.dtype, "cross_entropy", [&](auto tl) {
    using T = decltype(tl);
    cross_entropy_stats_kernel<<<static_cast<unsigned>(C), kThreads>>>(static_cast<const T*>(logits.data),
                                                                       dlabels, V, row_loss, row_arg);
  });
  MS_CUDA_LAUNCH_CHECK();
  std::vector<double> loss(static_cast<size_t>(C));
  std::vector<int> arg(static_cast<size_t>(C));
  MS_CUDA_CHECK(cudaMemcpy(loss.data(), row_loss, loss.size() * sizeof(double), cudaMemcpyDeviceToHost));
  MS_CUDA_CHECK(cudaMemcpy(arg.data(), row_arg, arg.size() * sizeof(int), cudaMemcpyDeviceToHost));
  for (int64_t r = 0; r < C; ++r) {
    if (labels[r] == -100) continue;
    st.loss_sum += loss[static_cast<size_t>(r)];
    ++st.counted;
    if (arg[static_cast<size_t>(r)] == labels[r]) ++st.correct;
  }
  return st;
}

double CudaBackend::cross_entropy_forward_backward(const Tensor& logits, const int32_t* labels, float scale) {
  const int64_t C = logits.size(0), V = logits.size(1);
  if (C == 0) return 0.0;
  check_labels(labels, C, V);
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
