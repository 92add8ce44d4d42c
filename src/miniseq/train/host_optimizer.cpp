#include "miniseq/train/host_optimizer.h"

#include <algorithm>

#include "miniseq/model/planner.h"

namespace miniseq {

namespace {
// dst ← src converted to dst's dtype, in blocks over the OpenMP threads (the worker's share of a layer is a
// few hundred MB).
void convert_parallel(const Tensor& dst, const Tensor& src) {
  constexpr int64_t kBlock = int64_t{1} << 16;
  const int64_t n = src.numel(), blocks = (n + kBlock - 1) / kBlock;
  const size_t sw = dtype_size(src.dtype), dw = dtype_size(dst.dtype);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i = b * kBlock, len = std::min(kBlock, n - i);
    convert(static_cast<const char*>(src.data) + i * static_cast<int64_t>(sw), src.dtype,
            static_cast<char*>(dst.data) + i * static_cast<int64_t>(dw), dst.dtype, static_cast<size_t>(len));
  }
}
}  // namespace

// Allocation order = plan_run's (model/planner.cpp): master, moments, staging.
HostOptimizer::HostOptimizer(MemoryPlan& host, const std::vector<ParamSpec>& specs, DType moments,
                             Backend& device)
    : device_(device),
      cpu_(make_cpu_backend()),
      master_(host, specs, DType::F32, MemCategory::Weights, "master:"),
      opt_(host, specs, moments),
      staging_(host.alloc("grad_staging", {host_staging_floats(specs)}, DType::F32, MemCategory::Workspace)) {
  MS_CHECK(host.device() == Device::CPU, "internal: the host optimizer needs a host plan");
  if (!host.is_dry()) worker_ = std::thread([this] { work(); });
}

HostOptimizer::~HostOptimizer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

Tensor HostOptimizer::ring_view(int64_t offset, const Shape& shape, DType dtype) const {
  return Tensor(static_cast<float*>(staging_->data) + offset, shape, dtype, Device::CPU);
}

void HostOptimizer::init_from(const ParamSet& weights) {
  for (size_t i = 0; i < weights.size(); ++i) device_.download(master_[i], weights[i]);
  opt_.zero(*cpu_);
}

void HostOptimizer::upload_to(const ParamSet& weights) {
  for (size_t i = 0; i < weights.size(); ++i) device_.upload(weights[i], master_[i]);
}

// The rooms are taken and freed in the same order (one worker, FIFO), so the ring's free space is the stretch
// after the newest room up to the oldest one.
int64_t HostOptimizer::place(int64_t numel) const {
  const int64_t cap = staging_->numel();
  if (rooms_.empty()) return numel <= cap ? 0 : -1;
  const int64_t tail = rooms_.front().offset, head = rooms_.back().offset + rooms_.back().numel;
  if (head > tail) {  // in use: [tail, head)
    if (cap - head >= numel) return head;
    return tail >= numel ? 0 : -1;  // wrap around to the start
  }
  return tail - head >= numel ? head : -1;  // in use: [tail, cap) and [0, head)
}

uint64_t HostOptimizer::update(const ParamSpec& spec, const Tensor& weight, const Tensor& grad,
                               const AdamWHyper& h) {
  MS_CHECK(grad.dtype == DType::F32, "internal: the host optimizer takes fp32 gradients");
  const int64_t n = grad.numel();
  int64_t offset = -1;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return error_ || (offset = place(n)) >= 0; });
    if (error_) std::rethrow_exception(error_);
    rooms_.push_back(Room{offset, n});
    ++pending_;
  }
  const uint64_t download = device_.download_async(ring_view(offset, grad.shape, DType::F32), grad);
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(Job{spec, weight, offset, download, h});
  }
  cv_.notify_all();
  return download;
}

void HostOptimizer::release_done(size_t keep) {
  for (;;) {
    uint64_t upload = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      size_t done = 0;
      while (done < rooms_.size() && rooms_[done].done) ++done;
      if (done <= keep) return;
      upload = rooms_.front().upload;
    }
    try {
      device_.sync_copy(upload);  // the upload reads the room: it is free once the copy is done
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      rooms_.pop_front();  // only this thread frees rooms, so the front is still the one waited for
      --pending_;
    }
    cv_.notify_all();
  }
}

void HostOptimizer::work() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (queue_.empty()) {  // idle: let the last uploads land, so that wait() can return
        lock.unlock();
        release_done(0);
        lock.lock();
      }
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_
      job = queue_.front();
      queue_.pop_front();
    }
    uint64_t upload = 0;
    try {
      device_.sync_copy(job.download);
      const Tensor& master = master_.get(job.spec.name);
      opt_.update(*cpu_, job.spec, master, ring_view(job.offset, master.shape, DType::F32), job.h);
      // The new weights in the device's dtype, written over the gradient they came from, go up on the copy
      // stream.
      const Tensor staged = ring_view(job.offset, master.shape, job.weight.dtype);
      convert_parallel(staged, master);
      upload = device_.upload_async(job.weight, staged);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (Room& r : rooms_)
        if (!r.done) {  // jobs run in the order their rooms were taken
          r.done = true;
          r.upload = upload;
          break;
        }
    }
    release_done(1);  // the previous job's upload has had this job's time to land
  }
}

void HostOptimizer::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return pending_ == 0 || error_; });
  if (error_) std::rethrow_exception(error_);
}

void HostOptimizer::step(const ParamSet& weights, const ParamSet& grads, const AdamWHyper& h) {
  for (size_t i = 0; i < weights.size(); ++i) update(weights.specs()[i], weights[i], grads[i], h);
  wait();
}

}  // namespace miniseq
