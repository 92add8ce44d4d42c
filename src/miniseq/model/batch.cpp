#include "miniseq/model/batch.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"

namespace miniseq {

std::vector<int32_t> TokenBatch::shifted_targets() const {
  std::vector<int32_t> t(static_cast<size_t>(rows()), kIgnoreIndex);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s + 1 < seq; ++s)
      t[static_cast<size_t>(b * seq + s)] = labels[static_cast<size_t>(b * seq + s + 1)];
  return t;
}

int64_t TokenBatch::count_targets() const {
  int64_t n = 0;
  for (int32_t t : shifted_targets()) n += t != kIgnoreIndex;
  return n;
}

nlohmann::json parse_jsonl_line(const std::string& line, const std::string& path, int64_t lineno) {
  nlohmann::json j = jsonio::parse(line, path + ":" + std::to_string(lineno));
  MS_CHECK(j.is_object(), path, ":", lineno, ": each line must be a JSON object (\"input_ids\" or \"text\")");
  return j;
}

std::vector<int32_t> json_token_ids(const nlohmann::json& j, const char* key, bool labels, int64_t vocab,
                                    const std::string& path, int64_t lineno) {
  MS_CHECK(j.contains(key) && j[key].is_array(), path, ":", lineno, ": \"", key, "\" must be an array of integers");
  std::vector<int32_t> v;
  v.reserve(j[key].size());
  for (const auto& x : j[key]) {
    MS_CHECK(x.is_number_integer(), path, ":", lineno, ": \"", key,
             "\" holds a non-integer: ", jsonio::describe(x));
    MS_CHECK(!x.is_number_unsigned() || x.get<uint64_t>() <= static_cast<uint64_t>(vocab), path, ":", lineno, ": ",
             key, " value ", x.get<uint64_t>(), " is outside the model's vocabulary [0, ", vocab, ")");
    const int64_t id = x.get<int64_t>();
    MS_CHECK((labels && id == kIgnoreIndex) || (id >= 0 && id < vocab), path, ":", lineno, ": ", key, " value ", id,
             " is outside the model's vocabulary [0, ", vocab, ")", labels ? " (use -100 to ignore)" : "");
    v.push_back(static_cast<int32_t>(id));
  }
  return v;
}

void for_each_jsonl_record(const std::string& path, const char* what,
                           const std::function<void(const nlohmann::json&, int64_t)>& f) {
  std::ifstream in(path);
  MS_CHECK(in.good(), path, ": cannot read ", what);
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    f(parse_jsonl_line(line, path, lineno), lineno);
  }
}

TokenBatch read_token_batch_jsonl(const std::string& path, int64_t vocab_size) {
  TokenBatch b;
  for_each_jsonl_record(path, "the data file", [&](const nlohmann::json& j, int64_t lineno) {
    std::vector<int32_t> ids = json_token_ids(j, "input_ids", false, vocab_size, path, lineno);
    std::vector<int32_t> labels = j.contains("labels") ? json_token_ids(j, "labels", true, vocab_size, path, lineno) : ids;
    MS_CHECK(!ids.empty(), path, ":", lineno, ": empty input_ids");
    MS_CHECK(labels.size() == ids.size(), path, ":", lineno, ": labels has ", labels.size(),
             " entries but input_ids has ", ids.size());
    if (b.batch == 0) b.seq = static_cast<int64_t>(ids.size());
    MS_CHECK(static_cast<int64_t>(ids.size()) == b.seq, path, ":", lineno, ": sequence of ", ids.size(),
             " tokens, but line 1 has ", b.seq, "; all lines form one batch and must have equal lengths");
    b.input_ids.insert(b.input_ids.end(), ids.begin(), ids.end());
    b.labels.insert(b.labels.end(), labels.begin(), labels.end());
    ++b.batch;
  });
  MS_CHECK(b.batch > 0, path, ": no sequences (expected JSONL lines like {\"input_ids\": [1, 2, 3]})");
  return b;
}

}  // namespace miniseq
