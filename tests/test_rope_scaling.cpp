// RoPE scaling (model/rope_scaling.cpp) against transformers' own rotary-embedding modules: the inverse
// frequencies and cos/sin scale of default, linear, dynamic NTK, yarn and llama3 RoPE, on the real configs of
// bench/configs and on small ones that reach every branch (tests/data/rope/reference.json, written by
// tools/rope_reference.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "miniseq/model/rope_scaling.h"
#include "miniseq/train/model_setup.h"
#include "support/goldens.h"
#include "support/tmpdir.h"

using namespace miniseq;

namespace {

nlohmann::json reference() {
  std::ifstream in(test::test_data_dir() / "rope/reference.json");
  EXPECT_TRUE(in.good());
  return nlohmann::json::parse(in);
}

// Distance in units in the last place between two finite positive floats.
int64_t ulps(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  return std::abs(static_cast<int64_t>(ia) - static_cast<int64_t>(ib));
}

}  // namespace

// Every step is transformers' fp32 arithmetic; only powf may differ in its last bit (torch uses SLEEF's, ≤ 1
// ulp, we use the C library's), and a 1-ulp difference of the power carries into the reciprocal: ≤ 2 ulp in
// all, and the scale (computed in double, rounded once) exactly.
TEST(RopeScaling, InverseFrequenciesEqualTransformers) {
  const auto ref = reference();
  ASSERT_GE(ref["cases"].size(), 15u);
  int64_t exact = 0, total = 0;
  for (const auto& c : ref["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const ModelConfig config = parse_model_config(c["config"].dump(), name);
    const RopeParams p = rope_params(config, c["seq_len"].get<int64_t>());
    const auto& want = c["inv_freq"];
    ASSERT_EQ(p.inv_freq.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      const auto w = static_cast<float>(want[i].get<double>());
      EXPECT_LE(ulps(p.inv_freq[i], w), 2) << "inv_freq[" << i << "] " << p.inv_freq[i] << " vs " << w;
      exact += p.inv_freq[i] == w;
      ++total;
    }
    EXPECT_EQ(p.attention_scaling, static_cast<float>(c["attention_scaling"].get<double>()));
  }
  // The bound is for powf's last bit: most entries must be bit-identical.
  EXPECT_GE(static_cast<double>(exact), 0.9 * static_cast<double>(total)) << exact << " of " << total;
  std::printf("rope: %lld of %lld inverse frequencies bit-identical to transformers\n", (long long)exact,
              (long long)total);
}

// Dynamic NTK only moves past max_position_embeddings; below it the frequencies are the default ones.
TEST(RopeScaling, DynamicFollowsTheSequenceLength) {
  const ModelConfig c = parse_model_config(
      R"({"model_type":"llama","hidden_size":64,"num_attention_heads":4,"max_position_embeddings":32,
          "rope_scaling":{"type":"dynamic","factor":2.0}})",
      "dyn");
  const RopeParams plain = rope_params_plain(10000.0, 16);
  EXPECT_EQ(rope_params(c, 1).inv_freq, plain.inv_freq);
  EXPECT_EQ(rope_params(c, 32).inv_freq, plain.inv_freq);
  const RopeParams longer = rope_params(c, 33), longest = rope_params(c, 1000);
  EXPECT_EQ(longer.inv_freq[0], plain.inv_freq[0]);  // i = 0: base^0 = 1 whatever the base
  for (size_t i = 1; i < plain.inv_freq.size(); ++i) {
    EXPECT_LT(longer.inv_freq[i], plain.inv_freq[i]);
    EXPECT_LT(longest.inv_freq[i], longer.inv_freq[i]);
  }
}

// The LongLoRA context-extension rule per rope type (docs/rope.md).
TEST(RopeScaling, ContextExtensionRulePerType) {
  const auto cfg = [](const std::string& extra) {
    return parse_model_config(R"({"model_type":"llama","max_position_embeddings":8192)" + extra + "}", "c");
  };
  // none → linear ceil(S / max_position_embeddings)
  RopeScaling r = rope_for_length(cfg(""), 32768);
  EXPECT_EQ(r.type, RopeType::Linear);
  EXPECT_EQ(r.factor, 4.0);
  EXPECT_EQ(rope_for_length(cfg(""), 8192).type, RopeType::Default);
  // llama3 (Llama-3.1: native 131072): unchanged up to it, then the factor grows.
  const std::string l31 = R"(,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,)"
                          R"("high_freq_factor":4.0,"original_max_position_embeddings":8192})";
  ModelConfig llama31 =
      parse_model_config(R"({"model_type":"llama","max_position_embeddings":131072)" + l31 + "}", "l31");
  EXPECT_EQ(llama31.native_context(), 131072);
  EXPECT_EQ(rope_for_length(llama31, 131072).factor, 8.0);
  r = rope_for_length(llama31, 262144);
  EXPECT_EQ(r.type, RopeType::Llama3);
  EXPECT_EQ(r.factor, 16.0);
  EXPECT_EQ(r.original_max_position_embeddings, 8192);
  // yarn (Qwen2.5's 4 × 32768): native 131072; beyond it factor = ceil(S / original).
  ModelConfig qwen = parse_model_config(
      R"({"model_type":"qwen2","max_position_embeddings":32768,"rope_scaling":{"type":"yarn","factor":4.0,)"
      R"("original_max_position_embeddings":32768}})",
      "q");
  EXPECT_EQ(qwen.native_context(), 131072);
  EXPECT_EQ(rope_for_length(qwen, 100000).factor, 4.0);
  EXPECT_EQ(rope_for_length(qwen, 200000).factor, 7.0);
  // dynamic: never changed
  ModelConfig dyn = cfg(R"(,"rope_scaling":{"type":"dynamic","factor":2.0})");
  r = rope_for_length(dyn, 1 << 20);
  EXPECT_EQ(r.type, RopeType::Dynamic);
  EXPECT_EQ(r.factor, 2.0);
}

// `miniseq train` past a llama3 model's native context: the factor grows by the rule above, the run says so,
// and the saved config.json keeps every other rope key as read (transformers loads it as llama3 with the new
// factor).
TEST(RopeScaling, TrainingPastTheNativeContextSavesTheGrownFactor) {
  const std::string model = (test::golden_dir() / "llama31_rope_llama3/model").string();
  test::TempDir tmp;
  std::string ids;
  for (int i = 0; i < 400; ++i) ids += (i ? ", " : "") + std::to_string((i * 37 + 11) % 131);
  test::write_text(tmp.file("d.jsonl"), "{\"input_ids\": [" + ids + "]}\n");
  auto r = test::run_miniseq("train --low_rank_training False --model_name_or_path " + model + " --data_path " + tmp.file("d.jsonl") +
                             " --output_dir " + tmp.file("out") + " --model_max_length 160 --max_steps 1 " +
                             "--save_strategy no --logging_steps 1");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("RoPE llama3 scaling: factor 16 for model_max_length 160 (native context 128)"),
            std::string::npos)
      << r.out;
  const auto saved = nlohmann::json::parse(test::read_text(tmp.file("out/config.json")));
  const auto original = nlohmann::json::parse(test::read_text(model + "/config.json"));
  auto want = original["rope_scaling"];
  want["factor"] = 16.0;
  EXPECT_EQ(saved["rope_scaling"], want);
  EXPECT_EQ(saved["rope_theta"], original["rope_theta"]);
  EXPECT_EQ(parse_model_config(saved.dump(), "saved").rope.factor, 16.0);
}
