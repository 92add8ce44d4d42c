// Perplexity and next-token accuracy of a long token stream over sliding windows, each token scored at most once (the
// strided evaluation of Hugging Face's "Perplexity of fixed-length models"): window w covers tokens
// [w·stride, w·stride + seq_len) and scores the tokens after the previous window's end, each with all the context
// its window gives it. A smaller stride gives every scored token at least seq_len − stride tokens of context, and
// every token but token 0 is scored (N − 1 in all). stride = seq_len gives disjoint windows; then the first token
// of each window has no context inside it and is not scored (as in Hugging Face's recipe).
//
// LongLoRA's eval.py differs: it averages the mean loss of overlapping windows (with stride 256 a token is scored
// up to seq_len / 256 times, and ppl = 2.71828^mean). docs/eval.md compares the two.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "miniseq/core/memory_plan.h"
#include "miniseq/model/decoder.h"

namespace miniseq {

struct EvalWindow {
  int64_t begin = 0, end = 0;  // tokens [begin, end) are the window's input
  int64_t first_scored = 0;    // tokens [first_scored, end) are scored (predicted from the positions before them)
};

// The windows over a stream of n tokens; requires 1 <= stride <= seq_len.
std::vector<EvalWindow> eval_windows(int64_t n, int64_t seq_len, int64_t stride);

// Consecutive windows of equal length, at most `batch` per group: the micro-batches of the evaluation.
std::vector<std::vector<EvalWindow>> eval_batches(const std::vector<EvalWindow>& windows, int64_t batch);

// The token batch of a group: input ids, and labels = ids where scored, -100 elsewhere (unshifted, HF style).
TokenBatch eval_batch(const std::vector<int32_t>& stream, const std::vector<EvalWindow>& group);

struct EvalResult {
  int64_t windows = 0;
  int64_t scored = 0;   // tokens scored (N − 1 for a whole stream)
  double loss_sum = 0;  // Σ −log p(token | context), natural log
  int64_t correct = 0;  // argmax hits
  double mean_loss() const { return scored > 0 ? loss_sum / static_cast<double>(scored) : 0.0; }
  double perplexity() const;
  double accuracy() const { return scored > 0 ? static_cast<double>(correct) / static_cast<double>(scored) : 0.0; }
};

// Runs every batch through model.forward_eval; `progress(done_windows, total_windows, scored_so_far)` after each.
using EvalProgress = std::function<void(int64_t, int64_t, int64_t)>;
EvalResult evaluate_stream(Decoder& model, const std::vector<int32_t>& stream, int64_t seq_len, int64_t stride,
                           int64_t batch, const StepPolicy& policy, const EvalProgress& progress = {});

// The planned memory of evaluate_stream for a stream of n tokens: the same calls on a dry plan (the largest batch
// and, when it differs, the last one).
MemReport plan_evaluation(const ModelConfig& config, int64_t n, int64_t seq_len, int64_t stride,
                          int64_t batch, const StepPolicy& policy, Device device, DType params,
                          DType activations, const LoraConfig& lora = {});

}  // namespace miniseq
