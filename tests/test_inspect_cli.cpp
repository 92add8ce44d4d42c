// `miniseq inspect` and `miniseq tiny-model` end to end through the program: correct counts for directories
// written by miniseq and by the real Hugging Face stack, and one-line errors for broken directories.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "miniseq/io/safetensors.h"
#include "support/goldens.h"
#include "support/tmpdir.h"

using namespace miniseq;
using miniseq::test::run_miniseq;
using miniseq::test::TempDir;

namespace {
// The last line of the output (the error line, for failing commands).
std::string last_line(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  return t.substr(t.rfind('\n') == std::string::npos ? 0 : t.rfind('\n') + 1);
}
}  // namespace

TEST(InspectCli, TinyModelRoundTrip) {
  TempDir dir;
  const std::string m = dir.file("tiny");
  auto w = run_miniseq("tiny-model --out " + m + " --arch qwen2 --tie_word_embeddings True --max_shard_bytes 30000");
  ASSERT_EQ(w.status, 0) << w.out;
  auto r = run_miniseq("inspect " + m);
  ASSERT_EQ(r.status, 0) << r.out;
  // d=64, I=176, L=2, H=4, Hkv=2, D=16, V=256, tied (no lm_head), q/k/v biases:
  const int64_t per_layer = 2 * 64 + (64 * 64 + 64) + 2 * (32 * 64 + 32) + 64 * 64 + 3 * 176 * 64;
  EXPECT_EQ(256 * 64 + 2 * per_layer + 64, 109120);
  EXPECT_NE(r.out.find("109,120 total"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sharded"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("q/k/v bias yes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("files match the config"), std::string::npos) << r.out;
}

TEST(InspectCli, MismatchesAreErrors) {
  TempDir dir;
  const std::string m = dir.file("tiny");
  ASSERT_EQ(run_miniseq("tiny-model --out " + m).status, 0);
  // Change the config so that the files no longer match: more layers, wider MLP.
  auto cfg = nlohmann::json::parse(test::read_text(m + "/config.json"));
  cfg["num_hidden_layers"] = 3;
  cfg["intermediate_size"] = 100;
  test::write_text(m + "/config.json", cfg.dump());
  auto r = run_miniseq("inspect " + m);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("missing tensor 'model.layers.2.mlp.up_proj.weight'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tensor 'model.layers.0.mlp.gate_proj.weight'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("has shape [176, 64], the config implies [100, 64]"), std::string::npos) << r.out;
  EXPECT_NE(last_line(r.out).find("mismatches between the weight files and config.json"), std::string::npos)
      << r.out;
}

TEST(InspectCli, BrokenDirectoriesGiveOneLineErrors) {
  TempDir dir;
  const std::string m = dir.file("tiny");
  ASSERT_EQ(run_miniseq("tiny-model --out " + m).status, 0);
  // Truncate the weights file.
  const std::string st = m + "/model.safetensors";
  std::filesystem::resize_file(st, std::filesystem::file_size(st) - 100);
  auto r = run_miniseq("inspect " + m);
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "one line: " << r.out;
  EXPECT_NE(r.out.find("past the data section"), std::string::npos) << r.out;
  // No config.
  std::filesystem::remove(m + "/config.json");
  r = run_miniseq("inspect " + m);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("config.json: cannot read"), std::string::npos) << r.out;
  // Unknown flag: names the closest one.
  r = run_miniseq("tiny-model --out " + m + " --hiden_size 8");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("did you mean --hidden_size"), std::string::npos) << r.out;
}

// Directories written by transformers' save_pretrained (tools/make_goldens.py): inspect must count exactly what
// transformers counted (num_parameters recorded in case.json when available) and see no mismatch.
TEST(InspectCli, ReadsHuggingFaceWrittenModels) {
  const std::filesystem::path golden = test::golden_dir();
  if (!std::filesystem::exists(golden)) GTEST_SKIP() << "no goldens under " << golden;
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(golden)) {
    const auto model = e.path() / "model";
    if (!std::filesystem::exists(model / "config.json")) continue;
    ++seen;
    auto r = run_miniseq("inspect " + model.string());
    EXPECT_EQ(r.status, 0) << model << "\n" << r.out;
    auto case_json = nlohmann::json::parse(test::read_text((e.path() / "case.json").string()));
    if (case_json.contains("num_parameters")) {
      std::string n = std::to_string(case_json["num_parameters"].get<int64_t>());
      std::string with_commas;
      for (size_t i = 0; i < n.size(); ++i) {
        if (i > 0 && (n.size() - i) % 3 == 0) with_commas.push_back(',');
        with_commas.push_back(n[i]);
      }
      EXPECT_NE(r.out.find(with_commas + " total"), std::string::npos) << model << "\n" << r.out;
    }
  }
  EXPECT_GT(seen, 0);
}

// A stray word on any command line is an error (it used to be dropped: `generate --prompt The pass key is`
// generated from "The"); inspect takes its one directory, and a config.json alone.
TEST(InspectCli, StrayArgumentsAreRefused) {
  const std::string model = test::source_dir() + "/tests/data/golden/llama_basic/model";
  auto r = test::run_miniseq("generate --model " + model + " --prompt The pass key is");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("unexpected argument 'pass' for `miniseq generate`"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("quote values with spaces"), std::string::npos) << r.out;
  for (const char* cmd : {"train --output_dir o extra", "eval extra", "passkey extra", "memplan extra",
                          "grad extra", "tokenize extra", "tiny-model extra"}) {
    r = test::run_miniseq(cmd);
    EXPECT_EQ(r.status, 2) << cmd << ": " << r.out;
    EXPECT_NE(r.out.find("unexpected argument 'extra'"), std::string::npos) << cmd << ": " << r.out;
  }
  r = test::run_miniseq("inspect " + model + " " + model);
  EXPECT_EQ(r.status, 2) << r.out;
  r = test::run_miniseq("inspect " + model + "/config.json");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("files       none: config.json only"), std::string::npos) << r.out;
}
