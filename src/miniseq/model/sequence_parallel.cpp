#include "miniseq/model/sequence_parallel.h"

#include <algorithm>
#include <optional>
#include <string>

#include "miniseq/dist/communicator.h"

namespace miniseq {

std::string sequence_parallel_heads_problem(int64_t heads, int64_t kv_heads, int64_t P) {
  if (heads % P != 0)
    return "the model's " + std::to_string(heads) + " attention heads do not split over " +
           std::to_string(P) +
           " ranks (Ulysses gives every rank heads/P whole heads: choose a --sequence_parallel that "
           "divides " +
           std::to_string(heads) + ")";
  if (kv_heads % P != 0 && P % kv_heads != 0)
    return "the model's " + std::to_string(kv_heads) + " key/value heads neither split over " +
           std::to_string(P) + " ranks nor divide " + std::to_string(P) +
           " (a kv head is replicated onto the ranks of its query heads): choose a --sequence_parallel that "
           "divides or is a multiple of " +
           std::to_string(kv_heads);
  return "";
}

HeadExchange::HeadExchange(Backend& be, MemoryPlan& plan, const SequenceParallel& sp, int64_t B,
                           int64_t S_local, int64_t heads, int64_t D)
    : be_(be), plan_(plan), sp_(sp), B_(B), Sl_(S_local), heads_(heads), D_(D) {
  local_heads_ = std::max<int64_t>(1, heads / sp.size);
  MS_CHECK(sp.size >= 1 && (heads % sp.size == 0 || sp.size % heads == 0), "internal: ", heads,
           " heads over ", sp.size, " sequence-parallel ranks");
}

int64_t HeadExchange::first_head(int j) const {
  // heads ≥ P: j·heads/P; fewer (replicated): the head of rank j's query heads, floor(j·heads/P).
  return static_cast<int64_t>(j) * heads_ / sp_.size;
}

// Layouts: x [B, S/P, heads·D] on each rank (its tokens); y [B, S, local_heads·D] (its heads). The
// all-to-all's block j goes to rank j: [B·S/P, w] (w = local_heads·D), this rank's tokens of rank j's heads.
// Received block i is rank i's tokens of this rank's heads, [B, S/P, w]: with B = 1 the blocks in rank order
// are y itself.
Buffer HeadExchange::pack(const Tensor& x) {
  const int P = sp_.size;
  const int64_t rows = B_ * Sl_, w = local_heads_ * D_;
  MS_CHECK(x.numel() == rows * heads_ * D_, "internal: head exchange of ", x.shape.str());
  const Tensor x2 = x.view({rows, heads_ * D_});
  Buffer send = plan_.alloc("sp.send", {P * rows, w}, x.dtype, MemCategory::TransientActivations);
  for (int j = 0; j < P; ++j) be_.copy_columns(send->rows(j * rows, rows), 0, x2, first_head(j) * D_, w);
  return send;
}

void HeadExchange::to_heads(Buffer send, const Tensor& y) {
  const int P = sp_.size;
  const int64_t rows = B_ * Sl_, w = local_heads_ * D_, S = Sl_ * P;
  MS_CHECK(send->numel() == P * rows * w && y.numel() == B_ * S * w, "internal: head exchange of ",
           send->shape.str(), " into ", y.shape.str());
  const DType dt = send->dtype;
  std::optional<Buffer> recv;
  if (B_ > 1) recv = plan_.alloc("sp.recv", {P * rows, w}, dt, MemCategory::TransientActivations);
  const Tensor r = recv ? recv->tensor() : y.view({P * rows, w});
  if (sp_.comm) sp_.comm->all_to_all(send, r);
  send.release();
  if (!recv) return;
  const Tensor y2 = y.view({B_, S * w});
  for (int i = 0; i < P; ++i)
    be_.copy_columns(y2, i * Sl_ * w, (*recv)->rows(i * rows, rows).view({B_, Sl_ * w}), 0, Sl_ * w);
}

void HeadExchange::to_sequence(const Tensor& y, const Tensor& x) {
  const int P = sp_.size;
  const int64_t rows = B_ * Sl_, w = local_heads_ * D_, S = Sl_ * P;
  MS_CHECK(x.numel() == rows * heads_ * D_ && y.numel() == B_ * S * w, "internal: head exchange of ",
           y.shape.str(), " into ", x.shape.str());
  std::optional<Buffer> send;
  if (B_ > 1) {
    send = plan_.alloc("sp.send", {P * rows, w}, y.dtype, MemCategory::TransientActivations);
    const Tensor y2 = y.view({B_, S * w});
    for (int i = 0; i < P; ++i)
      be_.copy_columns((*send)->rows(i * rows, rows).view({B_, Sl_ * w}), 0, y2, i * Sl_ * w, Sl_ * w);
  }
  const Tensor s = send ? send->tensor() : y.view({P * rows, w});
  Buffer recv = plan_.alloc("sp.recv", {P * rows, w}, y.dtype, MemCategory::TransientActivations);
  if (sp_.comm) sp_.comm->all_to_all(s, recv);
  send.reset();
  // Block j holds rank j's heads of this rank's tokens; copies of one replicated head come from consecutive
  // ranks and are summed into the first, in rank order.
  const Tensor x2 = x.view({rows, heads_ * D_});
  for (int j = 0; j < P;) {
    int e = j + 1;
    while (e < P && first_head(e) == first_head(j)) ++e;
    const Tensor first = recv->rows(j * rows, rows);
    for (int k = j + 1; k < e; ++k) be_.add_inplace(first, recv->rows(k * rows, rows));
    be_.copy_columns(x2, first_head(j) * D_, first, 0, w);
    j = e;
  }
}

}  // namespace miniseq
