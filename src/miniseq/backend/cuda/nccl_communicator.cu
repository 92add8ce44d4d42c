// NCCL collectives with the determinism of the MPI communicator: sums in rank order, computed once per
// element by the rank that owns it (all-to-all of chunks by grouped ncclSend/ncclRecv, a rank-order sum
// kernel, then all-gather), never by NCCL's ring or tree reductions, whose order depends on the topology.
//
// Every collective runs on the backend's stream (the legacy default stream) and then waits for it, polling: a
// peer that died shows as NCCL's asynchronous error or as a wait beyond the timeout, and ends this rank
// (status 3) with a message, so that the launcher ends the job.
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/nccl_communicator.h"

namespace miniseq::cuda {

namespace {

#define MS_NCCL_CHECK(call)                                                                               \
  do {                                                                                                    \
    ncclResult_t r_ = (call);                                                                             \
    if (r_ != ncclSuccess)                                                                                \
      ::miniseq::fail("NCCL error ", ncclGetErrorString(r_), " at ", __FILE__, ":", __LINE__, ": " #call, \
                      " (a rank died or the interconnect failed; every rank ends)");                      \
  } while (0)

// The staging buffer of one piece of a sum (size() chunks): device memory beside the plan, like cuBLASLt's
// workspace.
constexpr int64_t kStagingBytes = int64_t{32} << 20;

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::F16:
      return ncclFloat16;
  }
  return ncclFloat32;
}

template <typename T>
__device__ float widen(T x) {
  return static_cast<float>(x);
}
template <>
__device__ float widen(float x) {
  return x;
}

template <typename T>
__device__ T narrow(float x) {
  return static_cast<T>(x);
}

// out[i] = ((b_0[i] + b_1[i]) + b_2[i]) + ... in fp32, rounded once.
template <typename T>
__global__ void sum_blocks_kernel(const T* blocks, int P, int64_t stride, int64_t n, T* out,
                                  bool accumulate) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = widen(blocks[i]);
    for (int j = 1; j < P; ++j) acc += widen(blocks[j * stride + i]);
    out[i] = narrow<T>(accumulate ? widen(out[i]) + acc : acc);
  }
}

void sum_blocks(const void* blocks, int P, int64_t stride, int64_t n, DType t, void* out,
                bool accumulate = false) {
  if (n == 0) return;
  const int threads = 256;
  const int grid = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 4096));
  switch (t) {
    case DType::F32:
      sum_blocks_kernel<<<grid, threads>>>(static_cast<const float*>(blocks), P, stride, n,
                                           static_cast<float*>(out), accumulate);
      break;
    case DType::BF16:
      sum_blocks_kernel<<<grid, threads>>>(static_cast<const bf16*>(blocks), P, stride, n,
                                           static_cast<bf16*>(out), accumulate);
      break;
    case DType::F16:
      sum_blocks_kernel<<<grid, threads>>>(static_cast<const __half*>(blocks), P, stride, n,
                                           static_cast<__half*>(out), accumulate);
      break;
  }
  MS_CUDA_CHECK(cudaGetLastError());
}

char* at(const Tensor& t, int64_t element) {
  return static_cast<char*>(t.data) + element * static_cast<int64_t>(dtype_size(t.dtype));
}

class NcclCommunicator final : public dist::Communicator {
 public:
  // owned_mpi: the MPI communicator of a split(), which this one keeps (mpi is *owned_mpi then).
  NcclCommunicator(dist::Communicator& mpi, int local_rank,
                   std::unique_ptr<dist::Communicator> owned_mpi = nullptr)
      : owned_mpi_(std::move(owned_mpi)),
        mpi_(mpi),
        local_rank_(local_rank),
        timeout_s_(dist::default_timeout_seconds()) {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    MS_CHECK(err == cudaSuccess && count > 0, "rank ", mpi.rank(), ": no usable CUDA device (",
             err != cudaSuccess ? cudaGetErrorString(err) : "none found", ")");
    MS_CHECK(
        local_rank < count, "rank ", mpi.rank(), " is process ", local_rank + 1,
        " on its node but the node has ", count,
        " GPU(s): start one process per GPU (mpirun -np N with N GPUs per node, or srun --ntasks-per-node)");
    MS_CUDA_CHECK(cudaSetDevice(local_rank));
    ncclUniqueId id{};
    if (mpi.rank() == 0) MS_NCCL_CHECK(ncclGetUniqueId(&id));
    mpi.broadcast_bytes(&id, sizeof id, 0);
    MS_NCCL_CHECK(ncclCommInitRank(&comm_, mpi.size(), id, mpi.rank()));
    MS_CUDA_CHECK(cudaMalloc(&staging_, static_cast<size_t>(kStagingBytes)));
  }
  ~NcclCommunicator() override {
    cudaFree(staging_);
    if (comm_) ncclCommDestroy(comm_);
  }

