// Host <-> device copies with dtype conversion on the host, weight loading onto the device, DeviceTensor.
#include <algorithm>
#include <vector>

#include "miniseq/backend/cuda/cuda_backend.h"
#include "miniseq/backend/cuda/cuda_check.h"
#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

void upload(const Tensor& dev, const Tensor& host) {
  MS_CHECK(dev.numel() == host.numel(), "internal: upload of ", host.shape.str(), " into ", dev.shape.str());
  if (dev.numel() == 0) return;
  if (dev.dtype == host.dtype) {
    MS_CUDA_CHECK(cudaMemcpy(dev.data, host.data, dev.bytes(), cudaMemcpyHostToDevice));
    return;
  }
  std::vector<unsigned char> staging(dev.bytes());
  convert(host.data, host.dtype, staging.data(), dev.dtype, static_cast<size_t>(dev.numel()));
  MS_CUDA_CHECK(cudaMemcpy(dev.data, staging.data(), dev.bytes(), cudaMemcpyHostToDevice));
}

void download(const Tensor& host, const Tensor& dev) {
  MS_CHECK(dev.numel() == host.numel(), "internal: download of ", dev.shape.str(), " into ",
           host.shape.str());
  if (dev.numel() == 0) return;
  if (dev.dtype == host.dtype) {
    MS_CUDA_CHECK(cudaMemcpy(host.data, dev.data, dev.bytes(), cudaMemcpyDeviceToHost));
    return;
  }
  std::vector<unsigned char> staging(dev.bytes());
  MS_CUDA_CHECK(cudaMemcpy(staging.data(), dev.data, dev.bytes(), cudaMemcpyDeviceToHost));
  convert(staging.data(), dev.dtype, host.data, host.dtype, static_cast<size_t>(dev.numel()));
}

void load_params_to_device(const SafetensorsModel& files, const ModelConfig& config, const ParamSet& params) {
  auto problems = check_model_files(files, params.specs(), config);
  MS_CHECK(problems.empty(), problems.front(),
           problems.size() > 1
               ? " (and " + std::to_string(problems.size() - 1) + " more problems; run `miniseq inspect`)"
               : std::string());
  size_t largest = 0;
  params.for_each([&](const ParamSpec&, const Tensor& t) { largest = std::max(largest, t.bytes()); });
  std::vector<unsigned char> staging(largest);
  params.for_each([&](const ParamSpec& s, const Tensor& t) {
    if (!t.data) return;
    files.read(s.name, Tensor(staging.data(), t.shape, t.dtype, Device::CPU));  // converts to the param dtype
    MS_CUDA_CHECK(cudaMemcpy(t.data, staging.data(), t.bytes(), cudaMemcpyHostToDevice));
  });
}

void CudaBackend::upload(const Tensor& dst, const Tensor& host_src) {
  cuda::upload(dst, host_src);
}
void CudaBackend::download(const Tensor& host_dst, const Tensor& src) {
  cuda::download(host_dst, src);
}
size_t CudaBackend::device_bytes_in_use() const {
  return device_used_bytes();
}
size_t CudaBackend::device_free_bytes() const {
  size_t free_bytes = 0, total_bytes = 0;
  MS_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return free_bytes;
}

// Page-locked host memory lets cudaMemcpy skip the driver's bounce buffer (offloaded optimizer state and
// checkpoints move at PCIe speed).
void CudaBackend::pin_host_memory(void* p, size_t bytes) {
  if (p && bytes) MS_CUDA_CHECK(cudaHostRegister(p, bytes, cudaHostRegisterDefault));
}
void CudaBackend::unpin_host_memory(void* p) {
  if (p) MS_CUDA_CHECK(cudaHostUnregister(p));
}

// The copy waits for everything issued so far on the compute (legacy default) stream, then runs on the copy
// stream; its completion event lets later compute wait for it on the GPU (wait_copy) instead of on the host.
uint64_t CudaBackend::copy_async(void* dst, const void* src, size_t bytes, bool to_device) {
  std::lock_guard<std::mutex> lock(copy_mu_);
  MS_CUDA_CHECK(cudaEventRecord(issued_, 0));
  MS_CUDA_CHECK(cudaStreamWaitEvent(copy_stream_, issued_, 0));
  if (bytes)
    MS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes,
                                  to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, copy_stream_));
  const uint64_t ticket = ++copies_;
  MS_CUDA_CHECK(cudaEventRecord(copied_[ticket % kCopyEvents], copy_stream_));
  if (sync_after_launch()) MS_CUDA_CHECK(cudaStreamSynchronize(copy_stream_));  // MINISEQ_CUDA_SYNC=1
  return ticket;
}

uint64_t CudaBackend::download_async(const Tensor& host_dst, const Tensor& src) {
  MS_CHECK(src.numel() == host_dst.numel() && src.dtype == host_dst.dtype, "internal: async download of ",
           src.shape.str(), " ", dtype_name(src.dtype), " into ", host_dst.shape.str(), " ",
           dtype_name(host_dst.dtype));
  return copy_async(host_dst.data, src.data, src.bytes(), /*to_device=*/false);
}

uint64_t CudaBackend::upload_async(const Tensor& dst, const Tensor& host_src) {
  MS_CHECK(dst.numel() == host_src.numel() && dst.dtype == host_src.dtype, "internal: async upload of ",
           host_src.shape.str(), " ", dtype_name(host_src.dtype), " into ", dst.shape.str(), " ",
           dtype_name(dst.dtype));
  return copy_async(dst.data, host_src.data, dst.bytes(), /*to_device=*/true);
}

// Waiting on a ticket whose event slot was re-recorded by a later copy waits for that later copy: still
// correct (the copy stream is in order), only stricter; a ring of 16 makes it rare.
void CudaBackend::wait_copy(uint64_t ticket) {
  if (ticket == 0) return;
  std::lock_guard<std::mutex> lock(copy_mu_);
  MS_DASSERT(ticket <= copies_);
  MS_CUDA_CHECK(cudaStreamWaitEvent(0, copied_[ticket % kCopyEvents], 0));
}

void CudaBackend::sync_copy(uint64_t ticket) {
  if (ticket == 0) return;
  cudaEvent_t done = nullptr;
  {
    std::lock_guard<std::mutex> lock(copy_mu_);
    MS_DASSERT(ticket <= copies_);
    done = copied_[ticket % kCopyEvents];
  }
  MS_CUDA_CHECK(cudaEventSynchronize(done));  // outside the lock: the other thread goes on issuing copies
}

size_t device_used_bytes() {
  size_t free_b = 0, total_b = 0;
  MS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b - free_b;
}

DeviceTensor::DeviceTensor(Shape shape, DType dtype) {
  t_ = Tensor(nullptr, shape, dtype, Device::CUDA);
  const size_t bytes = std::max<size_t>(t_.bytes(), 16);
  MS_CUDA_CHECK(cudaMalloc(&t_.data, bytes));
  MS_CUDA_CHECK(cudaMemset(t_.data, 0, bytes));
}

DeviceTensor::~DeviceTensor() {
  cudaFree(t_.data);
}

}  // namespace miniseq::cuda
