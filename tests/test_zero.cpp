// ZeRO stage 1 (train/zero_optimizer.h): the flat layout, the planner's shards, equality with the unsharded
// AdamW in one process and on 2 ranks (mpirun; skipped without it), sharded checkpoints resumed bit-exactly
// at the same rank count and at another one.
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

TEST(ZeroFlags, StageTwoAndUnsupportedPoliciesAreRefused) {
  EXPECT_THROW(test::parse_train_args({"--zero_stage", "3"}), Error);
  EXPECT_THROW(test::parse_train_args({"--zero_stage", "2", "--grad_dtype", "bfloat16"}), Error);
  EXPECT_THROW(test::parse_train_args({"--zero_stage", "1", "--offload_optimizer", "True"}), Error);
  EXPECT_THROW(test::parse_train_args({"--zero_stage", "1", "--master_weights", "False"}), Error);
  EXPECT_NO_THROW(test::parse_train_args({"--zero_stage", "1"}));
  EXPECT_NO_THROW(test::parse_train_args({"--zero_stage", "2"}));
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
