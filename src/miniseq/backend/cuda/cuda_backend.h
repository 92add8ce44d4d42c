// The CUDA backend (issue 6): bf16 storage, fp32 accumulation, cuBLASLt GEMMs, fused kernels. For now it provides
// the device arena for the memory plan and the device query; the op families follow the CPU specification.
#pragma once

#include <string>

namespace miniseq::cuda {

// Registers the CUDA arena storage (and, when the ops land, the backend factory). Called by the entry point.
void register_cuda_backend();

// "NVIDIA H200, sm_90, 139.8 GiB" or a clear reason why no device is usable.
std::string describe_device();

}  // namespace miniseq::cuda
