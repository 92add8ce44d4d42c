// LoRA and LoRA+ training steps against transformers + peft (tools/make_lora_goldens.py,
// tests/data/golden/<case>/lora/): with an adapter of nonzero A and B loaded from its PEFT directory and
// LongLoRA's trainable substrings, the loss and the gradient of every trained tensor (LoRA A/B under
// adapter_model names, embed/norm under HF names) for every MsT / checkpointing policy, with per-group
// gradients (optimizer in backward) and with offloaded checkpoints; frozen tensors get no gradient at all.
// Tolerances as test_grad_golden.cpp (docs/goldens.md): 1e-5 relative per tensor against HF's fp32 and the
// fp64 run, loss 1e-6.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "miniseq/io/safetensors.h"
#include "miniseq/model/adapter.h"
#include "miniseq/model/decoder.h"
#include "miniseq/model/planner.h"
#include "support/op_check.h"
#include "support/goldens.h"
#include "support/tmpdir.h"

using namespace miniseq;
using test::rel_l2;
namespace fs = std::filesystem;

namespace {


struct Result {
  double loss = 0;
  std::map<std::string, std::vector<float>> grads;
};

// Collects per-group gradients (GradStorage::PerGroup) by name; a group must arrive once.
class CollectSink final : public GradSink {
 public:
  explicit CollectSink(Result& r) : r_(r) {}
  uint64_t consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) override {
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(r_.grads.count(specs[i]->name), 0u) << specs[i]->name << " handed over twice";
      r_.grads[specs[i]->name].assign(grads[i].f32(), grads[i].f32() + grads[i].numel());
    }
    return 0;
  }

 private:
  Result& r_;
};

struct Case {
  fs::path dir;  // tests/data/golden/<case>
  ModelConfig config;
  LoraConfig lora;
  TokenBatch batch;
};

Case load_case(const std::string& name) {
  Case c;
  c.dir = test::golden_dir() / name;
  c.config = load_model_config((c.dir / "model").string());
  c.lora = read_adapter_config((c.dir / "lora/adapter").string());
  auto info = nlohmann::json::parse(test::read_text((c.dir / "lora/case.json").string()));
  c.lora.trainable_params = split_list(info["trainable_params"].get<std::string>());
  c.batch = read_token_batch_jsonl((c.dir / "batch.jsonl").string(), c.config.vocab_size);
  return c;
}

Result run(const Case& c, const StepPolicy& policy, bool per_group, int64_t offload_layers) {
  auto be = make_cpu_backend();
  PlanTarget target = plan_target_for(*be, false);
  target.lora = c.lora;
  target.optimizer_in_backward = per_group;
  target.offload_layers = offload_layers;
  const RunPlan planned = plan_run(c.config, c.batch.batch, c.batch.seq, policy, target);
  MemoryPlan plan = MemoryPlan::real(Device::CPU, planned.device.arena_bytes);
  MemoryPlan host = MemoryPlan::real(Device::CPU, planned.host.arena_bytes);
  Decoder model(c.config, *be, plan, per_group ? GradStorage::PerGroup : GradStorage::Persistent, c.lora);
  model.set_checkpoint_offload(&host, offload_layers);
  load_params(SafetensorsModel((c.dir / "model").string()), c.config, model.weights());
  load_adapter_weights((c.dir / "lora/adapter").string(), model.weights());
  model.zero_grads();
  Result r;
  CollectSink sink(r);
  const int64_t n = c.batch.count_targets();
  r.loss = model.forward_backward(c.batch, policy, n, per_group ? &sink : nullptr) / static_cast<double>(n);
  EXPECT_EQ(plan.report().peak_bytes, planned.device.peak_bytes);  // the real run follows the plan exactly
  EXPECT_EQ(plan.report().arena_bytes, planned.device.arena_bytes);
  EXPECT_EQ(host.report().peak_bytes, planned.host.peak_bytes);
  if (!per_group)
    model.grads().for_each(
        [&](const ParamSpec& s, const Tensor& g) { r.grads[s.name].assign(g.f32(), g.f32() + g.numel()); });
  return r;
}

void compare(const Case& c, const Result& r, const std::string& file) {
  SafetensorsFile golden((c.dir / "lora" / file).string());
  const double ref_loss = std::stod(golden.metadata().at(file == "grads.safetensors" ? "loss" : "loss_f64"));
  EXPECT_NEAR(r.loss, ref_loss, 1e-6 * std::abs(ref_loss)) << file;
  // Exactly the trained tensors: no gradient for a frozen one, none missing.
  EXPECT_EQ(golden.tensors().size(), r.grads.size()) << file;
  for (const auto& t : golden.tensors()) {
    auto it = r.grads.find(t.name);
    ASSERT_NE(it, r.grads.end()) << "no gradient for " << t.name;
    std::vector<float> ref(static_cast<size_t>(t.numel()));
    golden.read(t.name, Tensor(ref.data(), Shape::from(t.shape)));
    ASSERT_EQ(ref.size(), it->second.size()) << t.name;
    EXPECT_LE(rel_l2(it->second, ref), 1e-5) << t.name << " vs " << file;
  }
}

class LoraGolden : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(LoraGolden, EveryPolicyMatchesPeft) {
  const Case c = load_case(GetParam());
  struct Variant {
    std::string label;
    StepPolicy policy;
    bool per_group = false;
    int64_t offload = 0;
  };
  std::vector<Variant> variants;
  for (bool mst : {true, false})
    for (bool ckpt : {true, false}) {
      StepPolicy p;
      p.mini_sequence = mst, p.checkpointing = ckpt;
      variants.push_back({std::string("mst=") + (mst ? "on" : "off") + " ckpt=" + (ckpt ? "on" : "off"), p});
    }
  StepPolicy small;  // remainder chunks in the MLP (LoRA on down_proj runs per chunk) and the LM head
  small.mlp_chunk_tokens = 7, small.lm_head_chunks = 5;
  variants.push_back({"mst chunks 7 rows / 5 head chunks", small});
  variants.push_back({"optimizer in backward (per-group gradients)", StepPolicy{}, true});
  variants.push_back({"per-group + every checkpoint offloaded", small, true, -1});
  variants.push_back({"one checkpoint offloaded", StepPolicy{}, false, 1});
  for (const auto& v : variants) {
    SCOPED_TRACE(v.label);
    const Result r = run(c, v.policy, v.per_group, v.offload);
    compare(c, r, "grads.safetensors");
    compare(c, r, "grads_f64.safetensors");
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, LoraGolden,
                         ::testing::ValuesIn(test::golden_cases("lora/grads.safetensors")),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(LoraGolden);
