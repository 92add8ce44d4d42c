#include "miniseq/dist/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "miniseq/core/check.h"
#include "miniseq/dist/watchdog.h"

namespace miniseq::dist {

namespace {

// Elements per MPI call: counts and displacements are ints. The staging buffer of a sum (one piece of the
// tensor, `size` blocks of it) is bounded by kStagingBytes.
constexpr int64_t kMaxCount = int64_t{1} << 30;
constexpr int64_t kStagingBytes = int64_t{32} << 20;

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("MPI error in ", call, ": ", std::string(msg, static_cast<size_t>(len)),
       " (a rank died or the network failed; every rank ends)");
}

MPI_Datatype mpi_type(DType t) {
  return t == DType::F32 ? MPI_FLOAT : MPI_UINT16_T;
}

// A datatype of `count` elements whose extent is `stride` elements: block j of a [P * stride] layout at
// offset o.
struct StridedType {
  MPI_Datatype type = MPI_DATATYPE_NULL;
  StridedType(DType t, int64_t count, int64_t stride) {
    MPI_Datatype run;
    check_mpi(MPI_Type_contiguous(static_cast<int>(count), mpi_type(t), &run), "MPI_Type_contiguous");
    check_mpi(MPI_Type_create_resized(
                  run, 0, static_cast<MPI_Aint>(stride * static_cast<int64_t>(dtype_size(t))), &type),
              "MPI_Type_create_resized");
    MPI_Type_free(&run);
    check_mpi(MPI_Type_commit(&type), "MPI_Type_commit");
  }
  ~StridedType() { MPI_Type_free(&type); }
  StridedType(const StridedType&) = delete;
  StridedType& operator=(const StridedType&) = delete;
};

char* at(const Tensor& t, int64_t element) {
  return static_cast<char*>(t.data) + element * static_cast<int64_t>(dtype_size(t.dtype));
}

class MpiCommunicator final : public Communicator {
 public:
  // owned: a communicator of split(), freed with this object (MPI_COMM_WORLD is not).
  explicit MpiCommunicator(MPI_Comm comm, bool owned = false) : comm_(comm), owned_(owned) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    watchdog_ = std::make_unique<Watchdog>(rank_, size_, default_timeout_seconds());
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm sub;
    {
      Watchdog::Scope w(*watchdog_, "split");
      check_mpi(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
    }
    auto c = std::make_unique<MpiCommunicator>(sub, /*owned=*/true);
    c->set_timeout_seconds(watchdog_->timeout());
    return c;
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view name() const override { return "MPI"; }
  void set_timeout_seconds(double s) override { watchdog_->set_timeout(s); }
  MPI_Comm comm() const { return comm_; }

  void all_reduce_sum(const Tensor& x) override {
    host(x, "all_reduce_sum");
    Watchdog::Scope w(*watchdog_, "all_reduce_sum");
    // Pieces of at most P * c elements: each split into P chunks (chunk j of length len(j)); every rank
    // receives everyone's copy of its own chunk (all-to-all), sums them in rank order, and the sums are
    // gathered back.
    const int P = size_;
    const int64_t N = x.numel();
    const size_t es = dtype_size(x.dtype);
    const int64_t c_max = std::max<int64_t>(1, kStagingBytes / static_cast<int64_t>(es) / P);
    staging_.resize(static_cast<size_t>(c_max * P) * es);
    std::vector<int> scount(P), sdispl(P), rcount(P), rdispl(P);
    for (int64_t o = 0; o < N; o += c_max * P) {
      const int64_t m = std::min(c_max * P, N - o);
      const int64_t c = (m + P - 1) / P;
      auto chunk_len = [&](int j) { return static_cast<int>(std::clamp<int64_t>(m - j * c, 0, c)); };
      const int mine = chunk_len(rank_);
      for (int j = 0; j < P; ++j) {
        scount[j] = chunk_len(j), sdispl[j] = static_cast<int>(j * c);
        rcount[j] = mine, rdispl[j] = static_cast<int>(j * c);
      }
      check_mpi(MPI_Alltoallv(at(x, o), scount.data(), sdispl.data(), mpi_type(x.dtype), staging_.data(),
                              rcount.data(), rdispl.data(), mpi_type(x.dtype), comm_),
                "MPI_Alltoallv");
      sum_blocks_in_rank_order(staging_.data(), P, c, mine, x.dtype, at(x, o + rank_ * c));
      check_mpi(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, at(x, o), scount.data(), sdispl.data(),
                               mpi_type(x.dtype), comm_),
                "MPI_Allgatherv");
    }
  }

