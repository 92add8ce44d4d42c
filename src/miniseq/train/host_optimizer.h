// Memory policy "optimizer on the host" (issue 7): AdamW's moments and the fp32 master weights live in host memory
// (a plan of their own; pinned on a GPU machine) and the CPU updates them, so the device keeps only the weights in
// its own dtype and, with the optimizer in backward, one gradient group at a time. Each gradient is downloaded as soon
// as it is complete; a worker thread runs the CPU backend's AdamW on the master weights and uploads the result to the
// device weights while the device goes on with the backward of the next layers. Each parameter's update is
// independent, so the result does not depend on timing; on the CPU backend it equals the on-device optimizer bit for
// bit (tests/test_offload.cpp).
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "miniseq/train/optimizer.h"

namespace miniseq {

class HostOptimizer {
 public:
  // `host` is a CPU plan; `device` the backend holding the weights.
  HostOptimizer(MemoryPlan& host, const std::vector<ParamSpec>& specs, DType moments, Backend& device);
  ~HostOptimizer();
  HostOptimizer(const HostOptimizer&) = delete;
  HostOptimizer& operator=(const HostOptimizer&) = delete;

  const ParamSet& master() const { return master_; }
  const ParamSet& exp_avg() const { return opt_.exp_avg(); }
  const ParamSet& exp_avg_sq() const { return opt_.exp_avg_sq(); }

  // master ← the device weights (fp32), moments zero: a fresh run.
  void init_from(const ParamSet& weights);
  // device weights ← master: after master and moments were loaded from a checkpoint.
  void upload_to(const ParamSet& weights);

  // Downloads `grad` (device) into a staging slot now and queues the update of `weight` (waits while both slots
  // are in use).
  void update(const ParamSpec& spec, const Tensor& weight, const Tensor& grad, const AdamWHyper& h);
  // Every parameter of `weights` from `grads` (persistent gradients), then wait().
  void step(const ParamSet& weights, const ParamSet& grads, const AdamWHyper& h);
  // Returns when every queued update has been applied (before the next forward reads the weights).
  void wait();

 private:
  struct Job {
    ParamSpec spec;  // a copy: a gradient group's specs die with the group
    Tensor weight;
    int64_t slot, numel;
    AdamWHyper h;
  };
  void work();
  Tensor slot_view(int64_t slot, const Shape& shape) const;  // the first numel(shape) floats of a staging slot

  Backend& device_;
  std::unique_ptr<Backend> cpu_;
  ParamSet master_;
  AdamW opt_;
  Buffer staging_;  // [kHostStagingSlots, largest parameter] fp32
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::vector<bool> slot_busy_;
  int64_t pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread worker_;
};

}  // namespace miniseq
