// ZeRO stages 1 and 2 (train/zero_optimizer.h): the flat layout, the planner's shards (device and host),
// equality with the unsharded AdamW in one process and on 2 ranks (mpirun; skipped without it) under every
// memory policy (offloaded shards, optimizer in backward, no master weights), sharded checkpoints resumed
// bit-exactly at the same rank count and at another one.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "miniseq/model/planner.h"
#include "miniseq/train/zero_optimizer.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

namespace miniseq {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::vector<ParamSpec> specs_of(std::initializer_list<int64_t> sizes) {
  std::vector<ParamSpec> specs;
  int i = 0;
  for (int64_t n : sizes) {
    ParamSpec s;
    s.name = std::string("model.p") + std::to_string(i++);
    s.shape = Shape{n};
    specs.push_back(s);
  }
  return specs;
}

TEST(ZeroLayout, ShardsCoverEveryElementOnceInTableOrder) {
  const auto specs = specs_of({5, 3, 9, 1});  // 18 elements
  const ZeroLayout l(specs, 4);               // S = 5: [0,5) [5,10) [10,15) [15,18)
  EXPECT_EQ(l.total, 18);
  EXPECT_EQ(l.shard, 5);
  EXPECT_EQ(l.begin(3), 15);
  EXPECT_EQ(l.end(3), 18);
  const auto p1 = l.pieces(l.begin(1), l.end(1));  // p1 whole [5,8), p2 [0,2)
  ASSERT_EQ(p1.size(), 2u);
  EXPECT_EQ(p1[0].param, 1u);
  EXPECT_EQ(p1[0].offset, 0);
  EXPECT_EQ(p1[0].count, 3);
  EXPECT_EQ(p1[1].param, 2u);
  EXPECT_EQ(p1[1].offset, 0);
  EXPECT_EQ(p1[1].count, 2);
  EXPECT_EQ(p1[1].flat, 8);
  std::vector<int> seen(18, 0);
  for (int r = 0; r < 4; ++r)
    for (const auto& p : l.pieces(l.begin(r), l.end(r)))
      for (int64_t k = 0; k < p.count; ++k) ++seen[static_cast<size_t>(p.flat + k)];
  for (int c : seen) EXPECT_EQ(c, 1);
  // More ranks than elements: the last shards are empty.
  const ZeroLayout tiny(specs_of({2}), 4);
  EXPECT_TRUE(tiny.pieces(tiny.begin(3), tiny.end(3)).empty());
}

TEST(ZeroPlan, TheOptimizerStateIsOneRanksShard) {
  const ModelConfig config = load_model_config(test::train_test_model().string());
  const TrainArgs a =
      test::parse_train_args({"--model_max_length", "32", "--per_device_train_batch_size", "1"});
  PlanTarget t = plan_target(a);
  const StepPolicy policy = policy_from(a);
  const size_t whole = plan_run(config, 1, 32, policy, t).device.peak_by_category[MemCategory::Optimizer];
  t.zero_ranks = 4;
  const size_t shard = plan_run(config, 1, 32, policy, t).device.peak_by_category[MemCategory::Optimizer];
  const auto n = static_cast<size_t>(param_count(param_specs(config)));
  // fp32 moments; 1/4 of them, each buffer rounded up to the arena's alignment.
  auto aligned = [](size_t b) {
    return (b + MemoryPlan::kAlignment - 1) / MemoryPlan::kAlignment * MemoryPlan::kAlignment;
  };
  EXPECT_GE(whole, 2 * 4 * n);
  EXPECT_EQ(shard, 2 * aligned(4 * ((n + 3) / 4)));
}

TEST(ZeroPlan, StageTwoKeepsOneRanksGradientShardAndNoFullGradient) {
  const ModelConfig config = load_model_config(test::train_test_model().string());
  const TrainArgs a =
      test::parse_train_args({"--model_max_length", "32", "--per_device_train_batch_size", "1"});
  PlanTarget t = plan_target(a);
  const StepPolicy policy = policy_from(a);
  t.zero_ranks = 4;
  const MemReport one = plan_run(config, 1, 32, policy, t).device;
  t.zero_grads = true;
  const MemReport two = plan_run(config, 1, 32, policy, t).device;
  const auto n = static_cast<size_t>(param_count(param_specs(config)));
  // Stage 1: every gradient; stage 2: the shard plus one group's gradients at a time.
  EXPECT_GE(one.peak_by_category[MemCategory::Grads], 4 * n);
  EXPECT_LT(two.peak_by_category[MemCategory::Grads], one.peak_by_category[MemCategory::Grads]);
  EXPECT_LT(two.arena_bytes, one.arena_bytes);
}

size_t aligned(size_t b) {
  return (b + MemoryPlan::kAlignment - 1) / MemoryPlan::kAlignment * MemoryPlan::kAlignment;
}

TEST(ZeroPlan, OffloadedShardsAndStagingLiveInHostMemory) {
  const ModelConfig config = load_model_config(test::train_test_model().string());
  const StepPolicy policy = policy_from(test::parse_train_args({"--model_max_length", "32"}));
  const auto specs = param_specs(config);
  const auto n = static_cast<size_t>(param_count(specs));
  for (const Device device : {Device::CPU, Device::CUDA}) {
    SCOPED_TRACE(device == Device::CPU ? "cpu" : "cuda");
    for (const bool stage2 : {false, true}) {
      SCOPED_TRACE(stage2 ? "stage 2" : "stage 1");
      PlanTarget t = device == Device::CPU ? PlanTarget::cpu() : PlanTarget::cuda();
      t.zero_ranks = 4;
      t.zero_grads = stage2;
      const RunPlan on_device = plan_run(config, 1, 32, policy, t);
      t.offload_optimizer = true;
      const RunPlan off = plan_run(config, 1, 32, policy, t);
      const size_t S = (n + 3) / 4;
      // Host: exp_avg, exp_avg_sq and the fp32 master of one rank's S elements (the master even where the
      // weights are fp32: the host updates it), and room for the largest piece of one parameter.
      EXPECT_EQ(off.host.peak_by_category[MemCategory::Optimizer], 3 * aligned(4 * S));
      EXPECT_EQ(off.host.peak_by_category[MemCategory::Workspace],
                aligned(4 * static_cast<size_t>(zero_staging_floats(specs, 4))));
      EXPECT_EQ(off.host.peak_bytes,
                3 * aligned(4 * S) + aligned(4 * static_cast<size_t>(zero_staging_floats(specs, 4))));
      // Device: no optimizer state; the same gradients (stage 2: the shard and one group at a time).
      EXPECT_EQ(off.device.peak_by_category[MemCategory::Optimizer], 0u);
      EXPECT_EQ(off.device.peak_by_category[MemCategory::Grads],
                on_device.device.peak_by_category[MemCategory::Grads]);
      EXPECT_EQ(on_device.device.peak_by_category[MemCategory::Optimizer],
                (device == Device::CUDA ? 3 : 2) * aligned(4 * S));
      EXPECT_EQ(on_device.host.peak_bytes, 0u);
      // Without master weights (CUDA's bf16 weights updated by stochastic rounding): no master shard.
      t.offload_optimizer = false;
      t = with_precision(t, /*master_weights=*/false, DType::F32);
      EXPECT_EQ(plan_run(config, 1, 32, policy, t).device.peak_by_category[MemCategory::Optimizer],
                2 * aligned(4 * S));
      // The optimizer in backward: the same shards, per-group gradients; no full gradient (stage 1) and no
      // gradient shard (stage 2: one piece's sum at a time).
      t = with_precision(t, /*master_weights=*/true, DType::F32);
      t.optimizer_in_backward = true;
      const RunPlan fused = plan_run(config, 1, 32, policy, t);
      EXPECT_EQ(fused.device.peak_by_category[MemCategory::Optimizer],
                on_device.device.peak_by_category[MemCategory::Optimizer]);
      EXPECT_LT(fused.device.peak_by_category[MemCategory::Grads],
                on_device.device.peak_by_category[MemCategory::Grads]);
      EXPECT_LT(fused.device.peak_by_category[MemCategory::Grads], 4 * n);
    }
  }
  // The staging is the largest part of one parameter within one shard.
  EXPECT_EQ(zero_staging_floats(specs_of({5, 3, 9, 1}), 4), 5);
  EXPECT_EQ(zero_staging_floats(specs_of({5, 3, 9, 1}), 1), 9);
}

TEST(ZeroPlan, MemplanPlansOffloadedShardsAndTheOptimizerInBackward) {
  const std::string model = test::source_dir() + "/tests/data/golden/llama_basic/model";
  const std::string base = "memplan --model " + model + " --model_max_length 64 --json --data_parallel 2 ";
  const auto dev = test::run_miniseq(base + "--zero_stage 1");
  const auto off = test::run_miniseq(base + "--zero_stage 1 --offload_optimizer True");
  const auto fused =
      test::run_miniseq(base + "--zero_stage 2 --offload_optimizer True --optimizer_in_backward True");
  ASSERT_EQ(dev.status, 0) << dev.out;
  ASSERT_EQ(off.status, 0) << off.out;
  ASSERT_EQ(fused.status, 0) << fused.out;
  const auto d = nlohmann::json::parse(dev.out), o = nlohmann::json::parse(off.out),
             f = nlohmann::json::parse(fused.out);
  const auto n = static_cast<size_t>(d["parameters"].get<int64_t>());
  const size_t S = (n + 1) / 2;
  EXPECT_EQ(o["peak_by_category"]["optimizer"], 0);
  EXPECT_EQ(o["host"]["peak_by_category"]["optimizer"].get<size_t>(), 3 * aligned(4 * S));
  EXPECT_EQ(d["peak_by_category"]["optimizer"].get<size_t>(), 2 * aligned(4 * S));
  EXPECT_FALSE(d.contains("host"));  // nothing offloaded
  EXPECT_EQ(f["optimizer_in_backward"], true);
  EXPECT_EQ(f["host"]["peak_by_category"]["optimizer"], o["host"]["peak_by_category"]["optimizer"]);
  EXPECT_LT(f["peak_by_category"]["grads"].get<int64_t>(), o["peak_by_category"]["grads"].get<int64_t>());
}

TEST(ZeroPlan, TheRefusalBeforeStepZeroCountsOneRanksShard) {
  // A budget that holds one rank's plan (1/8 of the moments) but not the whole moments: the quick floor
  // before the dry run must not refuse it.
  const ModelConfig config = load_model_config(test::train_test_model().string());
  const TrainArgs a = test::parse_train_args({"--model_max_length", "16", "--per_device_train_batch_size",
                                              "1", "--zero_stage", "1", "--data_parallel", "8"});
  const size_t fits = plan_training_run(config, a, policy_from(a)).device.arena_bytes;
  const auto n = static_cast<size_t>(param_count(param_specs(config)));
  ASSERT_LT(fits, 12 * n);  // below the weights and fp32 moments of every parameter
  EXPECT_NO_THROW(plan_or_refuse(config, a, fits));
  EXPECT_THROW(plan_or_refuse(config, a, fits - MemoryPlan::kAlignment), Error);
}

TEST(ZeroPlan, MemplanPlansOneRanksShard) {
  const std::string model = test::source_dir() + "/tests/data/golden/llama_basic/model";
  const auto whole = test::run_miniseq("memplan --model " + model + " --model_max_length 64 --json");
  const auto shard = test::run_miniseq("memplan --model " + model +
                                       " --model_max_length 64 --data_parallel 4 --zero_stage 1 --json");
  ASSERT_EQ(whole.status, 0) << whole.out;
  ASSERT_EQ(shard.status, 0) << shard.out;
  const auto w = nlohmann::json::parse(whole.out), z = nlohmann::json::parse(shard.out);
  EXPECT_EQ(z["zero_stage"], 1);
  EXPECT_EQ(z["data_parallel"], 4);
  const auto opt_w = w["peak_by_category"]["optimizer"].get<int64_t>(),
             opt_z = z["peak_by_category"]["optimizer"].get<int64_t>();
  EXPECT_LE(opt_z, opt_w / 4 + 2 * static_cast<int64_t>(MemoryPlan::kAlignment));
  EXPECT_EQ(z["peak_by_category"]["weights"], w["peak_by_category"]["weights"]);
  const auto refused =
      test::run_miniseq("memplan --model " + model + " --model_max_length 64 --zero_stage 3 2>&1");
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.out.find("--zero_stage must be 0, 1 or 2"), std::string::npos) << refused.out;
}

