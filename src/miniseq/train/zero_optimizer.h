// ZeRO stage 1 (--zero_stage 1, docs/distributed.md): AdamW's moments and fp32 master weights sharded over
// the data-parallel ranks. The parameters, in the table's order, form one flat vector of N elements; rank r
// owns elements [r·S, min((r+1)·S, N)), S = ceil(N / D), and keeps the optimizer state of those alone (the
// planner plans the same three flat buffers: model/planner.cpp). Every rank still receives the whole summed
// gradient; each updates its own elements with the same AdamW arithmetic as the unsharded optimizer (so the
// weights are the same bits), then every piece is broadcast from its owner, so every rank holds every weight
// again.
//
// Memory policies: with `host` (--offload_optimizer True) the shard's moments and fp32 master weights live in
// host memory and the CPU updates them (each piece's gradient downloaded into a host staging buffer, the new
// weights uploaded from it); without master weights (--master_weights False) the bf16 weights are updated in
// place with the stochastic rounding of the unsharded AdamW, each piece drawing the bits its elements draw
// there (sr::advance); inside the backward (--optimizer_in_backward True) each parameter is updated by
// update_param as soon as its summed gradient exists: stage 1 from the group's gradients all-reduced in place
// (GroupSumSink), stage 2 from each piece's sum in a buffer of one piece on its owner (ZeroPieceSink; no
// gradient shard).
//
// Checkpoints: each rank writes its shard (optimizer-shard-R-of-D.safetensors: exp_avg, exp_avg_sq and the
// exact fp32 weights of its elements, with their flat range in the metadata) into the checkpoint rank 0
// writes. A resume reads the ranges it owns from whichever shard files hold them, so it works at another rank
// count too.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "miniseq/core/memory_plan.h"
#include "miniseq/dist/communicator.h"
#include "miniseq/model/params.h"
#include "miniseq/train/checkpoint.h"
#include "miniseq/train/optimizer.h"

namespace miniseq {

// The flat layout of the parameters over `ranks` shards.
struct ZeroLayout {
  ZeroLayout(const std::vector<ParamSpec>& specs, int ranks);
  int ranks;
  int64_t total = 0, shard = 0;  // N, S
  std::vector<int64_t> offsets;  // the flat offset of each parameter, in table order
  int64_t begin(int r) const { return std::min<int64_t>(static_cast<int64_t>(r) * shard, total); }
  int64_t end(int r) const { return std::min<int64_t>((static_cast<int64_t>(r) + 1) * shard, total); }
  // Elements [offset, offset + count) of parameter `param` lie at flat [flat, flat + count).
  struct Piece {
    size_t param;
    int64_t offset, count, flat;
  };
  std::vector<Piece> pieces(int64_t flat_begin, int64_t flat_end) const;
};

// The memory policy of the shards (flags --zero_stage 2, --offload_optimizer, --master_weights, --seed).
struct ZeroOptions {
  bool shard_grads = false;    // stage 2: a flat fp32 gradient shard
  bool in_backward = false;    // with shard_grads: no shard, one piece's buffer (ZeroPieceSink)
  MemoryPlan* host = nullptr;  // offloaded: moments, master and staging in this host plan
  bool master_weights = true;  // false: no master below fp32 weights (stochastic rounding)
  uint64_t seed = 0;           // the stochastic rounding's seed (--seed)
};

class ZeroAdamW {
 public:
  // Allocates this rank's shard of exp_avg and exp_avg_sq (moments dtype), for weights stored below fp32 (and
  // master_weights) of the fp32 master weights, and with shard_grads (stage 2) of the fp32 gradients, in that
  // order (with in_backward, the buffer of one piece instead of the shard). Offloaded (o.host): exp_avg,
  // exp_avg_sq, the fp32 master (always: the host updates it) and the staging buffer in the host plan, then
  // the gradient shard (stage 2) in `plan`. The planner allocates the same (model/planner.cpp).
  ZeroAdamW(MemoryPlan& plan, const std::vector<ParamSpec>& specs, DType moments, DType params, int rank,
            int ranks, const ZeroOptions& o = {});

  const ZeroLayout& layout() const { return layout_; }
  // A fresh run: moments zero, the master shard from the weights.
  void reset(Backend& be, const ParamSet& weights);
  // Updates this rank's elements from the (already summed) gradients, then gives every rank every weight.
  void step(Backend& be, const ParamSet& weights, const ParamSet& grads, const AdamWHyper& h,
            dist::Communicator& comm);
  // Every piece of every weight from the rank that owns it.
  void broadcast_weights(const ParamSet& weights, dist::Communicator& comm) const;
  // Optimizer in backward, stage 1: this rank's pieces of one parameter from `grad` (its whole summed
  // gradient), then every rank gets every piece of it.
  void update_param(Backend& be, const ParamSet& weights, const std::string& name, const Tensor& grad,
                    const AdamWHyper& h, dist::Communicator& comm);
  // Stage 2 in backward: one parameter's gradient summed over the ranks piece by piece into the owner's piece
  // buffer; there the piece's sum of squares is recorded (weights null: the norm's pass) or it updates the
  // piece (then every rank gets the parameter).
  void reduce_piecewise(const std::string& name, const Tensor& grad, const ParamSet* weights,
                        const AdamWHyper& h, dist::Communicator& comm, Backend& be);
  // The global norm from the sums of squares reduce_piecewise recorded (grad_norm's order: the same bits).
  double piece_grad_norm(dist::Communicator& comm) const;
  // Offloaded: whether the state lives on the host, and the offset in the host plan from which asynchronous
  // copies read and write (the staging buffer).
  bool offloaded() const { return cpu_ != nullptr; }
  size_t staging_offset() const { return staging_ ? staging_->offset() : 0; }

