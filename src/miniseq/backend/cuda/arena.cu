// Device arena storage for the memory plan: one cudaMalloc per plan, sized by the dry run.
#include "miniseq/backend/cuda/cuda_backend.h"
#include "miniseq/backend/cuda/cuda_check.h"
#include "miniseq/core/memory_plan.h"
#include "miniseq/ops/backend.h"
#ifdef MINISEQ_WITH_NCCL
#include "miniseq/backend/cuda/nccl_communicator.h"
#endif

#include <cstdio>

namespace miniseq::cuda {

namespace {

void* device_arena_allocate(size_t bytes) {
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error; the plan reports the failure
    return nullptr;
  }
  return p;
}

void device_arena_release(void* p, size_t) {
  cudaFree(p);
}

// Touches the arena once so that the first step does not pay for lazy initialization (and checks launches
// work).
__global__ void zero_kernel(unsigned char* p, size_t n) {
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i < n) p[i] = 0;
}

}  // namespace

void register_cuda_backend() {
  register_arena_storage(Device::CUDA, ArenaStorage{device_arena_allocate, device_arena_release});
  register_backend_factory(Device::CUDA, make_cuda_backend);
#ifdef MINISEQ_WITH_NCCL
  dist::register_nccl_factory(make_nccl_communicator);
#endif
}

std::string describe_device() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return std::string("no CUDA device: ") + (err != cudaSuccess ? cudaGetErrorString(err) : "none found");
  }
  cudaDeviceProp prop{};
  MS_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  char mem[32];
  std::snprintf(mem, sizeof mem, "%.1f GiB", static_cast<double>(prop.totalGlobalMem) / (1ull << 30));
  std::string desc =
      std::string(prop.name) + ", sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " + mem;
  unsigned char* probe = nullptr;
  MS_CUDA_CHECK(cudaMalloc(&probe, 256));
  zero_kernel<<<1, 256>>>(probe, 256);
  MS_CUDA_CHECK(cudaGetLastError());
  MS_CUDA_CHECK(cudaDeviceSynchronize());
  MS_CUDA_CHECK(cudaFree(probe));
  return desc;
}

}  // namespace miniseq::cuda