  int rank() const override { return mpi_.rank(); }
  int size() const override { return mpi_.size(); }
  std::string_view name() const override { return "NCCL"; }
  void set_timeout_seconds(double s) override {
    timeout_s_ = s;
    mpi_.set_timeout_seconds(s);
  }
  // The group's MPI communicator (host values, the NCCL id's broadcast) and a NCCL communicator over it.
  std::unique_ptr<dist::Communicator> split(int color, int key) override {
    std::unique_ptr<dist::Communicator> sub = mpi_.split(color, key);
    dist::Communicator& ref = *sub;
    auto c = std::make_unique<NcclCommunicator>(ref, local_rank_, std::move(sub));
    c->set_timeout_seconds(timeout_s_);
    return c;
  }

  void all_reduce_sum(const Tensor& x) override {
    device(x, "all_reduce_sum");
    const int P = size(), r = rank();
    const int64_t N = x.numel();
    const auto es = static_cast<int64_t>(dtype_size(x.dtype));
    const int64_t c_max = std::max<int64_t>(1, kStagingBytes / es / P);
    for (int64_t o = 0; o < N; o += c_max * P) {
      const int64_t m = std::min(c_max * P, N - o);
      const int64_t c = (m + P - 1) / P;
      auto len = [&](int j) { return static_cast<size_t>(std::clamp<int64_t>(m - j * c, 0, c)); };
      const size_t mine = len(r);
      // Everyone's copy of my chunk into the staging buffer, block j from rank j.
      MS_NCCL_CHECK(ncclGroupStart());
      for (int j = 0; j < P; ++j) {
        MS_NCCL_CHECK(ncclSend(at(x, o + j * c), len(j), nccl_type(x.dtype), j, comm_, stream()));
        MS_NCCL_CHECK(ncclRecv(static_cast<char*>(staging_) + j * c * es, mine, nccl_type(x.dtype), j, comm_,
                               stream()));
      }
      MS_NCCL_CHECK(ncclGroupEnd());
      sum_blocks(staging_, P, c, static_cast<int64_t>(mine), x.dtype, at(x, o + r * c));
      // The sums back to everyone.
      MS_NCCL_CHECK(ncclGroupStart());
      for (int j = 0; j < P; ++j) {
        if (j == r) continue;
        MS_NCCL_CHECK(ncclSend(at(x, o + r * c), mine, nccl_type(x.dtype), j, comm_, stream()));
        MS_NCCL_CHECK(ncclRecv(at(x, o + j * c), len(j), nccl_type(x.dtype), j, comm_, stream()));
      }
      MS_NCCL_CHECK(ncclGroupEnd());
    }
    wait("all_reduce_sum");
  }

  void reduce_sum_into(const Tensor& x, const Tensor& out, int root) override {
    device(x, "reduce_sum_into");
    const int P = size(), r = rank();
    const int64_t n = x.numel();
    const auto es = static_cast<int64_t>(dtype_size(x.dtype));
    const int64_t c_max = std::max<int64_t>(1, kStagingBytes / es / P);
    for (int64_t o = 0; o < n; o += c_max) {
      const int64_t c = std::min(c_max, n - o);
      // Every rank's piece to the root's staging buffer (block j from rank j), summed there in rank order.
      MS_NCCL_CHECK(ncclGroupStart());
      MS_NCCL_CHECK(ncclSend(at(x, o), static_cast<size_t>(c), nccl_type(x.dtype), root, comm_, stream()));
      if (r == root)
        for (int j = 0; j < P; ++j)
          MS_NCCL_CHECK(ncclRecv(static_cast<char*>(staging_) + j * c * es, static_cast<size_t>(c),
                                 nccl_type(x.dtype), j, comm_, stream()));
      MS_NCCL_CHECK(ncclGroupEnd());
      if (r == root) sum_blocks(staging_, P, c, c, x.dtype, at(out, o), /*accumulate=*/true);
    }
    wait("reduce_sum_into");
  }