  void reduce_sum_into(const Tensor& x, const Tensor& out, int root) override {
    host(x, "reduce_sum_into");
    MS_CHECK(root >= 0 && root < size_, "internal: reduce to rank ", root, " of ", size_);
    MS_CHECK(rank_ != root ||
                 (out.numel() == x.numel() && out.dtype == x.dtype && (out.data != x.data || x.numel() == 0)),
             "internal: reduce_sum_into of ", x.shape.str(), " into ", out.shape.str());
    Watchdog::Scope w(*watchdog_, "reduce_sum_into");
    // Pieces of c elements: every rank's copy gathered on the root (MPI moves bytes), summed there in rank
    // order.
    const int P = size_;
    const int64_t n = x.numel();
    const size_t es = dtype_size(x.dtype);
    const int64_t c_max = std::max<int64_t>(1, kStagingBytes / static_cast<int64_t>(es) / P);
    if (rank_ == root) staging_.resize(static_cast<size_t>(c_max * P) * es);
    for (int64_t o = 0; o < n; o += c_max) {
      const int64_t c = std::min(c_max, n - o);
      check_mpi(MPI_Gather(at(x, o), static_cast<int>(c), mpi_type(x.dtype),
                           rank_ == root ? staging_.data() : nullptr, static_cast<int>(c), mpi_type(x.dtype),
                           root, comm_),
                "MPI_Gather");
      if (rank_ == root)
        sum_blocks_in_rank_order(staging_.data(), P, c, c, x.dtype, at(out, o), /*accumulate=*/true);
    }
  }

  void reduce_scatter_sum(const Tensor& in, const Tensor& out) override {
    host(in, "reduce_scatter_sum"), host(out, "reduce_scatter_sum");
    const int64_t n = blocks_of(in, out, "reduce_scatter_sum");
    Watchdog::Scope w(*watchdog_, "reduce_scatter_sum");
    const int P = size_;
    const size_t es = dtype_size(in.dtype);
    const int64_t c_max = std::max<int64_t>(1, kStagingBytes / static_cast<int64_t>(es) / P);
    staging_.resize(static_cast<size_t>(c_max * P) * es);
    for (int64_t o = 0; o < n; o += c_max) {
      const int64_t c = std::min(c_max, n - o);
      const StridedType send(in.dtype, c, n);  // elements [o, o + c) of every block of in
      check_mpi(MPI_Alltoall(at(in, o), 1, send.type, staging_.data(), static_cast<int>(c),
                             mpi_type(in.dtype), comm_),
                "MPI_Alltoall");
      sum_blocks_in_rank_order(staging_.data(), P, c, c, in.dtype, at(out, o));
    }
  }

  void all_gather(const Tensor& in, const Tensor& out) override {
    host(in, "all_gather"), host(out, "all_gather");
    const int64_t n = blocks_of(out, in, "all_gather");
    Watchdog::Scope w(*watchdog_, "all_gather");
    const bool in_place = in.data == at(out, rank_ * n);
    for (int64_t o = 0; o < n; o += kMaxCount) {
      const int64_t c = std::min(kMaxCount, n - o);
      const StridedType recv(out.dtype, c, n);
      check_mpi(MPI_Allgather(in_place ? MPI_IN_PLACE : at(in, o), static_cast<int>(c), mpi_type(in.dtype),
                              at(out, o), 1, recv.type, comm_),
                "MPI_Allgather");
    }
  }

