// JSONL data records ({"input_ids": [...], "labels": [...]} or {"text": ...}), one per line.
#include <sstream>

#include "fuzz_common.h"
#include "miniseq/model/batch.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  std::string line;
  for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
    miniseq::fuzz::expect_user_error_only([&] {
      const nlohmann::json j = miniseq::parse_jsonl_line(line, "data.jsonl", lineno);
      if (j.contains("input_ids"))
        (void)miniseq::json_token_ids(j, "input_ids", false, 32000, "data.jsonl", lineno);
      if (j.contains("labels")) (void)miniseq::json_token_ids(j, "labels", true, 32000, "data.jsonl", lineno);
    });
  }
  return 0;
}
