// Host offload (memory policies beyond MsT): the optimizer state and fp32 master weights on the host with a CPU
// AdamW beside the backward, and checkpointed layer inputs on the host. On the CPU backend the same bits move, so
// every policy must give exactly the default policy's losses, norms and weights, also across a resume; and the
// planner must see the policies (device memory falls, host memory holds what moved) and reach the targets
// for Mistral-7B.
#include <gtest/gtest.h>

#include <filesystem>

#include "miniseq/io/safetensors.h"
#include "miniseq/model/param_spec.h"
#include "miniseq/model/planner.h"
#include "miniseq/train/trainer.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

using namespace miniseq;
namespace fs = std::filesystem;

namespace {

const fs::path kModel = test::train_test_model();
using test::logged;
using test::random_blocks;
using test::read_weights;
using test::tiny_setup;

TrainArgs base_args(const std::string& out) {
  TrainArgs a = test::parse_train_args({"--max_steps", "4", "--learning_rate", "2e-3", "--warmup_steps", "1", "--logging_steps", "1",
                       "--model_max_length", "20", "--per_device_train_batch_size", "2", "--save_strategy", "no",
                       "--weight_decay", "0.01", "--max_grad_norm", "1.0"});
  a.output_dir = out;
  return a;
}

}  // namespace

TEST(TrainOffload, HostPoliciesGiveTheDefaultPolicysBits) {
  test::TempDir tmp;
  const Dataset data = random_blocks(4, 20, 131, 31);
  const TrainResult base = run_training(tiny_setup(base_args(tmp.file("default")), data));
  struct Variant {
    const char* name;
    bool offload_optimizer, in_backward;
    int64_t offload_layers;
    int64_t accumulation;
  };
  for (const Variant v : {Variant{"host_optimizer", true, false, 0, 1}, Variant{"host_optimizer_fused", true, true, 0, 1},
                          Variant{"host_checkpoints", false, false, -1, 1},
                          Variant{"host_everything", true, true, 1, 1}}) {
    SCOPED_TRACE(v.name);
    TrainArgs a = base_args(tmp.file(v.name));
    a.offload_optimizer = v.offload_optimizer;
    a.optimizer_in_backward = v.in_backward;
    a.offload_checkpoints = v.offload_layers;
    const TrainResult r = run_training(tiny_setup(a, data));
    EXPECT_GT(r.planned_host.peak_bytes, 0u);
    // The device holds less. Offloading both layers of this 2-layer model saves nothing: a layer's backward keeps
    // its uploaded input and the prefetched next one (PlannerOffload.HostHoldsWhatLeavesTheDevice has the sum).
    if (v.offload_optimizer) {
      EXPECT_LT(r.planned.peak_bytes, base.planned.peak_bytes);
    } else {
      EXPECT_LE(r.planned.peak_bytes, base.planned.peak_bytes);
    }
    EXPECT_EQ(r.last_loss, base.last_loss);
    EXPECT_EQ(read_weights(tmp.file(v.name)), read_weights(tmp.file("default")));
    EXPECT_EQ(logged(tmp.file(v.name), "loss"), logged(tmp.file("default"), "loss"));
    EXPECT_EQ(logged(tmp.file(v.name), "grad_norm"), logged(tmp.file("default"), "grad_norm"));
  }
  // Gradient accumulation keeps persistent gradients; the host optimizer then runs once per step.
  TrainArgs a = base_args(tmp.file("ga_default"));
  a.gradient_accumulation_steps = 2;
  a.per_device_train_batch_size = 1;
  run_training(tiny_setup(a, data));
  a.output_dir = tmp.file("ga_host");
  a.offload_optimizer = true;
  a.offload_checkpoints = 1;
  run_training(tiny_setup(a, data));
  EXPECT_EQ(read_weights(tmp.file("ga_host")), read_weights(tmp.file("ga_default")));
}

TEST(TrainOffload, ResumeWithTheOptimizerOnTheHostIsBitExact) {
  test::TempDir tmp;
  const Dataset data = random_blocks(4, 20, 131, 32);
  TrainArgs a = base_args(tmp.file("straight"));
  a.offload_optimizer = true;
  a.optimizer_in_backward = true;
  run_training(tiny_setup(a, data));
  TrainArgs b = a;
  b.output_dir = tmp.file("resumed");
  b.max_steps = 2;
  b.save_strategy = SaveStrategy::Steps;
  b.save_steps = 2;
  run_training(tiny_setup(b, data));
  ASSERT_TRUE(fs::exists(tmp.file("resumed/checkpoint-2/optimizer.safetensors")));
  // The host optimizer's fp32 master weights are in the checkpoint.
  SafetensorsFile opt(tmp.file("resumed/checkpoint-2/optimizer.safetensors"));
  EXPECT_NE(opt.find("master.model.embed_tokens.weight"), nullptr);
  b.max_steps = 4;
  b.resume_from_checkpoint = "True";
  run_training(tiny_setup(b, data));
  EXPECT_EQ(read_weights(tmp.file("resumed")), read_weights(tmp.file("straight")));
}

