// The training step on CUDA against Hugging Face: loss and every gradient of the tiny golden models
// (tests/data/golden, docs/goldens.md) with bf16 weights and activations, for the default policy (MsT +
// checkpointing) and for small chunks with remainders; and bitwise repeatability of two identical runs.
//
// Tolerances (u = 2^-8, bf16's unit roundoff). The golden's fp32 run repeats each computation with fp32
// roundings (u32 = 2^-24); errors.json holds its per-tensor error against fp64, noise32 = κ·u32, where κ is
// how much this tensor's computation amplifies rounding errors (cancellation makes κ large for layer-1 q/k
// projections). Our run is the same computation with bf16 roundings (u instead of u32) and bf16-rounded
// weights, so we expect ≈ κ·u and allow rel-L2 <= 8u·max(1, κ): a factor 8 over the expectation for the tail
// over tensors and for the few extra roundings per op (HF's RMSNorm rounds n before w·n; attention rounds P
// and dS). The loss: each target's term lse − logit is formed in fp32 from bf16 logits (|logit| < 4 here), so
// |Δloss| <= 2u·|loss|.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "miniseq/backend/cuda/cuda_backend.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/model/decoder.h"
#include "miniseq/ops/dry_backend.h"
#include "support/op_check.h"
#include "support/goldens.h"
#include "support/tmpdir.h"

using namespace miniseq;
using test::rel_l2;
namespace fs = std::filesystem;

namespace {

constexpr double kUb = 0x1p-8;
const fs::path kGolden = test::golden_dir();


struct Result {
  double loss = 0;
  std::map<std::string, std::vector<float>> grads;
};

Result run_case(const std::string& name, const StepPolicy& policy) {
  const fs::path dir = kGolden / name;
  const ModelConfig config = load_model_config((dir / "model").string());
  const TokenBatch batch = read_token_batch_jsonl((dir / "batch.jsonl").string(), config.vocab_size);
  const int64_t n = batch.count_targets();
  auto be = make_backend(Device::CUDA);
  MemReport planned;
  {
    MemoryPlan dry = MemoryPlan::dry(Device::CUDA);
    DryBackend dbe(Device::CUDA, be->param_dtype(), be->grad_dtype(), be->activation_dtype());
    Decoder m(config, dbe, dry);
    m.forward_backward(batch, policy, n);
    planned = dry.report();
  }
  MemoryPlan plan = MemoryPlan::real(Device::CUDA, planned.arena_bytes);
  Decoder model(config, *be, plan);
  cuda::load_params_to_device(SafetensorsModel((dir / "model").string()), config, model.weights());
  model.zero_grads();
  Result r;
  r.loss = model.forward_backward(batch, policy, n) / double(n);
  EXPECT_EQ(plan.report().peak_bytes, planned.peak_bytes);
  model.grads().for_each([&](const ParamSpec& s, const Tensor& g) {
    std::vector<float> h(static_cast<size_t>(g.numel()));
    cuda::download(Tensor(h.data(), g.shape), g);
    r.grads[s.name] = std::move(h);
  });
  return r;
}

// name: a case of tests/data/golden, or "s2/<case>" of the S²-Attn goldens (tools/s2_attn_reference.py), whose
// errors.json is tests/data/golden/s2/errors.json.
std::map<std::string, double> fp32_noise(const std::string& name) {
  std::map<std::string, double> noise;
  const bool s2 = name.rfind("s2/", 0) == 0;
  const std::string key = s2 ? name.substr(3) : name;
  auto j = nlohmann::json::parse(test::read_text((kGolden / (s2 ? "s2/errors.json" : "errors.json")).string()));
  for (auto it = j["cases"][key]["grad_rel_err"].begin(); it != j["cases"][key]["grad_rel_err"].end(); ++it)
    noise[it.key()] = it.value().get<double>();
  return noise;
}

void compare_to_golden(const std::string& name, const std::string& label, const Result& r) {
  SafetensorsFile golden((kGolden / name / "grads.safetensors").string());
  const double ref_loss = std::stod(golden.metadata().at("loss"));
  std::printf("[golden] %-20s %-14s loss %.7f golden %.7f rel %.2e (tol %.2e)\n", name.c_str(), label.c_str(),
              r.loss, ref_loss, std::abs(r.loss - ref_loss) / std::abs(ref_loss), 2 * kUb);
  EXPECT_NEAR(r.loss, ref_loss, 2 * kUb * std::abs(ref_loss)) << name << " " << label;
  const auto noise = fp32_noise(name);
  EXPECT_EQ(golden.tensors().size(), r.grads.size());
  double worst = 0, worst_ratio = 0;
  std::string worst_name;
  for (const auto& t : golden.tensors()) {
    auto it = r.grads.find(t.name);
    ASSERT_NE(it, r.grads.end()) << name << ": no gradient for " << t.name;
    std::vector<float> ref(static_cast<size_t>(t.numel()));
    golden.read(t.name, Tensor(ref.data(), Shape::from(t.shape)));
    const double kappa = noise.count(t.name) ? noise.at(t.name) / 0x1p-24 : 1.0;
    const double tol = 8 * kUb * std::max(1.0, kappa);
    const double err = rel_l2(it->second.data(), ref.data(), t.numel());
    if (err / tol > worst_ratio) worst_ratio = err / tol, worst = err, worst_name = t.name;
    EXPECT_LE(err, tol) << name << " " << label << " " << t.name << " (kappa " << kappa << ")";
  }
  std::printf("[golden] %-20s %-14s worst grad %s rel-L2 %.2e (%.0f%% of its tol)\n", name.c_str(),
              label.c_str(), worst_name.c_str(), worst, 100 * worst_ratio);
}

class GradGoldenCuda : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() { cuda::register_cuda_backend(); }
};

}  // namespace