  // Stage 2: the gradient shard [S] (fp32), summed over the ranks by ZeroGradSink during the backward.
  bool shards_grads() const { return shard_grads_; }
  const Tensor& grad_shard() const { return *g_; }
  // The global norm of the summed gradients: this rank's sum of squares, summed over the ranks in rank order.
  double grad_norm(Backend& be, dist::Communicator& comm) const;
  // Stage 2's update: this rank's elements from the gradient shard, then every rank gets every weight.
  void step_from_shard(Backend& be, const ParamSet& weights, const AdamWHyper& h, dist::Communicator& comm);
  // Sums one parameter's gradient over the ranks into its owners' gradient shards (added to what is there).
  // One process: the backend adds it (y += x, the same arithmetic; the tensors may be on a device).
  void reduce_grad(const std::string& name, const Tensor& grad, dist::Communicator& comm, Backend& be) const;

  static std::string shard_file(int rank, int ranks);
  // Writes this rank's shard file into `dir` (the checkpoint being written).
  void save_shard(const std::string& dir, const ParamSet& weights, Backend& be) const;
  // Reads this rank's elements from the shard files of checkpoint `dir` (written at any rank count): moments,
  // master and weights; then every rank gets every weight. Errors name the file.
  void load_shards(const std::string& dir, const ParamSet& weights, Backend& be, dist::Communicator& comm);

 private:
  Tensor piece(const Tensor& flat_shard, const ZeroLayout::Piece& p) const;  // the shard's part for p
  static Tensor piece_of_param(const Tensor& param, const ZeroLayout::Piece& p);
  void update(Backend& be, const ParamSet& weights, const AdamWHyper& h,
              const std::function<Tensor(const ZeroLayout::Piece&)>& grad);
  // AdamW on one piece of this rank's (on the device, or downloaded to the host and the weights uploaded).
  void update_piece(Backend& be, const ParamSet& weights, const ZeroLayout::Piece& p, const Tensor& grad,
                    const AdamWHyper& h);
  void broadcast_param(const ParamSet& weights, size_t param, dist::Communicator& comm) const;
  // Copies between the shard's state (device or host) and host buffers, converting the dtype.
  void state_to_host(Backend& be, const Tensor& host_dst, const Tensor& state) const;
  void state_from_host(Backend& be, const Tensor& state, const Tensor& host_src) const;

  std::vector<ParamSpec> specs_;
  ZeroLayout layout_;
  int rank_;
  uint64_t seed_;
  std::unique_ptr<Backend> cpu_;   // offloaded: the host's AdamW
  Buffer m_, v_;                   // [S] moments of this rank's elements
  std::optional<Buffer> master_;   // [S] fp32, for weights stored below fp32 (offloaded: always)
  std::optional<Buffer> staging_;  // offloaded: host room for one piece's gradient and new weights
  bool shard_grads_;
  std::optional<Buffer> g_;              // [S] fp32 summed gradients (stage 2)
  std::optional<Buffer> g_piece_;        // [largest piece] fp32 (stage 2 in backward)
  std::vector<double> piece_sq_;         // per parameter: the sum of squares of this rank's piece
  std::map<std::string, size_t> index_;  // parameter name → table index
  std::vector<std::vector<std::pair<int, ZeroLayout::Piece>>> owners_;  // per parameter: (owner, piece)
};

// Optimizer in backward with stage 2: each parameter's gradient summed piece by piece into its owners' piece
// buffers as soon as the backward completes its group (ZeroAdamW::reduce_piecewise); `weights` null: the
// norm's pass (sums of squares only), else each piece updated at once.
class ZeroPieceSink : public GradSink {
 public:
  ZeroPieceSink(ZeroAdamW& opt, const ParamSet* weights, const AdamWHyper& h, dist::Communicator& comm,
                Backend& be)
      : opt_(opt), weights_(weights), h_(h), comm_(comm), be_(be) {}
  uint64_t consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) override;

 private:
  ZeroAdamW& opt_;
  const ParamSet* weights_;
  const AdamWHyper& h_;
  dist::Communicator& comm_;
  Backend& be_;
};

// Stage 2's gradient sink (GradStorage::PerGroup): each group's gradients, as soon as the backward completes
// them, are summed over the ranks into their owners' gradient shards; no rank holds the whole gradient.
class ZeroGradSink : public GradSink {
 public:
  ZeroGradSink(const ZeroAdamW& opt, dist::Communicator& comm, Backend& be)
      : opt_(opt), comm_(comm), be_(be) {}
  uint64_t consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) override;

 private:
  const ZeroAdamW& opt_;
  dist::Communicator& comm_;
  Backend& be_;
};

// The progress and this rank's optimizer state and weights from a checkpoint written with --zero_stage 1.
TrainProgress load_zero_checkpoint(const std::string& dir, ZeroAdamW& opt, const ParamSet& weights,
                                   Backend& be, dist::Communicator& comm);
// Refuses, saying what to do, a checkpoint of ZeRO shards resumed without --zero_stage.
void refuse_sharded_checkpoint(const std::string& dir);

}  // namespace miniseq
