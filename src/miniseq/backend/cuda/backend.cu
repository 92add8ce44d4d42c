// The CUDA backend object: cuBLASLt handle and workspace, grow-only device scratch, the factory.
#include "miniseq/backend/cuda/cuda_backend.h"
#include "miniseq/backend/cuda/cuda_check.h"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace {
constexpr size_t kLtWorkspaceBytes = 64ull << 20;  // cuBLASLt's recommendation for Hopper is 32 MiB or more
}

CudaBackend::CudaBackend() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  MS_CHECK(err == cudaSuccess && count > 0, "--device cuda: no usable CUDA device (",
           err != cudaSuccess ? cudaGetErrorString(err) : "none found",
           "); run on a machine with an NVIDIA GPU and driver, or use --device cpu");
  MS_CUBLAS_CHECK(cublasLtCreate(&lt_));
  MS_CUDA_CHECK(cudaMalloc(&lt_workspace_, kLtWorkspaceBytes));
  lt_workspace_bytes_ = kLtWorkspaceBytes;
  MS_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  MS_CUDA_CHECK(cudaEventCreateWithFlags(&issued_, cudaEventDisableTiming));
  for (auto& e : copied_) MS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
}

CudaBackend::~CudaBackend() {
  if (copy_stream_) cudaStreamSynchronize(copy_stream_);
  for (auto& e : copied_)
    if (e) cudaEventDestroy(e);
  if (issued_) cudaEventDestroy(issued_);
  if (copy_stream_) cudaStreamDestroy(copy_stream_);
  for (auto& b : slots_) cudaFree(b.p);
  cudaFree(lt_workspace_);
  if (lt_) cublasLtDestroy(lt_);
}

size_t CudaBackend::scratch_bytes(const ScratchShape& shape) const {
  return cuda_scratch_layout(shape).total;
}

void CudaBackend::set_scratch(void* p, size_t bytes, const ScratchShape& shape) {
  planned_scratch_ = static_cast<char*>(p);
  planned_layout_ = p ? cuda_scratch_layout(shape) : ScratchLayout{};
  MS_CHECK(!p || bytes >= planned_layout_.total, "internal: planned scratch of ", bytes, " bytes for a layout of ",
           planned_layout_.total);
  rope_positions_.clear();  // the cached RoPE table lived in the previous scratch
}

void* CudaBackend::scratch(Slot s, size_t bytes) {
  if (planned_scratch_) {
    const auto k = static_cast<size_t>(s);
    MS_CHECK(bytes <= planned_layout_.bytes[k], "internal: CUDA scratch slot ", k, " needs ", bytes,
             " bytes but ", planned_layout_.bytes[k], " were planned (ops/scratch.h)");
    return planned_scratch_ + planned_layout_.offset[k];
  }
  Buf& b = slots_[s];
  if (bytes > b.bytes) {
    // Grow with headroom so that a slightly larger later call does not reallocate.
    const size_t want = bytes + bytes / 4 + 4096;
    MS_CUDA_CHECK(cudaDeviceSynchronize());  // the old buffer may still be in use by queued kernels
    MS_CUDA_CHECK(cudaFree(b.p));
    b.p = nullptr;
    b.bytes = 0;
    MS_CUDA_CHECK(cudaMalloc(&b.p, want));
    b.bytes = want;
  }
  return b.p;
}

int32_t* CudaBackend::upload_ints(Slot s, const int32_t* host, int64_t n) {
  auto* d = static_cast<int32_t*>(scratch(s, static_cast<size_t>(n > 0 ? n : 1) * sizeof(int32_t)));
  if (n > 0)
    MS_CUDA_CHECK(cudaMemcpy(d, host, static_cast<size_t>(n) * sizeof(int32_t), cudaMemcpyHostToDevice));
  return d;
}

size_t CudaBackend::scratch_bytes() const {
  size_t n = lt_workspace_bytes_;
  for (const auto& b : slots_) n += b.bytes;
  return n;
}

void CudaBackend::warm_up() {
  // Loads the kernels' modules and creates the context's lazy state before memory is measured.
  MS_CUDA_CHECK(cudaFree(nullptr));
  MS_CUDA_CHECK(cudaDeviceSynchronize());
}

std::unique_ptr<Backend> make_cuda_backend() {
  return std::make_unique<CudaBackend>();
}

}  // namespace miniseq::cuda
