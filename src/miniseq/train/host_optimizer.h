// Memory policy "optimizer on the host" (issue 7): AdamW's moments and the fp32 master weights live in host
// memory (a plan of their own; pinned on a GPU machine) and the CPU updates them, so the device keeps only
// the weights in its own dtype and, with the optimizer in backward, one gradient group at a time.
//
// The pipeline, per parameter: the main thread queues the gradient's download into a staging ring on the copy
// stream and returns at once (the decoder keeps the group allocated until the download is done:
// Decoder::set_async_grad_reads); a worker thread waits for the download, runs the CPU backend's AdamW
// (OpenMP) on the master weights, writes the new weights in the device's dtype over the gradient in the ring
// and uploads them on the copy stream. So the device goes on with the backward of the next layers while the
// host updates; its weights are only read again in the next forward, after wait(). Each parameter's update is
// independent, so the result does not depend on timing; on the CPU backend it equals the on-device optimizer
// bit for bit (tests/test_offload.cpp).
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

  // Queues the download of `grad` (device) into the staging ring and the update of `weight`; waits only while
  // the ring is full. Returns the download's copy ticket: `grad` must stay intact until it is done.
  uint64_t update(const ParamSpec& spec, const Tensor& weight, const Tensor& grad, const AdamWHyper& h);
  // Every parameter of `weights` from `grads` (persistent gradients), then wait().
  void step(const ParamSet& weights, const ParamSet& grads, const AdamWHyper& h);
  // Returns when every queued update has been applied and uploaded (before the next forward reads the
  // weights).
  void wait();
  // Offset in the host arena of the staging ring: the master weights and moments lie below it (the CPU alone
  // touches them), everything from here on is read or written by asynchronous copies (the ring, then offloaded
  // checkpoints), so only that part needs page-locking.
  size_t staging_offset() const { return staging_.offset(); }

 private:
  struct Job {
    ParamSpec spec;  // a copy: a gradient group's specs die with the group
    Tensor weight;
    int64_t offset;     // in the staging ring (fp32 elements)
    uint64_t download;  // copy ticket of the gradient's download
    AdamWHyper h;
  };
  struct Room {  // a stretch of the ring in use, oldest first
    int64_t offset, numel;
    uint64_t upload = 0;  // set once the job's new weights are being uploaded from it
    bool done = false;    // the job ran (the upload, if any, may still be in flight)
  };
  void work();
  int64_t place(int64_t numel) const;  // offset of free room for numel elements, or -1 (caller holds mu_)
  void release_done(size_t keep);      // waits for the uploads of finished jobs, frees their room (not the
                                       // newest `keep` of them)
  Tensor ring_view(int64_t offset, const Shape& shape, DType dtype) const;

  Backend& device_;
  std::unique_ptr<Backend> cpu_;
  ParamSet master_;
  AdamW opt_;
  Buffer staging_;  // [host_staging_floats(specs)] fp32: the ring
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::deque<Room> rooms_;
  int64_t pending_ = 0;  // jobs whose room is not free yet
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread worker_;
};

}  // namespace miniseq
