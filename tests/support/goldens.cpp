#include "support/goldens.h"

#include <algorithm>
#include <cstdlib>

namespace miniseq::test {

std::filesystem::path test_data_dir() {
  const char* env = std::getenv("MINISEQ_TEST_DATA");
  if (env && *env) return std::filesystem::path(env);
  return std::filesystem::path(MINISEQ_SOURCE_DIR) / "tests/data";
}

std::filesystem::path golden_dir() {
  return test_data_dir() / "golden";
}

std::vector<std::string> golden_cases(const std::string& file) {
  std::vector<std::string> cases;
  if (!std::filesystem::exists(golden_dir())) return cases;
  for (const auto& e : std::filesystem::directory_iterator(golden_dir()))
    if (std::filesystem::exists(e.path() / file)) cases.push_back(e.path().filename().string());
  std::sort(cases.begin(), cases.end());
  return cases;
}

}  // namespace miniseq::test
