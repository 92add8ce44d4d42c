// The communicator: the collectives that data and sequence parallelism need, over one interface with three
// implementations (docs/distributed.md):
//   single process  world size 1, no MPI at run time (the collectives are copies or nothing);
//   MPI             the CPU backend's tensors, one process per rank (mpirun, srun --mpi=pmix);
//   NCCL            the CUDA backend's tensors, one process per GPU, bootstrapped through MPI (the NCCL
//   unique id
//                   is broadcast by MPI); host buffers go through MPI.
//
// Shapes: n is a count of elements; blocks are laid out rank after rank ([size * n] = block 0, block 1, ...).
// Tensors are views on contiguous memory of any dtype (F32, BF16, F16); only the element count and dtype
// matter.
//
// Determinism: every sum is computed in rank order, ((x_0 + x_1) + x_2) + ..., in fp32 (BF16/F16 inputs are
// widened, summed, and rounded once), by exactly one rank per element, which then sends the result to the
// others. So the result is bit-identical on every rank and from run to run, whatever the timing or MPI's own
// choice of algorithm: MPI only moves bytes (MPI_Alltoallv, MPI_Allgatherv, MPI_Bcast), it never adds. The
// NCCL implementation keeps NCCL's fixed ring order instead (docs/distributed.md).
//
// Failure: a rank that dies ends the job (mpirun aborts every rank when one exits non-zero or is killed); a
// rank that waits in a collective longer than the timeout (--dist_timeout) prints which collective and exits,
// which ends the job the same way. Errors of the MPI library are returned (MPI_ERRORS_RETURN) and thrown as
// miniseq::Error.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "miniseq/core/tensor.h"

namespace miniseq::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string_view name() const = 0;  // "single process", "MPI", "NCCL"

  // x: [n] on every rank → the sum over ranks, in place on every rank.
  virtual void all_reduce_sum(const Tensor& x) = 0;
  // x: [n] on every rank → on rank root only, out: [n] += the sum over ranks of x (out = 0 + sum when it
  // holds zeros); out is not touched elsewhere (it may be empty there). out and x differ.
  virtual void reduce_sum_into(const Tensor& x, const Tensor& out, int root) = 0;
  // in: [size * n] on every rank → out: [n] = the sum over ranks of block rank() of in.
  virtual void reduce_scatter_sum(const Tensor& in, const Tensor& out) = 0;
  // in: [n] → out: [size * n], block r = rank r's in. in may be block rank() of out itself (in place).
  virtual void all_gather(const Tensor& in, const Tensor& out) = 0;
  // in: [size * n], block j is sent to rank j → out: [size * n], block j came from rank j (distinct buffers).
  virtual void all_to_all(const Tensor& in, const Tensor& out) = 0;
  // x: [n], root's values on every rank.
  virtual void broadcast(const Tensor& x, int root) = 0;
  virtual void barrier() = 0;

  // Host values, for the training loop's bookkeeping (loss sums, target counts, stop requests).
  // v: n doubles on every rank → the sum over ranks in rank order, in place.
  virtual void all_reduce_sum_f64(double* v, int64_t n) = 0;
  // bytes: n bytes of host memory, root's on every rank.
  virtual void broadcast_bytes(void* bytes, int64_t n, int root) = 0;

  // A collective that waits longer than this for the other ranks ends the process with a message (0: never).
  virtual void set_timeout_seconds(double /*seconds*/) {}
  // A communicator over the ranks that pass the same `color`, ranked by `key` (MPI_Comm_split): the sequence-
  // parallel groups of a world (docs/distributed.md). Every rank of this communicator must call it. The
  // result may outlive nothing of this one's: destroy it before this one.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  bool is_root() const { return rank() == 0; }
};

// The communicator of a single process: every collective is a copy (or nothing).
std::unique_ptr<Communicator> make_single_process();

// Whether this process was started by an MPI launcher (mpirun, srun --mpi=pmix): the launcher's environment.
bool launched_by_mpi();

// The world's communicator for tensors on `device`: the single process one when not launched by MPI (MPI is
// never initialized then), else MPI (CPU) or NCCL (CUDA, when built with it). Initializes MPI on first use;
// on the CUDA device also selects this rank's GPU (the local rank among the node's processes) before any
// backend opens.
Communicator& world(Device device);
// Ends MPI cleanly at the end of main (nothing when MPI was never initialized).
void finalize_world();
// After an error on one rank: ends every rank of the job (MPI_Abort) with `code`; nothing without MPI.
void abort_world(int code);

// --- implementation details shared by the MPI and NCCL communicators ---
// out[i] = sum over j in 0..P-1 (in this order) of blocks[j * stride + i] for i < n, summed in fp32 and
// rounded once to dtype. out may be one of the blocks.
// With `accumulate`: out[i] = out[i] + that sum (out then must not be one of the blocks).
void sum_blocks_in_rank_order(const void* blocks, int P, int64_t stride, int64_t n, DType dtype, void* out,
                              bool accumulate = false);
// The per-collective watchdog: seconds from MINISEQ_DIST_TIMEOUT, else 1800.
double default_timeout_seconds();

// Registered by the CUDA library (register_cuda_backend): makes the NCCL communicator over the MPI one.
using NcclFactory = std::unique_ptr<Communicator> (*)(Communicator& mpi, int local_rank);
void register_nccl_factory(NcclFactory f);

}  // namespace miniseq::dist
