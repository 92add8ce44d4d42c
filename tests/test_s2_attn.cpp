// S²-Attn (LongLoRA's shifted sparse attention, `--use_full_attn False`) end to end against the Python
// reference (tools/s2_attn_reference.py: transformers' Llama / Mistral / Qwen2 with the S² group mask per
// query head, without LongLoRA's wrap-around leak; goldens in tests/data/golden/s2/, docs/s2attn.md): the
// loss and every gradient of a training step with S²-Attn for every MsT / checkpointing policy, within 1e-5
// of the fp32 and the fp64 reference; and the same model at evaluation attends fully (the loss transformers
// gives with its own attention). Tolerances as tests/test_grad_golden.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "miniseq/io/safetensors.h"
#include "miniseq/model/decoder.h"
#include "miniseq/model/planner.h"
#include "miniseq/ops/attention_mask.h"
#include "support/op_check.h"
#include "support/goldens.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

using namespace miniseq;
using test::rel_l2;
namespace fs = std::filesystem;

namespace {

fs::path s2_dir() {
  return test::golden_dir() / "s2";
}

std::vector<std::string> s2_cases() {
  std::vector<std::string> cases;
  if (!fs::exists(s2_dir())) return cases;
  for (const auto& e : fs::directory_iterator(s2_dir()))
    if (fs::exists(e.path() / "grads.safetensors")) cases.push_back(e.path().filename().string());
  std::sort(cases.begin(), cases.end());
  return cases;
}


struct Case {
  fs::path dir;
  ModelConfig config;
  TokenBatch batch;
  explicit Case(const std::string& name)
      : dir(s2_dir() / name),
        config(load_model_config((dir / "model").string())),
        batch(read_token_batch_jsonl((dir / "batch.jsonl").string(), config.vocab_size)) {}
  double meta(const std::string& key) const {
    return std::stod(SafetensorsFile((dir / "grads.safetensors").string()).metadata().at(key));
  }
};

struct Result {
  double loss = 0;
  std::map<std::string, std::vector<float>> grads;
};

// One training step as the planner plans it.
Result train_step(const Case& c, const StepPolicy& policy) {
  const int64_t n = c.batch.count_targets();
  auto be = make_cpu_backend();
  const MemReport planned =
      plan_step(c.config, c.batch.batch, c.batch.seq, policy, plan_target_for(*be, false));
  MemoryPlan plan = MemoryPlan::real(Device::CPU, planned.arena_bytes);
  Decoder model(c.config, *be, plan);
  load_params(SafetensorsModel((c.dir / "model").string()), c.config, model.weights());
  model.zero_grads();
  Result r;
  r.loss = model.forward_backward(c.batch, policy, n) / static_cast<double>(n);
  EXPECT_EQ(plan.report().peak_bytes, planned.peak_bytes);
  model.grads().for_each(
      [&](const ParamSpec& s, const Tensor& g) { r.grads[s.name].assign(g.f32(), g.f32() + g.numel()); });
  return r;
}

void compare(const Case& c, const Result& r, const std::string& file) {
  SafetensorsFile golden((c.dir / file).string());
  const double ref = std::stod(golden.metadata().at(file == "grads.safetensors" ? "loss" : "loss_f64"));
  EXPECT_NEAR(r.loss, ref, 1e-6 * std::abs(ref)) << "loss vs " << file;
  EXPECT_EQ(golden.tensors().size(), r.grads.size());
  double worst = 0;
  std::string worst_name;
  for (const auto& t : golden.tensors()) {
    auto it = r.grads.find(t.name);
    ASSERT_NE(it, r.grads.end()) << "no gradient for " << t.name;
    std::vector<float> want(static_cast<size_t>(t.numel()));
    golden.read(t.name, Tensor(want.data(), Shape::from(t.shape)));
    ASSERT_EQ(want.size(), it->second.size()) << t.name;
    const double err = rel_l2(it->second, want);
    if (err > worst) worst = err, worst_name = t.name;
    EXPECT_LE(err, 1e-5) << t.name << " vs " << file;
  }
  std::printf("[s2] %-18s vs %-22s loss rel %.1e, worst gradient %.2e (%s)\n", c.dir.filename().c_str(),
              file.c_str(), std::abs(r.loss - ref) / std::abs(ref), worst, worst_name.c_str());
}

std::vector<std::pair<std::string, StepPolicy>> s2_policies() {
  std::vector<std::pair<std::string, StepPolicy>> out;
  for (bool mst : {true, false})
    for (bool ckpt : {true, false}) {
      StepPolicy p;
      p.s2_attn = true;
      p.mini_sequence = mst;
      p.checkpointing = ckpt;
      out.push_back({std::string("mst=") + (mst ? "on" : "off") + " ckpt=" + (ckpt ? "on" : "off"), p});
    }
  StepPolicy small;  // remainder chunks in the MLP and the LM head
  small.s2_attn = true;
  small.mlp_chunk_tokens = 7;
  small.lm_head_chunks = 5;
  out.push_back({"mst chunks 7 rows / 5 head chunks", small});
  return out;
}

class S2Golden : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST(S2Attn, GroupRule) {
  EXPECT_EQ(StepPolicy::s2_group_size(32768), 8192);  // LongLoRA: int(q_len * 1/4)
  EXPECT_EQ(StepPolicy::s2_group_size(40), 10);
  EXPECT_EQ(StepPolicy::s2_group_size(45), 11);  // LongLoRA refuses 45; here the last group is [44, 45)
  EXPECT_EQ(StepPolicy::s2_group_size(3), 1);    // LongLoRA divides by zero; here each token attends itself
  EXPECT_EQ(StepPolicy::s2_group_size(2), 1);
  StepPolicy p;
  EXPECT_EQ(p.s2_group(40), 0);  // full attention unless s2_attn
  p.s2_attn = true;
  EXPECT_EQ(p.s2_group(40), 10);
  // Supervised fine-tuning (LongLoRA's llama_attn_replace_sft.py): S/4 when 4096 divides the padded length,
  // else groups of 8192, so a batch of at most 4096 tokens attends fully (the shift, 4096, is past its end).
  p.s2_sft_group = kLongLoraSftGroup;
  EXPECT_EQ(p.s2_group(40), 8192);
  EXPECT_EQ(p.s2_group(10000), 8192);
  EXPECT_EQ(p.s2_group(8192), 2048);
  EXPECT_EQ(p.s2_group(12288), 3072);
  const AttentionMask m = AttentionMask{4096, true, 0, 0, p.s2_group(4095)}.for_head(1, 2);
  EXPECT_EQ(m.first_key(4094), 0);
  EXPECT_EQ(m.last_key(4094), 4094);
}

TEST_P(S2Golden, TrainingStepMatchesReferenceForEveryPolicy) {
  const Case c(GetParam());
  ASSERT_EQ(StepPolicy::s2_group_size(c.batch.seq), static_cast<int64_t>(c.meta("s2_group")));
  auto noise_json = nlohmann::json::parse(test::read_text((s2_dir() / "errors.json").string()));
  const auto& noise = noise_json["cases"][GetParam()]["grad_rel_err"];
  std::vector<Result> results;
  const auto policies = s2_policies();
  for (const auto& [label, p] : policies) {
    SCOPED_TRACE(label);
    results.push_back(train_step(c, p));
    compare(c, results.back(), "grads.safetensors");
    compare(c, results.back(), "grads_f64.safetensors");
  }
  for (size_t i = 1; i < results.size(); ++i) {  // the policies differ only in summation order
    SCOPED_TRACE(policies[i].first + " vs " + policies[0].first);
    EXPECT_NEAR(results[i].loss, results[0].loss, 1e-6 * std::abs(results[0].loss));
    for (const auto& [name, g] : results[0].grads)
      EXPECT_LE(rel_l2(results[i].grads.at(name), g), std::max(1e-6, 4.0 * noise.at(name).get<double>()))
          << name;
  }
}

// The same model attends fully at evaluation, whatever the policy says (Decoder::make_step), and in training
// with
// --use_full_attn True: both give transformers' loss with its own attention.
TEST_P(S2Golden, EvaluationAndFullAttentionTrainingAttendFully) {
  const Case c(GetParam());
  const double full = c.meta("loss_full"), s2 = c.meta("loss");
  ASSERT_GT(std::abs(full - s2), 1e-4 * std::abs(full)) << "the case does not tell the two apart";

  auto be = make_cpu_backend();
  MemoryPlan plan = MemoryPlan::real(Device::CPU, size_t{64} << 20);
  Decoder model(c.config, *be, plan, GradStorage::None);
  load_params(SafetensorsModel((c.dir / "model").string()), c.config, model.weights());
  StepPolicy p;
  p.s2_attn = true;  // a training policy: evaluation ignores it
  const CrossEntropyStats st = model.forward_eval(c.batch, p);
  ASSERT_EQ(st.counted, c.batch.count_targets());
  EXPECT_NEAR(st.loss_sum / static_cast<double>(st.counted), full, 1e-6 * full);

  StepPolicy full_policy;
  full_policy.s2_attn = false;
  EXPECT_NEAR(train_step(c, full_policy).loss, full, 1e-6 * full);
}

// `miniseq grad` attends fully unless --use_full_attn False (then as `train`'s default): with it, the loss
// and every gradient it writes match the reference for every MsT / checkpointing policy.
TEST(S2Attn, GradCliTakesUseFullAttn) {
  if (!fs::exists(s2_dir() / "llama_gqa")) GTEST_SKIP() << "no golden " << s2_dir() / "llama_gqa";
  const Case c("llama_gqa");
  test::TempDir tmp;
  const std::string out = tmp.file("g.safetensors");
  const std::string base = "grad --model " + (c.dir / "model").string() + " --data " +
                           (c.dir / "batch.jsonl").string() + " --out " + out;
  for (const std::string flags :
       {"", " --use_full_attn True", " --use_full_attn False", " --use_full_attn False --mini_sequence False",
        " --use_full_attn False --gradient_checkpointing False",
        " --use_full_attn False --mini_sequence False --gradient_checkpointing False"}) {
    SCOPED_TRACE(flags);
    const bool s2 = flags.find("--use_full_attn False") != std::string::npos;
    auto r = test::run_miniseq(base + flags);
    ASSERT_EQ(r.status, 0) << r.out;
    SafetensorsFile grads(out);
    const double want = s2 ? c.meta("loss") : c.meta("loss_full");
    EXPECT_NEAR(std::stod(grads.metadata().at("loss")), want, 1e-6 * want);
    const std::string attention =
        s2 ? "attention S2-Attn, groups of " + std::to_string(StepPolicy::s2_group_size(c.batch.seq))
           : "attention full";
    EXPECT_NE(r.out.find(attention), std::string::npos) << r.out;
    if (!s2) continue;
    Result res;
    res.loss = std::stod(grads.metadata().at("loss"));
    for (const auto& t : grads.tensors()) {
      std::vector<float>& v = res.grads[t.name];
      v.resize(static_cast<size_t>(t.numel()));
      grads.read(t.name, Tensor(v.data(), Shape::from(t.shape)));
    }
    compare(c, res, "grads.safetensors");
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, S2Golden, ::testing::ValuesIn(s2_cases()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(S2Golden);

TEST(S2Attn, GoldensArePresent) {
  EXPECT_EQ(s2_cases(), (std::vector<std::string>{"llama_gqa", "mistral_window", "qwen2_kv1_partial"}));
}

// `miniseq train` takes LongLoRA's default, --use_full_attn False: its step is the S² step (one block of
// random tokens, one step: the logged loss is that block's loss under each attention), and True gives full
// attention.
TEST(S2Attn, TrainingUsesS2UnlessUseFullAttn) {
  const std::vector<std::string> flags = {"--max_steps",
                                          "1",
                                          "--save_strategy",
                                          "no",
                                          "--logging_steps",
                                          "1",
                                          "--model_max_length",
                                          "24",
                                          "--per_device_train_batch_size",
                                          "1"};
  TrainArgs a = test::parse_train_args(flags);
  EXPECT_FALSE(a.use_full_attn);
  EXPECT_TRUE(policy_from(a).s2_attn);
  std::vector<std::string> full_flags = flags;
  full_flags.insert(full_flags.end(), {"--use_full_attn", "True"});
  EXPECT_FALSE(policy_from(test::parse_train_args(full_flags)).s2_attn);
  EXPECT_NE(train_flags().help().find("--use_full_attn"), std::string::npos);

  test::TempDir tmp;
  const Dataset data = test::random_blocks(1, 24, 131, 3);
  const TokenBatch batch = data.batch({0});
  const ModelConfig config = load_model_config(test::train_test_model().string());
  auto direct = [&](bool s2) {
    auto be = make_cpu_backend();
    StepPolicy p;
    p.s2_attn = s2;
    MemoryPlan plan = MemoryPlan::real(Device::CPU, size_t{64} << 20);
    Decoder model(config, *be, plan);
    load_params(SafetensorsModel(test::train_test_model().string()), config, model.weights());
    model.zero_grads();
    return model.forward_backward(batch, p, batch.count_targets()) /
           static_cast<double>(batch.count_targets());
  };
  for (bool full : {false, true}) {
    SCOPED_TRACE(full ? "--use_full_attn True" : "default (--use_full_attn False)");
    a = test::parse_train_args(full ? full_flags : flags);
    a.output_dir = tmp.file(full ? "full" : "s2");
    run_training(test::tiny_setup(a, data));
    const std::vector<double> loss = test::logged(a.output_dir, "loss");
    ASSERT_EQ(loss.size(), 1u);
    const double want = direct(!full);
    EXPECT_NEAR(loss[0], want, 1e-6 * want);
    EXPECT_GT(std::abs(loss[0] - direct(full)), 1e-4 * want) << "the two attentions give the same loss";
  }
}

// Gradient accumulation over four micro-batches of one sequence equals one batch of four under S²-Attn (each
// sequence has its own groups): the gradients agree to fp32 summation order.
TEST(S2Attn, AccumulatedGradientsEqualTheLargerBatch) {
  const Dataset data = test::random_blocks(4, 24, 131, 11);
  const ModelConfig config = load_model_config(test::train_test_model().string());
  for (bool s2 : {true, false}) {
    SCOPED_TRACE(s2 ? "S2-Attn" : "full attention");
    StepPolicy p;
    p.s2_attn = s2;
    auto be = make_cpu_backend();
    MemoryPlan plan = MemoryPlan::real(Device::CPU, size_t{64} << 20);
    Decoder model(config, *be, plan);
    load_params(SafetensorsModel(test::train_test_model().string()), config, model.weights());
    const TokenBatch whole = data.batch({0, 1, 2, 3});
    const int64_t n = whole.count_targets();
    model.zero_grads();
    model.forward_backward(whole, p, n);
    std::map<std::string, std::vector<float>> g4;
    model.grads().for_each(
        [&](const ParamSpec& s, const Tensor& g) { g4[s.name].assign(g.f32(), g.f32() + g.numel()); });
    model.zero_grads();
    for (int64_t b = 0; b < 4; ++b) model.forward_backward(data.batch({b}), p, n);
    double worst = 0;
    model.grads().for_each([&](const ParamSpec& s, const Tensor& g) {
      const double e = rel_l2(std::vector<float>(g.f32(), g.f32() + g.numel()), g4.at(s.name));
      worst = std::max(worst, e);
      EXPECT_LE(e, 1e-6) << s.name;
    });
    std::printf("[s2] %s: accumulation of 4 x 1 vs batch 4, worst gradient rel-L2 %.2e\n",
                s2 ? "S2-Attn" : "full attention", worst);
  }
}
