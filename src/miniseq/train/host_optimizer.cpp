#include "miniseq/train/host_optimizer.h"

#include <algorithm>

#include "miniseq/model/planner.h"

namespace miniseq {

namespace {
int64_t largest_param(const std::vector<ParamSpec>& specs) {
  int64_t n = 0;
  for (const auto& s : specs) n = std::max(n, s.shape.numel());
  return n;
}
}  // namespace

// Allocation order = plan_run's (model/planner.cpp): master, moments, staging.
HostOptimizer::HostOptimizer(MemoryPlan& host, const std::vector<ParamSpec>& specs, DType moments, Backend& device)
    : device_(device),
      cpu_(make_cpu_backend()),
      master_(host, specs, DType::F32, MemCategory::Weights, "master:"),
      opt_(host, specs, moments),
      staging_(host.alloc("grad_staging", {kHostStagingSlots, largest_param(specs)}, DType::F32,
                          MemCategory::Workspace)),
      slot_busy_(static_cast<size_t>(kHostStagingSlots), false) {
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

Tensor HostOptimizer::slot_view(int64_t slot, const Shape& shape) const {
  return Tensor(static_cast<float*>(staging_->data) + slot * staging_->size(1), shape, DType::F32, Device::CPU);
}

void HostOptimizer::init_from(const ParamSet& weights) {
  for (size_t i = 0; i < weights.size(); ++i) device_.download(master_[i], weights[i]);
  opt_.zero(*cpu_);
}

void HostOptimizer::upload_to(const ParamSet& weights) {
  for (size_t i = 0; i < weights.size(); ++i) device_.upload(weights[i], master_[i]);
}

void HostOptimizer::update(const ParamSpec& spec, const Tensor& weight, const Tensor& grad, const AdamWHyper& h) {
  int64_t slot = -1;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      return error_ || std::find(slot_busy_.begin(), slot_busy_.end(), false) != slot_busy_.end();
    });
    if (error_) std::rethrow_exception(error_);
    slot = std::find(slot_busy_.begin(), slot_busy_.end(), false) - slot_busy_.begin();
    slot_busy_[static_cast<size_t>(slot)] = true;
  }
  const int64_t n = grad.numel();
  MS_DASSERT(n <= staging_->size(1));
  device_.download(slot_view(slot, grad.shape), grad);  // now: the device frees the gradient when the group's sink returns
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(Job{spec, weight, slot, n, h});
    ++pending_;
  }
  cv_.notify_all();
}

void HostOptimizer::work() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_
      job = queue_.front();
      queue_.pop_front();
    }
    try {
      const Tensor& master = master_.get(job.spec.name);
      opt_.update(*cpu_, job.spec, master, slot_view(job.slot, master.shape), job.h);
      device_.upload(job.weight, master);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      slot_busy_[static_cast<size_t>(job.slot)] = false;
      --pending_;
    }
    cv_.notify_all();
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