TEST(ZeroFlags, EveryMemoryPolicyIsTakenButBf16GradientShards) {
  EXPECT_THROW(test::parse_train_args({"--zero_stage", "3"}), Error);
  EXPECT_THROW(test::parse_train_args({"--zero_stage", "2", "--grad_dtype", "bfloat16"}), Error);
  // The host optimizer keeps fp32 master weights, sharded or not.
  EXPECT_THROW(test::parse_train_args(
                   {"--zero_stage", "1", "--offload_optimizer", "True", "--master_weights", "False"}),
               Error);
  for (const char* stage : {"1", "2"}) {
    EXPECT_NO_THROW(test::parse_train_args({"--zero_stage", stage}));
    EXPECT_NO_THROW(test::parse_train_args({"--zero_stage", stage, "--offload_optimizer", "True"}));
    EXPECT_NO_THROW(test::parse_train_args({"--zero_stage", stage, "--optimizer_in_backward", "True"}));
    EXPECT_NO_THROW(test::parse_train_args({"--zero_stage", stage, "--master_weights", "False"}));
    EXPECT_NO_THROW(test::parse_train_args(
        {"--zero_stage", stage, "--offload_optimizer", "True", "--optimizer_in_backward", "True"}));
  }
}

TEST(ZeroTrain, OneRankEqualsTheUnshardedAdamWAndResumesBitExactly) {
  TempDir tmp;
  const Dataset data = test::random_blocks(8, 16, 131, 21);
  auto args = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> a = {"--max_steps",
                                  "5",
                                  "--learning_rate",
                                  "1e-3",
                                  "--weight_decay",
                                  "0.01",
                                  "--model_max_length",
                                  "16",
                                  "--per_device_train_batch_size",
                                  "1",
                                  "--gradient_accumulation_steps",
                                  "2",
                                  "--save_steps",
                                  "3",
                                  "--logging_steps",
                                  "1",
                                  "--output_dir",
                                  out};
    a.insert(a.end(), extra.begin(), extra.end());
    return test::parse_train_args(a);
  };
  run_training(test::tiny_setup(args(tmp.file("plain"), {}), data));
  run_training(test::tiny_setup(args(tmp.file("zero"), {"--zero_stage", "1"}), data));
  // The same AdamW arithmetic on the same elements: the same bits.
  EXPECT_EQ(test::read_weights(tmp.file("zero")), test::read_weights(tmp.file("plain")));
  EXPECT_TRUE(fs::exists(tmp.file("zero/checkpoint-3/" + ZeroAdamW::shard_file(0, 1))));
  EXPECT_FALSE(fs::exists(tmp.file("zero/checkpoint-3/optimizer.safetensors")));

  // Resumed from step 3: the same bits as the uninterrupted run.
  run_training(test::tiny_setup(args(tmp.file("resumed"), {"--zero_stage", "1", "--resume_from_checkpoint",
                                                           tmp.file("zero/checkpoint-3")}),
                                data));
  EXPECT_EQ(test::read_weights(tmp.file("resumed")), test::read_weights(tmp.file("zero")));

  // A sharded checkpoint resumed without --zero_stage: refused with what to do.
  try {
    run_training(test::tiny_setup(
        args(tmp.file("wrong"), {"--resume_from_checkpoint", tmp.file("zero/checkpoint-3")}), data));
    FAIL() << "a sharded checkpoint was resumed without --zero_stage";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("resume it with --zero_stage 1 or 2"), std::string::npos)
        << e.what();
  }
}