TEST_P(GradGoldenCuda, MatchesHuggingFaceInBf16) {
  const std::string name = GetParam();
  StepPolicy def;  // MsT + checkpointing, default chunks
  StepPolicy small;
  small.mlp_chunk_tokens = 7;
  small.lm_head_chunks = 5;
  StepPolicy plain;
  plain.mini_sequence = false;
  plain.checkpointing = false;
  const Result a = run_case(name, def);
  compare_to_golden(name, "mst+ckpt", a);
  compare_to_golden(name, "chunks 7/5", run_case(name, small));
  compare_to_golden(name, "no mst/ckpt", run_case(name, plain));
  // Two identical runs: bitwise-identical loss and gradients.
  const Result b = run_case(name, def);
  EXPECT_EQ(std::memcmp(&a.loss, &b.loss, sizeof a.loss), 0) << "loss differs between identical runs";
  for (const auto& [tname, g] : a.grads)
    EXPECT_EQ(std::memcmp(g.data(), b.grads.at(tname).data(), g.size() * sizeof(float)), 0)
        << tname << " differs between identical runs";
}

INSTANTIATE_TEST_SUITE_P(Cases, GradGoldenCuda, ::testing::ValuesIn(test::golden_cases("grads.safetensors")),
                         [](const auto& info) { return info.param; });

// S²-Attn in training (--use_full_attn False) against the Python reference (tests/data/golden/s2, docs/s2attn.md):
// the attention kernels' per-head groups, forward and backward, with GQA, a sliding window and a partial last
// group; same tolerances.
std::vector<std::string> s2_cases() {
  std::vector<std::string> cases;
  if (!fs::exists(kGolden / "s2")) return cases;
  for (const auto& e : fs::directory_iterator(kGolden / "s2"))
    if (fs::exists(e.path() / "grads.safetensors")) cases.push_back(e.path().filename().string());
  std::sort(cases.begin(), cases.end());
  return cases;
}

class S2GoldenCuda : public GradGoldenCuda {};

TEST_P(S2GoldenCuda, MatchesReferenceInBf16) {
  const std::string name = "s2/" + GetParam();
  StepPolicy def, small, plain;
  def.s2_attn = small.s2_attn = plain.s2_attn = true;
  small.mlp_chunk_tokens = 7;
  small.lm_head_chunks = 5;
  plain.mini_sequence = plain.checkpointing = false;
  compare_to_golden(name, "s2 mst+ckpt", run_case(name, def));
  compare_to_golden(name, "s2 chunks 7/5", run_case(name, small));
  compare_to_golden(name, "s2 no mst/ckpt", run_case(name, plain));
}

INSTANTIATE_TEST_SUITE_P(Cases, S2GoldenCuda, ::testing::ValuesIn(s2_cases()),
                         [](const auto& info) { return info.param; });