  void reduce_scatter_sum(const Tensor& in, const Tensor& out) override {
    device(in, "reduce_scatter_sum"), device(out, "reduce_scatter_sum");
    MS_CHECK(in.dtype == out.dtype && in.numel() == out.numel() * size(), "internal: reduce_scatter_sum of ",
             in.shape.str(), " into ", out.shape.str());
    const int P = size();
    const int64_t n = out.numel();
    const auto es = static_cast<int64_t>(dtype_size(in.dtype));
    const int64_t c_max = std::max<int64_t>(1, kStagingBytes / es / P);
    for (int64_t o = 0; o < n; o += c_max) {
      const int64_t c = std::min(c_max, n - o);
      MS_NCCL_CHECK(ncclGroupStart());
      for (int j = 0; j < P; ++j) {
        MS_NCCL_CHECK(
            ncclSend(at(in, j * n + o), static_cast<size_t>(c), nccl_type(in.dtype), j, comm_, stream()));
        MS_NCCL_CHECK(ncclRecv(static_cast<char*>(staging_) + j * c * es, static_cast<size_t>(c),
                               nccl_type(in.dtype), j, comm_, stream()));
      }
      MS_NCCL_CHECK(ncclGroupEnd());
      sum_blocks(staging_, P, c, c, in.dtype, at(out, o));
    }
    wait("reduce_scatter_sum");
  }

  void all_gather(const Tensor& in, const Tensor& out) override {
    device(in, "all_gather"), device(out, "all_gather");
    MS_CHECK(in.dtype == out.dtype && out.numel() == in.numel() * size(), "internal: all_gather of ",
             in.shape.str(), " into ", out.shape.str());
    MS_NCCL_CHECK(ncclAllGather(in.data, out.data, static_cast<size_t>(in.numel()), nccl_type(in.dtype),
                                comm_, stream()));
    wait("all_gather");
  }

  void all_to_all(const Tensor& in, const Tensor& out) override {
    device(in, "all_to_all"), device(out, "all_to_all");
    MS_CHECK(
        in.numel() == out.numel() && in.dtype == out.dtype && in.numel() % size() == 0 && in.data != out.data,
        "internal: all_to_all of ", in.shape.str(), " into ", out.shape.str());
    const int64_t n = in.numel() / size();
    MS_NCCL_CHECK(ncclGroupStart());
    for (int j = 0; j < size(); ++j) {
      MS_NCCL_CHECK(ncclSend(at(in, j * n), static_cast<size_t>(n), nccl_type(in.dtype), j, comm_, stream()));
      MS_NCCL_CHECK(
          ncclRecv(at(out, j * n), static_cast<size_t>(n), nccl_type(in.dtype), j, comm_, stream()));
    }
    MS_NCCL_CHECK(ncclGroupEnd());
    wait("all_to_all");
  }

  void broadcast(const Tensor& x, int root) override {
    if (x.device == Device::CPU) return mpi_.broadcast(x, root);
    device(x, "broadcast");
    MS_NCCL_CHECK(ncclBroadcast(x.data, x.data, static_cast<size_t>(x.numel()), nccl_type(x.dtype), root,
                                comm_, stream()));
    wait("broadcast");
  }

  void barrier() override {
    MS_CUDA_CHECK(cudaDeviceSynchronize());
    mpi_.barrier();
  }
  void all_reduce_sum_f64(double* v, int64_t n) override { mpi_.all_reduce_sum_f64(v, n); }
  void broadcast_bytes(void* bytes, int64_t n, int root) override { mpi_.broadcast_bytes(bytes, n, root); }

 private:
  static cudaStream_t stream() { return nullptr; }  // the backend's stream: the legacy default stream
  static void device(const Tensor& t, const char* what) {
    MS_CHECK(t.device == Device::CUDA, "internal: the NCCL communicator's ", what, " takes device tensors");
  }
  // Waits for the stream; a peer that failed shows as NCCL's asynchronous error, one that hangs as the
  // timeout.
  void wait(const char* what) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int spin = 0;; ++spin) {
      const cudaError_t q = cudaStreamQuery(stream());
      if (q == cudaSuccess) return;
      MS_CHECK(q == cudaErrorNotReady, "CUDA error ", cudaGetErrorString(q), " in ", what);
      ncclResult_t async = ncclSuccess;
      MS_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (async != ncclSuccess || (timeout_s_ > 0 && waited > timeout_s_)) {
        std::fprintf(
            stderr,
            "miniseq: error: rank %d of %d: %s %s after %.0f s (--dist_timeout %.0f): a rank died or hangs; "
            "ending this rank so that the launcher ends the job\n",
            rank(), size(), what, async != ncclSuccess ? ncclGetErrorString(async) : "waited for the others",
            waited, timeout_s_);
        std::fflush(stderr);
        ncclCommAbort(comm_);
        _exit(3);
      }
      if (spin > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  std::unique_ptr<dist::Communicator> owned_mpi_;  // declared first: destroyed after the NCCL communicator
  dist::Communicator& mpi_;
  int local_rank_;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
  void* staging_ = nullptr;
};

}  // namespace

std::unique_ptr<dist::Communicator> make_nccl_communicator(dist::Communicator& mpi, int local_rank) {
  return std::make_unique<NcclCommunicator>(mpi, local_rank);
}

}  // namespace miniseq::cuda