TEST(ZeroTrain, StageTwoOnOneRankEqualsTheUnshardedAdamW) {
  TempDir tmp;
  const Dataset data = test::random_blocks(8, 16, 131, 22);
  auto args = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> a = {"--max_steps",
                                  "4",
                                  "--learning_rate",
                                  "1e-3",
                                  "--weight_decay",
                                  "0.01",
                                  "--model_max_length",
                                  "16",
                                  "--per_device_train_batch_size",
                                  "2",
                                  "--save_steps",
                                  "2",
                                  "--logging_steps",
                                  "1",
                                  "--output_dir",
                                  out};
    a.insert(a.end(), extra.begin(), extra.end());
    return test::parse_train_args(a);
  };
  // One micro-batch per step: the same gradients (each group's, added to a zero shard) and the same norm.
  run_training(test::tiny_setup(args(tmp.file("plain"), {}), data));
  run_training(test::tiny_setup(args(tmp.file("zero2"), {"--zero_stage", "2"}), data));
  EXPECT_EQ(test::read_weights(tmp.file("zero2")), test::read_weights(tmp.file("plain")));
  run_training(test::tiny_setup(args(tmp.file("resumed"), {"--zero_stage", "2", "--resume_from_checkpoint",
                                                           tmp.file("zero2/checkpoint-2")}),
                                data));
  EXPECT_EQ(test::read_weights(tmp.file("resumed")), test::read_weights(tmp.file("zero2")));
  // Two micro-batches: the second is added to the shard rather than accumulated in the backward's buffer.
  run_training(test::tiny_setup(args(tmp.file("plain_ga"), {"--gradient_accumulation_steps", "2"}), data));
  run_training(test::tiny_setup(
      args(tmp.file("zero2_ga"), {"--gradient_accumulation_steps", "2", "--zero_stage", "2"}), data));
  const auto a = test::read_weights(tmp.file("zero2_ga")), b = test::read_weights(tmp.file("plain_ga"));
  for (const auto& [name, wb] : b) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < wb.size(); ++i) {
      const double d = static_cast<double>(a.at(name)[i]) - wb[i];
      num += d * d, den += static_cast<double>(wb[i]) * wb[i];
    }
    EXPECT_LT(std::sqrt(num / std::max(den, 1e-300)), 1e-6) << name;
  }
}

