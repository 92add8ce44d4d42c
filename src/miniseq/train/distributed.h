// Data parallelism in the training loop (docs/distributed.md): D ranks, one process each, every rank holding
// the whole model. Each optimizer step takes D × per_device × accumulation blocks of one global order (the
// order of a single process): global micro-batch m is split over the ranks as torch's DistributedSampler
// splits an epoch, rank r taking the blocks at positions m·B·D + k·D + r (k < B). Each rank runs its
// micro-batches with the loss scaled by the global target count, the gradients are summed over the ranks in
// rank order (bit-identical on every rank), and every rank runs the same optimizer step. So every decision
// taken from reduced values (NaN, clipping) is the same everywhere; stop requests (signals) are reduced
// explicitly. Files are written by rank 0 only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "miniseq/dist/communicator.h"
#include "miniseq/model/decoder.h"
#include "miniseq/model/params.h"
#include "miniseq/ops/backend.h"
#include "miniseq/train/train_args.h"

namespace miniseq {

// Refuses flags that do not fit `world` processes.
void check_data_parallel(const TrainArgs& a, int world);

class DataParallel {
 public:
  // `comm`: the world; its size is D (sequence parallelism, which would split it further, is not available
  // yet).
  explicit DataParallel(dist::Communicator& comm) : comm_(comm) {}

  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  bool root() const { return comm_.rank() == 0; }
  dist::Communicator& comm() const { return comm_; }

  // Global micro-batches of D × B blocks in an epoch of `blocks` blocks (the last may be short, and leave
  // some ranks without a block).
  static int64_t micro_per_epoch(int64_t blocks, int64_t B, int D);
  // The blocks of global micro-batch `micro` (counted from the epoch's start) that `rank` takes.
  static std::vector<int64_t> micro_blocks(const std::vector<int64_t>& order, int64_t micro, int64_t B, int D,
                                           int rank);

  // Sums over the ranks of host values, in place (rank order: the same bits everywhere).
  void sum(double* v, int64_t n) { comm_.all_reduce_sum_f64(v, n); }
  // Whether `flag` is set on any rank.
  bool any(bool flag);
  // Every gradient summed over the ranks, in place, then rounded to the backend's gradient precision (as a
  // single process would have accumulated it).
  void reduce_grads(Backend& be, const ParamSet& grads);
  // One gradient group of the optimizer in backward, summed over the ranks in place as reduce_grads does.
  void reduce_group(Backend& be, const std::vector<Tensor>& grads);
  // Rank 0's string, on every rank.
  std::string broadcast_string(const std::string& s);
  void barrier() { comm_.barrier(); }

 private:
  dist::Communicator& comm_;
};

// Optimizer in backward with data parallelism: each gradient group, as soon as the backward completes it, is
// summed over the ranks in place (DataParallel::reduce_group: rank order, the same bits on every rank) and
// then handed to `inner` (the norm's first pass, or the update). Every rank must run the same backward
// schedule.
class GroupSumSink : public GradSink {
 public:
  GroupSumSink(DataParallel& dp, Backend& be, GradSink& inner) : dp_(dp), be_(be), inner_(inner) {}
  uint64_t consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) override;

 private:
  DataParallel& dp_;
  Backend& be_;
  GradSink& inner_;
};

}  // namespace miniseq