  void all_to_all(const Tensor& in, const Tensor& out) override {
    host(in, "all_to_all"), host(out, "all_to_all");
    MS_CHECK(in.numel() == out.numel() && in.dtype == out.dtype && in.numel() % size_ == 0,
             "internal: all_to_all of ", in.shape.str(), " into ", out.shape.str(), " over ", size_,
             " ranks");
    MS_CHECK(in.data != out.data || in.numel() == 0, "internal: all_to_all needs distinct buffers");
    const int64_t n = in.numel() / size_;
    Watchdog::Scope w(*watchdog_, "all_to_all");
    for (int64_t o = 0; o < n; o += kMaxCount) {
      const int64_t c = std::min(kMaxCount, n - o);
      const StridedType t(in.dtype, c, n);
      check_mpi(MPI_Alltoall(at(in, o), 1, t.type, at(out, o), 1, t.type, comm_), "MPI_Alltoall");
    }
  }

  void broadcast(const Tensor& x, int root) override {
    host(x, "broadcast");
    broadcast_bytes(x.data, static_cast<int64_t>(x.bytes()), root);
  }

  void barrier() override {
    Watchdog::Scope w(*watchdog_, "barrier");
    check_mpi(MPI_Barrier(comm_), "MPI_Barrier");
  }

  void all_reduce_sum_f64(double* v, int64_t n) override {
    MS_CHECK(n <= kMaxCount / size_, "internal: all_reduce_sum_f64 of ", n, " values");
    Watchdog::Scope w(*watchdog_, "all_reduce_sum_f64");
    // Every rank gathers every rank's values and sums them in rank order itself: the same bits everywhere.
    std::vector<double> all(static_cast<size_t>(n * size_));
    check_mpi(
        MPI_Allgather(v, static_cast<int>(n), MPI_DOUBLE, all.data(), static_cast<int>(n), MPI_DOUBLE, comm_),
        "MPI_Allgather");
    for (int64_t i = 0; i < n; ++i) {
      double acc = all[static_cast<size_t>(i)];
      for (int j = 1; j < size_; ++j) acc += all[static_cast<size_t>(j * n + i)];
      v[i] = acc;
    }
  }

  void broadcast_bytes(void* bytes, int64_t n, int root) override {
    MS_CHECK(root >= 0 && root < size_, "internal: broadcast from rank ", root, " of ", size_);
    Watchdog::Scope w(*watchdog_, "broadcast");
    char* p = static_cast<char*>(bytes);
    for (int64_t o = 0; o < n; o += kMaxCount)
      check_mpi(MPI_Bcast(p + o, static_cast<int>(std::min(kMaxCount, n - o)), MPI_BYTE, root, comm_),
                "MPI_Bcast");
  }

 private:
  static void host(const Tensor& t, const char* what) {
    MS_CHECK(t.device == Device::CPU, "internal: the MPI communicator's ", what, " takes host tensors (",
             device_name(t.device), " given)");
  }
  // [size * n] big against [n] small: n.
  int64_t blocks_of(const Tensor& big, const Tensor& small, const char* what) const {
    MS_CHECK(big.dtype == small.dtype && big.numel() == small.numel() * size_, "internal: ", what, " of ",
             big.shape.str(), " and ", small.shape.str(), " over ", size_, " ranks");
    return small.numel();
  }

  MPI_Comm comm_;
  bool owned_ = false;
  int rank_ = 0, size_ = 1;
  std::vector<char> staging_;  // one piece of a sum: size() blocks (at most kStagingBytes)
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_world() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  }
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
}

int mpi_local_rank(Communicator& mpi) {
  auto* m = dynamic_cast<MpiCommunicator*>(&mpi);
  MS_CHECK(m, "internal: mpi_local_rank of a communicator that is not MPI's");
  MPI_Comm node;
  check_mpi(MPI_Comm_split_type(m->comm(), MPI_COMM_TYPE_SHARED, m->rank(), MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  int local = 0;
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  return local;
}

void mpi_finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void mpi_abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace miniseq::dist