// Every memory policy with ZeRO on one process gives the unsharded AdamW's bits (the same arithmetic on the
// same elements; without master weights the same rounding bits), and allocates exactly what the planner
// planned.
TEST(ZeroTrain, EveryMemoryPolicyOnOneRankEqualsTheUnshardedAdamW) {
  TempDir tmp;
  const Dataset data = test::random_blocks(8, 16, 131, 23);
  auto args = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> a = {"--max_steps",
                                  "4",
                                  "--learning_rate",
                                  "1e-3",
                                  "--weight_decay",
                                  "0.01",
                                  "--model_max_length",
                                  "16",
                                  "--per_device_train_batch_size",
                                  "2",
                                  "--save_strategy",
                                  "no",
                                  "--logging_steps",
                                  "1",
                                  "--output_dir",
                                  out};
    a.insert(a.end(), extra.begin(), extra.end());
    return test::parse_train_args(a);
  };
  run_training(test::tiny_setup(args(tmp.file("plain"), {}), data));
  run_training(test::tiny_setup(args(tmp.file("plain_sr"), {"--master_weights", "False"}), data));
  run_training(test::tiny_setup(args(tmp.file("plain_bf16"), {"--moments_dtype", "bfloat16"}), data));
  struct Variant {
    const char* name;
    std::vector<std::string> flags;
    const char* equals;
  };
  const std::vector<Variant> variants = {
      {"z1_offload", {"--zero_stage", "1", "--offload_optimizer", "True"}, "plain"},
      {"z2_offload", {"--zero_stage", "2", "--offload_optimizer", "True"}, "plain"},
      {"z1_in_backward", {"--zero_stage", "1", "--optimizer_in_backward", "True"}, "plain"},
      {"z2_in_backward", {"--zero_stage", "2", "--optimizer_in_backward", "True"}, "plain"},
      {"z2_offload_in_backward",
       {"--zero_stage", "2", "--offload_optimizer", "True", "--optimizer_in_backward", "True"},
       "plain"},
      {"z1_offload_in_backward",
       {"--zero_stage", "1", "--offload_optimizer", "True", "--optimizer_in_backward", "True"},
       "plain"},
      {"z2_everything_on_host",
       {"--zero_stage", "2", "--offload_optimizer", "True", "--optimizer_in_backward", "True",
        "--offload_checkpoints", "-1"},
       "plain"},
      {"z1_offload_bf16_moments",
       {"--zero_stage", "1", "--offload_optimizer", "True", "--moments_dtype", "bfloat16"},
       "plain_bf16"},
      {"z2_bf16_moments", {"--zero_stage", "2", "--moments_dtype", "bfloat16"}, "plain_bf16"},
      {"z1_no_master", {"--zero_stage", "1", "--master_weights", "False"}, "plain_sr"},
      {"z2_no_master", {"--zero_stage", "2", "--master_weights", "False"}, "plain_sr"},
  };
  for (const auto& v : variants) {
    SCOPED_TRACE(v.name);
    const TrainResult r = run_training(test::tiny_setup(args(tmp.file(v.name), v.flags), data));
    EXPECT_EQ(test::read_weights(tmp.file(v.name)), test::read_weights(tmp.file(v.equals)));
    EXPECT_EQ(test::logged(tmp.file(v.name), "loss"), test::logged(tmp.file(v.equals), "loss"));
    EXPECT_EQ(test::logged(tmp.file(v.name), "grad_norm"), test::logged(tmp.file(v.equals), "grad_norm"));
    // The run's arenas held exactly the planned buffers: the same peaks, device and host, per category.
    EXPECT_EQ(r.used.peak_bytes, r.planned.peak_bytes);
    EXPECT_EQ(r.used_host.peak_bytes, r.planned_host.peak_bytes);
    EXPECT_EQ(r.used.peak_by_category.bytes, r.planned.peak_by_category.bytes);
    EXPECT_EQ(r.used_host.peak_by_category.bytes, r.planned_host.peak_by_category.bytes);
    EXPECT_EQ(r.used.arena_bytes, r.planned.arena_bytes);
    EXPECT_EQ(r.used_host.arena_bytes, r.planned_host.arena_bytes);
  }
}

