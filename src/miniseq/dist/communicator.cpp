#include "miniseq/dist/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "miniseq/core/check.h"
#include "miniseq/core/dtype.h"
#ifdef MINISEQ_WITH_MPI
#include "miniseq/dist/mpi_communicator.h"
#endif

namespace miniseq::dist {

namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string_view name() const override { return "single process"; }
  void all_reduce_sum(const Tensor&) override {}
  void reduce_scatter_sum(const Tensor& in, const Tensor& out) override {
    copy(in, out, "reduce_scatter_sum");
  }
  void reduce_sum_into(const Tensor& x, const Tensor& out, int root) override {
    check_root(root);
    MS_CHECK(x.numel() == out.numel() && x.dtype == out.dtype && x.device == Device::CPU &&
                 out.device == Device::CPU,
             "internal: reduce_sum_into of ", x.shape.str(), " into ", out.shape.str());
    sum_blocks_in_rank_order(x.data, 1, 0, x.numel(), x.dtype, out.data, /*accumulate=*/true);
  }
  void all_gather(const Tensor& in, const Tensor& out) override { copy(in, out, "all_gather"); }
  void all_to_all(const Tensor& in, const Tensor& out) override { copy(in, out, "all_to_all"); }
  void broadcast(const Tensor&, int root) override { check_root(root); }
  void barrier() override {}
  void all_reduce_sum_f64(double*, int64_t) override {}
  void broadcast_bytes(void*, int64_t, int root) override { check_root(root); }
  std::unique_ptr<Communicator> split(int, int) override { return make_single_process(); }

 private:
  static void copy(const Tensor& in, const Tensor& out, const char* what) {
    MS_CHECK(in.numel() == out.numel() && in.dtype == out.dtype, "internal: ", what, " of ", in.shape.str(),
             " into ", out.shape.str());
    MS_CHECK(in.device == Device::CPU && out.device == Device::CPU,
             "internal: the single-process communicator copies host tensors only");
    if (in.data != out.data && in.bytes() > 0) std::memcpy(out.data, in.data, in.bytes());
  }
  static void check_root(int root) { MS_CHECK(root == 0, "internal: broadcast from rank ", root, " of 1"); }
};

NcclFactory g_nccl_factory = nullptr;
std::unique_ptr<Communicator> g_single, g_mpi, g_nccl;

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v && *v;
}

}  // namespace

std::unique_ptr<Communicator> make_single_process() {
  return std::make_unique<SingleProcess>();
}

bool launched_by_mpi() {
  // Open MPI's mpirun, PMIx (srun --mpi=pmix, prterun), PMI-1/2 (srun --mpi=pmi2, MPICH's hydra).
  return env_set("OMPI_COMM_WORLD_SIZE") || env_set("PMIX_RANK") || env_set("PMI_RANK") ||
         env_set("PMI_SIZE");
}

void register_nccl_factory(NcclFactory f) {
  g_nccl_factory = f;
}

double default_timeout_seconds() {
  if (const char* v = std::getenv("MINISEQ_DIST_TIMEOUT")) {
    char* end = nullptr;
    const double s = std::strtod(v, &end);
    MS_CHECK(end != v && *end == '\0' && s >= 0, "MINISEQ_DIST_TIMEOUT='", v, "' is not a number of seconds");
    return s;
  }
  return 1800.0;
}

Communicator& world(Device device) {
  if (!launched_by_mpi()) {
    const char* tasks = std::getenv("SLURM_NTASKS");
    MS_CHECK(
        !tasks || std::atoi(tasks) <= 1, "srun started ", tasks,
        " tasks but no MPI process manager is visible to them: launch with `srun --mpi=pmix` (or mpirun) so "
        "that the ranks can find each other (docs/distributed.md)");
    if (!g_single) g_single = make_single_process();
    return *g_single;
  }
#ifdef MINISEQ_WITH_MPI
  if (!g_mpi) g_mpi = make_mpi_world();
  if (device == Device::CPU) return *g_mpi;
  MS_CHECK(g_nccl_factory,
           "this miniseq was built without NCCL; --device cuda across processes needs the CUDA build");
  if (!g_nccl) g_nccl = g_nccl_factory(*g_mpi, mpi_local_rank(*g_mpi));
  return *g_nccl;
#else
  (void)device;
  fail(
      "this miniseq was built without MPI but was started by an MPI launcher; install libopenmpi-dev "
      "(scripts/install-deps.sh) and rebuild, or run it without mpirun");
#endif
}

void finalize_world() {
  g_nccl.reset();
#ifdef MINISEQ_WITH_MPI
  if (g_mpi) {
    g_mpi.reset();
    mpi_finalize();
  }
#endif
}

void abort_world(int code) {
#ifdef MINISEQ_WITH_MPI
  if (g_mpi && g_mpi->size() > 1) mpi_abort(code);
#endif
  (void)code;
}

void sum_blocks_in_rank_order(const void* blocks, int P, int64_t stride, int64_t n, DType dtype, void* out,
                              bool accumulate) {
  // Tiles of fp32 accumulators, block after block: the same additions in the same order as acc = b_0;
  // acc += b_1; ..., vectorized across elements; then out = acc, or out = out + acc.
  constexpr int64_t kTile = 1024;
  float acc[kTile];
  const size_t es = dtype_size(dtype);
  const char* b = static_cast<const char*>(blocks);
  for (int64_t t0 = 0; t0 < n; t0 += kTile) {
    const int64_t m = std::min(kTile, n - t0);
    for (int j = 0; j < P; ++j) {
      const char* src = b + (static_cast<int64_t>(j) * stride + t0) * static_cast<int64_t>(es);
      if (dtype == DType::F32) {
        const float* x = reinterpret_cast<const float*>(src);
        if (j == 0)
          std::memcpy(acc, x, static_cast<size_t>(m) * sizeof(float));
        else
          for (int64_t i = 0; i < m; ++i) acc[i] += x[i];
      } else {
        const uint16_t* x = reinterpret_cast<const uint16_t*>(src);
        for (int64_t i = 0; i < m; ++i) {
          const float v = dtype == DType::BF16 ? bf16_to_f32(x[i]) : f16_to_f32(x[i]);
          acc[i] = j == 0 ? v : acc[i] + v;
        }
      }
    }
    char* dst = static_cast<char*>(out) + t0 * static_cast<int64_t>(es);
    if (accumulate) {
      if (dtype == DType::F32) {
        const float* o = reinterpret_cast<const float*>(dst);
        for (int64_t i = 0; i < m; ++i) acc[i] = o[i] + acc[i];
      } else {
        const uint16_t* o = reinterpret_cast<const uint16_t*>(dst);
        for (int64_t i = 0; i < m; ++i)
          acc[i] = (dtype == DType::BF16 ? bf16_to_f32(o[i]) : f16_to_f32(o[i])) + acc[i];
      }
    }
    if (dtype == DType::F32)
      std::memcpy(dst, acc, static_cast<size_t>(m) * sizeof(float));
    else
      convert(acc, DType::F32, dst, dtype, static_cast<size_t>(m));
  }
}

}  // namespace miniseq::dist
