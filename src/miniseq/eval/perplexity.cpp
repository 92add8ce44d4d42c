#include "miniseq/eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "miniseq/ops/dry_backend.h"

namespace miniseq {

std::vector<EvalWindow> eval_windows(int64_t n, int64_t seq_len, int64_t stride) {
  MS_CHECK(seq_len >= 2, "--seq_len must be at least 2, got ", seq_len);
  MS_CHECK(stride >= 1 && stride <= seq_len, "--stride must lie in [1, seq_len = ", seq_len, "], got ", stride,
           " (a stride past the window would leave tokens unscored)");
  MS_CHECK(n >= 2, "the token stream has ", n, " token(s); at least 2 are needed to score one");
  std::vector<EvalWindow> w;
  int64_t prev_end = 1;  // token 0 is never scored
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + seq_len, n);
    // A window's first token has no context inside it: with disjoint windows (stride = seq_len) it goes unscored,
    // as in Hugging Face's recipe.
    const int64_t first = std::max(prev_end, begin + 1);
    if (end > first) w.push_back({begin, end, first});
    prev_end = std::max(prev_end, end);
    if (end == n) break;
  }
  return w;
}

std::vector<std::vector<EvalWindow>> eval_batches(const std::vector<EvalWindow>& windows, int64_t batch) {
  MS_CHECK(batch >= 1, "--batch must be at least 1, got ", batch);
  std::vector<std::vector<EvalWindow>> groups;
  for (const auto& w : windows) {
    if (groups.empty() || static_cast<int64_t>(groups.back().size()) == batch ||
        groups.back().front().end - groups.back().front().begin != w.end - w.begin)
      groups.emplace_back();
    groups.back().push_back(w);
  }
  return groups;
}

TokenBatch eval_batch(const std::vector<int32_t>& stream, const std::vector<EvalWindow>& group) {
  TokenBatch b;
  b.batch = static_cast<int64_t>(group.size());
  b.seq = group.front().end - group.front().begin;
  for (const auto& w : group) {
    MS_DASSERT(w.end - w.begin == b.seq);
    for (int64_t t = w.begin; t < w.end; ++t) {
      const int32_t id = stream[static_cast<size_t>(t)];
      b.input_ids.push_back(id);
      b.labels.push_back(t >= w.first_scored ? id : kIgnoreIndex);
    }
  }
  return b;
}

double EvalResult::perplexity() const {
  return std::exp(mean_loss());
}

EvalResult evaluate_stream(Decoder& model, const std::vector<int32_t>& stream, int64_t seq_len, int64_t stride,
                           int64_t batch, const StepPolicy& policy, const EvalProgress& progress) {
  const auto windows = eval_windows(static_cast<int64_t>(stream.size()), seq_len, stride);
  EvalResult r;
  for (const auto& group : eval_batches(windows, batch)) {
    const CrossEntropyStats s = model.forward_eval(eval_batch(stream, group), policy);
    r.windows += static_cast<int64_t>(group.size());
    r.scored += s.counted;
    r.loss_sum += s.loss_sum;
    r.correct += s.correct;
    if (progress) progress(r.windows, static_cast<int64_t>(windows.size()), r.scored);
  }
  return r;
}

MemReport plan_evaluation(const ModelConfig& config, int64_t n, int64_t seq_len, int64_t stride,
                          int64_t batch, const StepPolicy& policy, Device device, DType params,
                          DType activations, const LoraConfig& lora) {
  const auto groups = eval_batches(eval_windows(n, seq_len, stride), batch);
  MemoryPlan plan = MemoryPlan::dry(device);
  DryBackend be(device, params, DType::F32, activations);
  Decoder model(config, be, plan, GradStorage::None, lora);
  // After a batch only the weights are live again, so the sizes that occur are all there is to plan: the first
  // (largest) group and the last one.
  std::vector<const std::vector<EvalWindow>*> shapes = {&groups.front()};
  if (groups.size() > 1) shapes.push_back(&groups.back());
  for (const auto* g : shapes) {
    TokenBatch b;
    b.batch = static_cast<int64_t>(g->size());
    b.seq = g->front().end - g->front().begin;
    b.input_ids.assign(static_cast<size_t>(b.rows()), 0);
    b.labels.assign(static_cast<size_t>(b.rows()), 0);
    model.forward_eval(b, policy);
  }
  return plan.report();
}

}  // namespace miniseq