TEST(ZeroTrain, OffloadedShardsResumeBitExactly) {
  TempDir tmp;
  const Dataset data = test::random_blocks(8, 16, 131, 24);
  auto args = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> a = {"--max_steps",
                                  "5",
                                  "--learning_rate",
                                  "1e-3",
                                  "--weight_decay",
                                  "0.01",
                                  "--model_max_length",
                                  "16",
                                  "--per_device_train_batch_size",
                                  "1",
                                  "--gradient_accumulation_steps",
                                  "2",
                                  "--save_steps",
                                  "3",
                                  "--logging_steps",
                                  "1",
                                  "--output_dir",
                                  out};
    a.insert(a.end(), extra.begin(), extra.end());
    return test::parse_train_args(a);
  };
  const std::vector<std::string> off = {"--zero_stage", "1", "--offload_optimizer", "True"};
  run_training(test::tiny_setup(args(tmp.file("plain"), {}), data));
  run_training(test::tiny_setup(args(tmp.file("off"), off), data));
  EXPECT_EQ(test::read_weights(tmp.file("off")), test::read_weights(tmp.file("plain")));
  EXPECT_TRUE(fs::exists(tmp.file("off/checkpoint-3/" + ZeroAdamW::shard_file(0, 1))));
  auto resumed = off;
  resumed.insert(resumed.end(), {"--resume_from_checkpoint", tmp.file("off/checkpoint-3")});
  run_training(test::tiny_setup(args(tmp.file("resumed"), resumed), data));
  EXPECT_EQ(test::read_weights(tmp.file("resumed")), test::read_weights(tmp.file("off")));
  // The shard files do not depend on where the state lived: the device shards resume them, and back.
  run_training(test::tiny_setup(args(tmp.file("on_device"), {"--zero_stage", "1", "--resume_from_checkpoint",
                                                             tmp.file("off/checkpoint-3")}),
                                data));
  EXPECT_EQ(test::read_weights(tmp.file("on_device")), test::read_weights(tmp.file("off")));
}

