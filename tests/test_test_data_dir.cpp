// The test data directory: the source tree's tests/data, or $MINISEQ_TEST_DATA when set (scripts/gpu-check.sh
// runs the tests from a copy of the tree; binaries built elsewhere find the data through it).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "support/goldens.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

using namespace miniseq;
namespace fs = std::filesystem;

namespace {

// Sets MINISEQ_TEST_DATA for one scope and restores the previous value.
class ScopedTestData {
 public:
  explicit ScopedTestData(const char* value) {
    if (const char* old = std::getenv("MINISEQ_TEST_DATA")) old_ = old, had_ = true;
    if (value)
      setenv("MINISEQ_TEST_DATA", value, 1);
    else
      unsetenv("MINISEQ_TEST_DATA");
  }
  ~ScopedTestData() {
    if (had_)
      setenv("MINISEQ_TEST_DATA", old_.c_str(), 1);
    else
      unsetenv("MINISEQ_TEST_DATA");
  }

 private:
  std::string old_;
  bool had_ = false;
};

TEST(TestDataDir, DefaultsToTheSourceTree) {
  ScopedTestData unset(nullptr);
  EXPECT_EQ(test::test_data_dir(), fs::path(MINISEQ_SOURCE_DIR) / "tests/data");
  EXPECT_TRUE(fs::exists(test::golden_dir() / "llama_basic/model/config.json"));
  ScopedTestData empty("");  // empty counts as unset
  EXPECT_EQ(test::test_data_dir(), fs::path(MINISEQ_SOURCE_DIR) / "tests/data");
}

TEST(TestDataDir, FollowsTheEnvironment) {
  test::TempDir tmp;
  fs::create_directories(tmp.path() / "golden/case_b");
  fs::create_directories(tmp.path() / "golden/case_a/model");
  test::write_text((tmp.path() / "golden/case_a/grads.safetensors").string(), "x");
  test::write_text((tmp.path() / "golden/case_b/grads.safetensors").string(), "x");
  ScopedTestData set(tmp.path().c_str());
  EXPECT_EQ(test::test_data_dir(), tmp.path());
  EXPECT_EQ(test::golden_dir(), tmp.path() / "golden");
  EXPECT_EQ(test::golden_cases("grads.safetensors"), (std::vector<std::string>{"case_a", "case_b"}));
  EXPECT_EQ(test::golden_cases("model"), (std::vector<std::string>{"case_a"}));
  EXPECT_EQ(test::train_test_model(), tmp.path() / "golden/llama_basic/model");
}

// A copy of the data elsewhere gives the same cases as the source tree (what a run from a copied tree sees).
TEST(TestDataDir, ACopyGivesTheSameCases) {
  const std::vector<std::string> here = test::golden_cases("model/config.json");
  ASSERT_FALSE(here.empty());
  test::TempDir tmp;
  fs::copy(fs::path(MINISEQ_SOURCE_DIR) / "tests/data/golden", tmp.path() / "golden",
           fs::copy_options::recursive);
  ScopedTestData set(tmp.path().c_str());
  EXPECT_EQ(test::golden_cases("model/config.json"), here);
}

}  // namespace
