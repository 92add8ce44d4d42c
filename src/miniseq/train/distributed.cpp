#include "miniseq/train/distributed.h"

#include <algorithm>

#include "miniseq/core/check.h"

namespace miniseq {

void check_data_parallel(const TrainArgs& a, int world) {
  const int64_t P = a.sequence_parallel;
  MS_CHECK(world % P == 0, "--sequence_parallel ", P, " but ", world,
           world == 1 ? " process was" : " processes were",
           " started: launch a multiple of P processes (mpirun -np D*P miniseq train ...)");
  MS_CHECK(
      a.data_parallel == 0 || a.data_parallel * P == world, "--data_parallel ", a.data_parallel, " but ",
      world, world == 1 ? " process was" : " processes were", " started",
      P > 1 ? " for --sequence_parallel " + std::to_string(P) : std::string(),
      ": launch --data_parallel x --sequence_parallel processes (mpirun -np D*P miniseq train ...), or leave "
      "--data_parallel out (default: the number of processes / P)");
  MS_CHECK(P == 1 || !a.optimizer_in_backward,
           "--optimizer_in_backward True is not available with --sequence_parallel yet (untested): drop one");
}

int64_t DataParallel::micro_per_epoch(int64_t blocks, int64_t B, int D) {
  const int64_t global = B * D;
  return (blocks + global - 1) / global;
}

std::vector<int64_t> DataParallel::micro_blocks(const std::vector<int64_t>& order, int64_t micro, int64_t B,
                                                int D, int rank) {
  std::vector<int64_t> out;
  const auto n = static_cast<int64_t>(order.size());
  for (int64_t k = 0; k < B; ++k) {
    const int64_t p = micro * B * D + k * D + rank;
    if (p < n) out.push_back(order[static_cast<size_t>(p)]);
  }
  return out;
}

bool DataParallel::any(bool flag) {
  if (comm_.size() == 1) return flag;
  double v = flag ? 1.0 : 0.0;
  comm_.all_reduce_sum_f64(&v, 1);
  return v > 0.0;
}

void DataParallel::reduce_grads(Backend& be, const ParamSet& grads) {
  if (comm_.size() == 1) return;
  const DType precision = be.grad_precision();
  grads.for_each([&](const ParamSpec&, const Tensor& g) {
    comm_.all_reduce_sum(g);
    if (precision != g.dtype) be.round_to_precision(g, precision);
  });
}

void DataParallel::reduce_group(Backend& be, const std::vector<Tensor>& grads) {
  if (comm_.size() == 1) return;
  const DType precision = be.grad_precision();
  for (const Tensor& g : grads) {
    comm_.all_reduce_sum(g);
    if (precision != g.dtype) be.round_to_precision(g, precision);
  }
}

uint64_t GroupSumSink::consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) {
  dp_.reduce_group(be_, grads);
  return inner_.consume(specs, grads);
}

std::string DataParallel::broadcast_string(const std::string& s) {
  if (comm_.size() == 1) return s;
  double n = root() ? static_cast<double>(s.size()) : 0.0;
  comm_.broadcast_bytes(&n, sizeof n, 0);
  std::string out = root() ? s : std::string(static_cast<size_t>(n), '\0');
  comm_.broadcast_bytes(out.data(), static_cast<int64_t>(out.size()), 0);
  return out;
}

}  // namespace miniseq