bool have_mpirun() {
  return std::system("command -v mpirun >/dev/null 2>&1") == 0;
}

// `mpirun -np N miniseq ARGS` (N = 0: no launcher); its exit status, output in LOG.
int run(int np, const std::string& args, const std::string& log) {
  std::string command = "OMP_NUM_THREADS=1 ";
  if (np > 0) {
    command +=
        "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe --bind-to none "
        "-np ";
    command += std::to_string(np);
    command += " ";
  }
  command += MINISEQ_BINARY;
  command += " " + args + " >" + log + " 2>&1";
  const int st = std::system(command.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

double max_relative_difference(const std::string& dir_a, const std::string& dir_b) {
  const auto a = test::read_weights(dir_a), b = test::read_weights(dir_b);
  double worst = 0.0;
  for (const auto& [name, wb] : b) {
    const auto& wa = a.at(name);
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < wb.size(); ++i) {
      const double d = static_cast<double>(wa[i]) - wb[i];
      num += d * d, den += static_cast<double>(wb[i]) * wb[i];
    }
    worst = std::max(worst, std::sqrt(num / std::max(den, 1e-300)));
  }
  return worst;
}

TEST(ZeroTrain, TwoRanksEqualTheUnshardedRunAndReshardOnResume) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found (apt install openmpi-bin)";
  TempDir tmp;
  const std::string common =
      " train --preset demo --model_max_length 256 --max_steps 5 --save_steps 3 --logging_steps 1 "
      "--warmup_steps 1 --weight_decay 0.01 --save_total_limit 0 --output_dir ";
  ASSERT_EQ(run(2, common + tmp.file("plain"), tmp.file("plain.log")), 0)
      << test::read_text(tmp.file("plain.log"));
  ASSERT_EQ(run(2, common + tmp.file("zero") + " --zero_stage 1", tmp.file("zero.log")), 0)
      << test::read_text(tmp.file("zero.log"));
  EXPECT_EQ(test::read_weights(tmp.file("zero")), test::read_weights(tmp.file("plain")));
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(fs::exists(tmp.file("zero/checkpoint-3/" + ZeroAdamW::shard_file(r, 2))));

  // Resumed on 2 ranks: bit-exact. On 1 process with twice the accumulation (the same global batch), the
  // shards are read across the old boundary: equal within fp32 summation order.
  fs::create_directories(tmp.file("again"));
  fs::create_directories(tmp.file("one"));
  fs::copy(tmp.file("zero/checkpoint-3"), tmp.file("again/checkpoint-3"), fs::copy_options::recursive);
  ASSERT_EQ(run(2, common + tmp.file("again") + " --zero_stage 1 --resume_from_checkpoint True",
                tmp.file("again.log")),
            0)
      << test::read_text(tmp.file("again.log"));
  EXPECT_EQ(test::read_weights(tmp.file("again")), test::read_weights(tmp.file("zero")));
  fs::copy(tmp.file("zero/checkpoint-3"), tmp.file("one/checkpoint-3"), fs::copy_options::recursive);
  ASSERT_EQ(run(0,
                common + tmp.file("one") +
                    " --zero_stage 1 --gradient_accumulation_steps 2 --resume_from_checkpoint True",
                tmp.file("one.log")),
            0)
      << test::read_text(tmp.file("one.log"));
  const double diff = max_relative_difference(tmp.file("one"), tmp.file("zero"));
  std::printf("resumed on 1 process from 2 ranks' shards: weights after step 5 differ by %.3g (relative)\n",
              diff);
  EXPECT_LT(diff, 1e-6);
}

