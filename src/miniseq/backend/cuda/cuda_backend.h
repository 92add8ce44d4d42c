// The CUDA backend (issue 6): bf16 weights and activations, fp32 gradients, fp32 accumulation, cuBLASLt
// GEMMs, fused kernels, a flash-attention kernel of our own. The op class is in cuda_ops.h; this header is
// what the rest of the program uses: registration, the device query, host <-> device copies and weight
// loading. docs/cuda.md has the design, the numerics and how it is verified.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "miniseq/core/tensor.h"
#include "miniseq/io/model_config.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/model/params.h"
#include "miniseq/ops/backend.h"

namespace miniseq::cuda {

// Registers the CUDA arena storage and the backend factory (make_backend(Device::CUDA)). Called by main().
void register_cuda_backend();

// "NVIDIA H200, sm_90, 139.8 GiB" or a clear reason why no device is usable.
std::string describe_device();

// The backend itself (also reachable through make_backend(Device::CUDA) once registered).
std::unique_ptr<Backend> make_cuda_backend();

// Host <-> device copies of whole tensors, converting the dtype on the host through a staging buffer.
// `dev` is a CUDA tensor, `host` a CPU one, same number of elements.
void upload(const Tensor& dev, const Tensor& host);
void download(const Tensor& host, const Tensor& dev);

// Reads every parameter of `files` into the device ParamSet `params` (in its dtype, bf16 for this backend):
// one host staging buffer of the largest tensor, converted on the host, copied with cudaMemcpy. Fails like
// load_params() (model/params.h) on missing, unexpected or misshaped tensors.
void load_params_to_device(const SafetensorsModel& files, const ModelConfig& config, const ParamSet& params);

// Bytes of device memory in use on the current device (total − free, all processes): for measured peaks.
size_t device_used_bytes();

// A device allocation that owns its memory, for tests and benchmarks (the engine uses the memory plan).
class DeviceTensor {
 public:
  DeviceTensor(Shape shape, DType dtype);
  ~DeviceTensor();
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;
  const Tensor& tensor() const { return t_; }
  operator const Tensor&() const { return t_; }  // NOLINT: used where a Tensor view is expected

 private:
  Tensor t_;
};

}  // namespace miniseq::cuda
