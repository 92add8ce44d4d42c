// Ulysses sequence parallelism (DeepSpeed-Ulysses, Jacobs et al. 2023; docs/distributed.md): the P ranks of a
// group each hold S/P consecutive tokens of every sequence of a micro-batch (rank r: positions [r·S/P,
// (r+1)·S/P)). Everything token-local runs on those rows; attention exchanges q, k, v by all-to-all from
// sequence shards to head shards ([B·S/P, H·D] on every rank → [B·S, H/P·D]: the whole sequence for H/P
// heads), attends over the whole sequence with the global positions, and exchanges its output back. The
// backward mirrors it: the all-to-all is its own transpose.
//
// Heads: rank j holds the query heads [j·H/P, (j+1)·H/P) (H divisible by P) and the kv heads they read. With
// Hkv ≥ P those are [j·Hkv/P, (j+1)·Hkv/P) (Hkv divisible by P); with fewer kv heads than ranks (P divisible
// by Hkv) each kv head is sent to the P/Hkv ranks whose query heads read it (replicated, as DeepSpeed's
// Ulysses does), and the gradients of the copies are summed back in rank order.
#pragma once

#include <cstdint>

#include "miniseq/core/memory_plan.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

namespace dist {
class Communicator;
}

struct SequenceParallel {
  // The group's communicator (its ranks are the group's, in token order); null when planning (the dry
  // backend: the buffers are allocated, nothing moves).
  dist::Communicator* comm = nullptr;
  int rank = 0;  // this rank's place in the group: its tokens are [rank·S/P, (rank+1)·S/P)
  int size = 1;  // P
};

// Whether `heads` heads (query or kv) split over P ranks: divisible by P, or (kv heads) a divisor of P.
// Returns an empty string when they do, else what is wrong.
std::string sequence_parallel_heads_problem(int64_t heads, int64_t kv_heads, int64_t P);

// The head exchange of one tensor with `heads` heads of D values per token.
class HeadExchange {
 public:
  HeadExchange(Backend& be, MemoryPlan& plan, const SequenceParallel& sp, int64_t B, int64_t S_local,
               int64_t heads, int64_t D);
  int64_t local_heads() const { return local_heads_; }  // heads per rank after the exchange
  int64_t first_head(int j) const;                      // the first head rank j holds
  // x [B·S/P, heads·D] (this rank's tokens, all heads) → y [B·S, local_heads·D] (all tokens, this rank's
  // heads).
  void to_heads(const Tensor& x, const Tensor& y) { to_heads(pack(x), y); }
  // The same in two steps, so that the caller can free x before y exists: pack copies x into the all-to-all's
  // send buffer [P·B·S/P, local_heads·D] (block j: rank j's heads); to_heads(send, y) exchanges it into y.
  Buffer pack(const Tensor& x);
  void to_heads(Buffer send, const Tensor& y);
  // y [B·S, local_heads·D] → x [B·S/P, heads·D]; replicated heads (fewer heads than ranks) receive the sum of
  // their copies, in rank order.
  void to_sequence(const Tensor& y, const Tensor& x);

 private:
  Backend& be_;
  MemoryPlan& plan_;
  SequenceParallel sp_;
  int64_t B_, Sl_, heads_, D_, local_heads_;
};

}  // namespace miniseq