// Each memory policy with ZeRO on 2 ranks, 5 steps: the unsharded AdamW of one process with twice the
// accumulation within 1e-6 (the gradients summed in another order), and the bits of plain data parallelism on
// 2 ranks. The offloaded shards resume bit-exactly on 2 ranks and re-sharded on 1 process.
TEST(ZeroTrain, MemoryPoliciesOnTwoRanksEqualOneProcessAndReshardOnResume) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found (apt install openmpi-bin)";
  TempDir tmp;
  const std::string common =
      " train --preset demo --model_max_length 256 --max_steps 5 --save_steps 3 --logging_steps 1 "
      "--warmup_steps 1 --weight_decay 0.01 --save_total_limit 0 --output_dir ";
  ASSERT_EQ(run(0, common + tmp.file("one") + " --gradient_accumulation_steps 2", tmp.file("one.log")), 0)
      << test::read_text(tmp.file("one.log"));
  ASSERT_EQ(run(0, common + tmp.file("one_sr") + " --gradient_accumulation_steps 2 --master_weights False",
                tmp.file("one_sr.log")),
            0)
      << test::read_text(tmp.file("one_sr.log"));
  ASSERT_EQ(run(2, common + tmp.file("dp2"), tmp.file("dp2.log")), 0) << test::read_text(tmp.file("dp2.log"));
  ASSERT_EQ(run(2, common + tmp.file("dp2_sr") + " --master_weights False", tmp.file("dp2_sr.log")), 0)
      << test::read_text(tmp.file("dp2_sr.log"));
  struct Variant {
    const char* name;
    const char* flags;
    const char* equals;  // the 2-rank run of the same bits
  };
  for (const Variant v :
       {Variant{"z1_offload", "--zero_stage 1 --offload_optimizer True", "dp2"},
        Variant{"z2_offload", "--zero_stage 2 --offload_optimizer True", "dp2"},
        Variant{"z1_in_backward", "--zero_stage 1 --optimizer_in_backward True", "dp2"},
        Variant{"z2_in_backward", "--zero_stage 2 --optimizer_in_backward True", "dp2"},
        Variant{"z2_offload_in_backward",
                "--zero_stage 2 --offload_optimizer True --optimizer_in_backward True", "dp2"},
        Variant{"z1_no_master", "--zero_stage 1 --master_weights False", "dp2_sr"},
        Variant{"z2_no_master", "--zero_stage 2 --master_weights False", "dp2_sr"}}) {
    SCOPED_TRACE(v.name);
    ASSERT_EQ(run(2, common + tmp.file(v.name) + " " + v.flags, tmp.file(std::string(v.name) + ".log")), 0)
        << test::read_text(tmp.file(std::string(v.name) + ".log"));
    EXPECT_EQ(test::read_weights(tmp.file(v.name)), test::read_weights(tmp.file(v.equals)));
    EXPECT_EQ(test::logged(tmp.file(v.name), "loss"), test::logged(tmp.file(v.equals), "loss"));
    // Without master weights the stochastic rounding draws the same bits; an element whose sum differs in
    // the last fp32 bit may round the other way (measured: 1 element in 800 000).
    const bool sr = std::string(v.equals) == "dp2_sr";
    const double diff = max_relative_difference(tmp.file(v.name), tmp.file(sr ? "one_sr" : "one"));
    std::printf("%s on 2 ranks against 1 process with accumulation 2: weights differ by %.3g (relative)\n",
                v.name, diff);
    EXPECT_LT(diff, 1e-6);
  }
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(fs::exists(tmp.file("z1_offload/checkpoint-3/" + ZeroAdamW::shard_file(r, 2))));

  // The offloaded shards of step 3, resumed on 2 ranks: bit-exact; on 1 process with twice the accumulation
  // (re-sharded): within fp32 summation order of the uninterrupted 2-rank run.
  for (const char* dir : {"again", "single"}) {
    fs::create_directories(tmp.file(dir));
    fs::copy(tmp.file("z1_offload/checkpoint-3"), tmp.file(std::string(dir) + "/checkpoint-3"),
             fs::copy_options::recursive);
  }
  const std::string resume = " --zero_stage 1 --offload_optimizer True --resume_from_checkpoint True";
  ASSERT_EQ(run(2, common + tmp.file("again") + resume, tmp.file("again.log")), 0)
      << test::read_text(tmp.file("again.log"));
  EXPECT_EQ(test::read_weights(tmp.file("again")), test::read_weights(tmp.file("z1_offload")));
  ASSERT_EQ(run(0, common + tmp.file("single") + resume + " --gradient_accumulation_steps 2",
                tmp.file("single.log")),
            0)
      << test::read_text(tmp.file("single.log"));
  const double diff = max_relative_difference(tmp.file("single"), tmp.file("z1_offload"));
  std::printf("offloaded shards of 2 ranks resumed on 1 process: weights after step 5 differ by %.3g\n",
              diff);
  EXPECT_LT(diff, 1e-6);
}

