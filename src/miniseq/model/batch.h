// A micro-batch of token sequences, Hugging Face style: labels are NOT shifted (the model shifts: position s is
// trained to predict labels[s + 1]); -100 marks an ignored label.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace miniseq {

constexpr int32_t kIgnoreIndex = -100;

struct TokenBatch {
  int64_t batch = 0;               // B
  int64_t seq = 0;                 // S
  std::vector<int32_t> input_ids;  // [B, S]
  std::vector<int32_t> labels;     // [B, S], unshifted

  int64_t rows() const { return batch * seq; }  // T
  // targets[b*S + s] = labels[b, s+1], and kIgnoreIndex at s = S-1: the label each position is scored against.
  std::vector<int32_t> shifted_targets() const;
  // Number of targets != -100: the loss denominator of this micro-batch.
  int64_t count_targets() const;
};

// One JSONL record, parsed; errors name path:line.
nlohmann::json parse_jsonl_line(const std::string& line, const std::string& path, int64_t lineno);
// f(record, line number) for every non-blank line of a JSONL file; `what` names the file in the error when it
// cannot be read ("<path>: cannot read <what>").
void for_each_jsonl_record(const std::string& path, const char* what,
                           const std::function<void(const nlohmann::json&, int64_t)>& f);
// The token ids under `key` of a JSONL record: an array of ids in [0, vocab) (for labels, -100 too).
std::vector<int32_t> json_token_ids(const nlohmann::json& record, const char* key, bool labels, int64_t vocab,
                                    const std::string& path, int64_t lineno);

// Reads `miniseq grad`'s JSONL: one sequence per line, {"input_ids": [...]} with optional "labels" (same length).
// All lines must have the same length; ids must lie in [0, vocab_size). Errors name the file and line.
TokenBatch read_token_batch_jsonl(const std::string& path, int64_t vocab_size);

}  // namespace miniseq