TEST(PlannerOffload, HostHoldsWhatLeavesTheDevice) {
  ModelConfig c = load_model_config(kModel.string());
  c.num_hidden_layers = 6;  // the plan only: deep enough that offloading layer inputs pays for its two buffers
  const auto specs = param_specs(c);
  int64_t params = 0, largest = 0;
  for (const auto& s : specs) params += s.shape.numel(), largest = std::max(largest, s.shape.numel());
  const int64_t B = 2, S = 64;
  StepPolicy p;
  PlanTarget t = PlanTarget::cpu();
  t.optimizer_in_backward = true;
  const RunPlan dev = plan_run(c, B, S, p, t);
  EXPECT_EQ(dev.host.peak_bytes, 0u);
  t.offload_optimizer = true;
  const RunPlan host_opt = plan_run(c, B, S, p, t);
  // The device loses the two fp32 moments; the host gets master + moments (fp32) + staging slots.
  EXPECT_EQ(host_opt.host.peak_bytes, static_cast<size_t>(4 * (3 * params + kHostStagingSlots * largest)));
  EXPECT_EQ(dev.device.peak_bytes - host_opt.device.peak_bytes, static_cast<size_t>(8 * params));
  // Offloading layer inputs moves L·T·d to the host. The device keeps two [T, d] buffers during a layer's
  // backward (its own input, uploaded, and the next layer's, prefetched): it saves (L − 2)·T·d.
  t.offload_layers = -1;
  const RunPlan all = plan_run(c, B, S, p, t);
  const size_t layer_input = static_cast<size_t>(B * S * c.hidden_size * 4);
  EXPECT_EQ(all.host.peak_bytes, host_opt.host.peak_bytes + c.num_hidden_layers * layer_input);
  EXPECT_EQ(host_opt.device.peak_bytes - all.device.peak_bytes, (c.num_hidden_layers - 2) * layer_input);
  // min_offload_layers: the fewest that fit.
  const size_t budget = (all.device.arena_bytes + host_opt.device.arena_bytes) / 2;
  const int64_t k = min_offload_layers(c, B, S, p, t, budget, 0);
  ASSERT_GE(k, 1);
  t.offload_layers = k;
  EXPECT_LE(plan_run(c, B, S, p, t).device.arena_bytes, budget);
  t.offload_layers = k - 1;
  EXPECT_GT(plan_run(c, B, S, p, t).device.arena_bytes, budget);
  // A host budget that cannot take it: no fit.
  t.offload_layers = -1;
  EXPECT_EQ(min_offload_layers(c, B, S, p, t, budget, 1024), -1);
}

TEST(PlannerOffload, AutoClimbsThePolicyLadder) {
  const ModelConfig c = load_model_config(kModel.string());
  const int64_t B = 1, S = 512;
  StepPolicy p;
  auto rung = [&](size_t budget) {
    PlanTarget t = PlanTarget::cpu();
    StepPolicy q = p;
    std::string name;
    return auto_policy(c, B, S, budget, 0, &t, &q, &name) ? name : std::string("none");
  };
  const auto ladder = policy_ladder(PlanTarget::cpu());
  std::vector<size_t> need;
  for (const auto& [name, t] : ladder) {
    PlanTarget tt = t;
    if (tt.offload_layers < 0) tt.offload_layers = c.num_hidden_layers;
    need.push_back(plan_run(c, B, S, p, tt).device.arena_bytes);
  }
  EXPECT_EQ(rung(need[0]), ladder[0].first);
  EXPECT_EQ(rung(need[1]), ladder[1].first);
  EXPECT_EQ(rung(need[2]), ladder[2].first);
  EXPECT_EQ(rung(need[3]), ladder[3].first);
  EXPECT_EQ(rung(need[4]), ladder[4].first);
}

// The targets, from the planner on the real Mistral-7B config with the CUDA backend's dtypes: full
// fine-tuning at >= 256K tokens on an 80 GiB device and >= 512K on a 141 GiB device, with 128 GiB of host memory.
TEST(PlannerOffload, Mistral7BReachesTheTargetLengths) {
  const ModelConfig c = load_model_config((fs::path(MINISEQ_SOURCE_DIR) / "bench/configs/mistral-7b.json").string());
  StepPolicy p;
  PlanTarget t = PlanTarget::cuda();
  t.optimizer_in_backward = t.offload_optimizer = true;
  t.offload_layers = -1;
  const size_t host = size_t{128} << 30;
  EXPECT_GE(find_max_length(c, 1, p, t, size_t{80} << 30, int64_t{1} << 24, host), 256 * 1024);
  EXPECT_GE(find_max_length(c, 1, p, t, size_t{141} << 30, int64_t{1} << 24, host), 512 * 1024);
}