// On 4 ranks more parameters are split between owners (a parameter's pieces on up to 4 ranks): the policies
// still give the bits of plain data parallelism.
TEST(ZeroTrain, FourRanksUnderEveryPolicyGiveTheBitsOfPlainDataParallelism) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found (apt install openmpi-bin)";
  TempDir tmp;
  const std::string common =
      " train --preset demo --model_max_length 256 --max_steps 4 --save_strategy no --logging_steps 1 "
      "--warmup_steps 1 --weight_decay 0.01 --output_dir ";
  ASSERT_EQ(run(4, common + tmp.file("dp4"), tmp.file("dp4.log")), 0) << test::read_text(tmp.file("dp4.log"));
  for (const auto& [name, flags] : std::vector<std::pair<std::string, std::string>>{
           {"in_backward", "--optimizer_in_backward True"},
           {"offload_in_backward", "--offload_optimizer True --optimizer_in_backward True"},
           {"z1_offload", "--zero_stage 1 --offload_optimizer True"},
           {"z1_in_backward", "--zero_stage 1 --optimizer_in_backward True"},
           {"z2_offload_in_backward",
            "--zero_stage 2 --offload_optimizer True --optimizer_in_backward True"}}) {
    SCOPED_TRACE(name);
    ASSERT_EQ(run(4, common + tmp.file(name) + " " + flags, tmp.file(name + ".log")), 0)
        << test::read_text(tmp.file(name + ".log"));
    EXPECT_EQ(test::read_weights(tmp.file(name)), test::read_weights(tmp.file("dp4")));
    EXPECT_EQ(test::logged(tmp.file(name), "loss"), test::logged(tmp.file("dp4"), "loss"));
  }
}

TEST(ZeroTrain, StageTwoOnTwoRanksEqualsTheUnshardedRunThroughTheEpochsEnd) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found (apt install openmpi-bin)";
  TempDir tmp;
  // 25 blocks on 2 ranks: step 13 is the epoch's last, with one block; rank 1 runs it with every label
  // ignored.
  const std::string common =
      " train --preset demo --model_max_length 256 --max_steps 13 --save_strategy no "
      "--logging_steps 1 --warmup_steps 1 --weight_decay 0.01 --output_dir ";
  ASSERT_EQ(run(2, common + tmp.file("plain"), tmp.file("plain.log")), 0)
      << test::read_text(tmp.file("plain.log"));
  ASSERT_EQ(run(2, common + tmp.file("zero2") + " --zero_stage 2", tmp.file("zero2.log")), 0)
      << test::read_text(tmp.file("zero2.log"));
  EXPECT_EQ(test::read_weights(tmp.file("zero2")), test::read_weights(tmp.file("plain")));
  EXPECT_EQ(test::logged(tmp.file("zero2"), "loss"), test::logged(tmp.file("plain"), "loss"));
  // With the optimizer in backward (each parameter updated as soon as its sum reaches the shard), offloaded.
  ASSERT_EQ(run(2,
                common + tmp.file("fused") +
                    " --zero_stage 2 --optimizer_in_backward True --offload_optimizer True",
                tmp.file("fused.log")),
            0)
      << test::read_text(tmp.file("fused.log"));
  EXPECT_EQ(test::read_weights(tmp.file("fused")), test::read_weights(tmp.file("plain")));
  EXPECT_EQ(test::logged(tmp.file("fused"), "loss"), test::logged(tmp.file("plain"), "loss"));
}

// LoRA+ on 2 data-parallel ranks: ZeRO-1 and ZeRO-2 shard the trained tensors' state alone (the frozen weights
// have none) and give the unsharded run's adapter and trainable params bit for bit; a ZeRO-1 LoRA checkpoint
// (adapter + one optimizer shard per rank) resumes bit-exactly.
TEST(ZeroTrain, LoraOnTwoRanksEqualsTheUnshardedRunAndResumes) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found (apt install openmpi-bin)";
  TempDir tmp;
  const std::string common =
      " train --preset demo --low_rank_training True --trainable_params embed,norm --model_max_length 256 "
      "--max_steps 5 --save_steps 3 --logging_steps 1 --warmup_steps 1 --weight_decay 0.01 --output_dir ";
  for (const char* name : {"plain", "zero1", "zero2"}) {
    const std::string flags = std::string(name) == "plain" ? "" : std::string(" --zero_stage ") + name[4];
    ASSERT_EQ(run(2, common + tmp.file(name) + flags, tmp.file(std::string(name) + ".log")), 0)
        << test::read_text(tmp.file(std::string(name) + ".log"));
  }
  const auto plain = test::read_lora_dir(tmp.file("plain"));
  ASSERT_FALSE(plain.empty());
  EXPECT_FALSE(fs::exists(tmp.file("plain/model.safetensors")));
  EXPECT_EQ(test::read_lora_dir(tmp.file("zero1")), plain);
  EXPECT_EQ(test::read_lora_dir(tmp.file("zero2")), plain);
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(fs::exists(tmp.file("zero1/checkpoint-3/" + ZeroAdamW::shard_file(r, 2))));

  fs::create_directories(tmp.file("again"));
  fs::copy(tmp.file("zero1/checkpoint-3"), tmp.file("again/checkpoint-3"), fs::copy_options::recursive);
  ASSERT_EQ(run(2, common + tmp.file("again") + " --zero_stage 1 --resume_from_checkpoint True",
                tmp.file("again.log")),
            0)
      << test::read_text(tmp.file("again.log"));
  EXPECT_EQ(test::read_lora_dir(tmp.file("again")), plain);
}

}  // namespace
}  // namespace miniseq
