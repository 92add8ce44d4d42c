// miniseq train: flags, schedules, accumulation, clipping, bit-exact resume, checkpoint pruning and atomicity,
// LongLoRA's pad-token and RoPE rules, the memory refusal and the stop on SIGINT.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "miniseq/core/random.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/ops/backend.h"
#include "miniseq/ops/dry_backend.h"
#include "miniseq/train/checkpoint.h"
#include "miniseq/train/model_setup.h"
#include "miniseq/train/optimizer.h"
#include "miniseq/train/output_dir.h"
#include "miniseq/train/schedule.h"
#include "miniseq/train/trainer.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

using namespace miniseq;
namespace fs = std::filesystem;

namespace {

const fs::path kModel = test::train_test_model();

TrainArgs parse(const std::vector<std::string>& args) {
  return test::parse_train_args(args);
}
using test::logged;
using test::random_blocks;
using test::read_weights;
using test::tiny_setup;

double max_rel_diff(const std::map<std::string, std::vector<float>>& a,
                    const std::map<std::string, std::vector<float>>& b) {
  double worst = 0;
  for (const auto& [name, va] : a) {
    const auto& vb = b.at(name);
    double num = 0, den = 0;
    for (size_t i = 0; i < va.size(); ++i) {
      num += (static_cast<double>(va[i]) - vb[i]) * (static_cast<double>(va[i]) - vb[i]);
      den += static_cast<double>(vb[i]) * vb[i];
    }
    worst = std::max(worst, std::sqrt(num / std::max(den, 1e-300)));
  }
  return worst;
}

}  // namespace

TEST(TrainFlags, BothSyntaxesBooleansAndErrors) {
  TrainArgs a = parse({"--model_max_length", "1024", "--learning_rate=2e-5", "--bf16", "True", "--mini_sequence=false",
                       "--gradient_checkpointing", "0", "--lr_scheduler_type", "constant_with_warmup",
                       "--save_total_limit=2", "--tf32", "True", "--use_flash_attn", "True", "--cache_dir", "/x"});
  EXPECT_EQ(a.model_max_length, 1024);
  EXPECT_DOUBLE_EQ(a.learning_rate, 2e-5);
  EXPECT_TRUE(a.bf16);
  EXPECT_FALSE(a.mini_sequence);
  EXPECT_FALSE(a.gradient_checkpointing);
  EXPECT_EQ(a.lr_scheduler_type, Schedule::ConstantWithWarmup);
  EXPECT_EQ(a.save_total_limit, 2);
  EXPECT_DOUBLE_EQ(a.max_grad_norm, 1.0);  // Hugging Face's default
  auto error_of = [](std::vector<std::string> args) {
    try {
      parse(args);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of({"--learning_rat", "1"}).find("did you mean --learning_rate"), std::string::npos);
  EXPECT_NE(error_of({"--bf16", "maybe"}).find("--bf16 expects True or False"), std::string::npos);
  EXPECT_TRUE(parse({"--bf16", "yes", "--tf32"}).bf16);  // HfArgumentParser's spellings, and a bare flag
  EXPECT_FALSE(parse({"--bf16=FALSE"}).bf16);
  EXPECT_NE(error_of({"--max_steps", "ten"}).find("--max_steps expects an integer"), std::string::npos);
  EXPECT_NE(error_of({"--lr_scheduler_type", "polynomial"}).find("not supported"), std::string::npos);
  // LoRA flags: the shared table (cli/lora_flags.h), LongLoRA's values.
  const TrainArgs lora = parse({"--low_rank_training", "True", "--trainable_params", "embed,norm"});
  EXPECT_TRUE(lora.lora.enabled);
  EXPECT_EQ(lora.lora.r, 8);
  EXPECT_EQ(lora.lora.alpha, 16.0);
  EXPECT_EQ(lora.lora.trainable_params, (std::vector<std::string>{"embed", "norm"}));
  EXPECT_NE(error_of({"--low_rank_training", "False", "--lora_r", "4"}).find("applies to LoRA only"),
            std::string::npos);
  EXPECT_NE(error_of({"--low_rank_training", "True", "--lora_target_modules", "q_proj,qkv"}).find("qkv"),
            std::string::npos);
  EXPECT_NE(error_of({"--evaluation_strategy", "steps"}).find("not supported"), std::string::npos);
  EXPECT_NE(train_flags().help().find("--gradient_accumulation_steps"), std::string::npos);
}

TEST(TrainSchedule, MatchesHuggingFaceFormulas) {
  // get_linear_schedule_with_warmup(warmup 10, total 100)
  EXPECT_DOUBLE_EQ(lr_multiplier(Schedule::Linear, 0, 10, 100), 0.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(Schedule::Linear, 5, 10, 100), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(Schedule::Linear, 10, 10, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(Schedule::Linear, 55, 10, 100), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(Schedule::Linear, 100, 10, 100), 0.0);
  // get_cosine_schedule_with_warmup: 0.5 * (1 + cos(pi * progress))
  EXPECT_NEAR(lr_multiplier(Schedule::Cosine, 55, 10, 100), 0.5, 1e-15);
  EXPECT_NEAR(lr_multiplier(Schedule::Cosine, 32, 10, 100), 0.5 * (1 + std::cos(M_PI * 22.0 / 90.0)), 1e-15);
  EXPECT_DOUBLE_EQ(lr_multiplier(Schedule::Cosine, 3, 10, 100), 0.3);
  // constant_with_warmup and constant
  EXPECT_DOUBLE_EQ(lr_multiplier(Schedule::ConstantWithWarmup, 3, 4, 100), 0.75);
  EXPECT_DOUBLE_EQ(lr_multiplier(Schedule::ConstantWithWarmup, 40, 4, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(Schedule::Constant, 0, 4, 100), 1.0);
  // warmup_ratio: ceil(ratio * total)
  TrainArgs a;
  a.warmup_ratio = 0.1;
  EXPECT_EQ(warmup_steps_for(a, 95), 10);
  a.warmup_steps = 3;
  EXPECT_EQ(warmup_steps_for(a, 95), 3);
  // Steps from epochs: ceil(blocks / batch) micro-batches, ceil(micro / accumulation) steps per epoch.
  TrainArgs e;
  e.num_train_epochs = 2;
  e.per_device_train_batch_size = 2;
  e.gradient_accumulation_steps = 3;
  EXPECT_EQ(total_training_steps(e, 13), 6);  // 7 micro-batches -> 3 steps per epoch
}

TEST(TrainOptimizer, ClippingAndDecayGroups) {
  ModelConfig c = load_model_config(kModel.string());
  auto specs = param_specs(c);
  MemoryPlan plan = MemoryPlan::real(Device::CPU, 1 << 24);
  auto be = make_cpu_backend();
  ParamSet w(plan, specs, DType::F32, MemCategory::Weights), g(plan, specs, DType::F32, MemCategory::Grads);
  AdamW opt(plan, specs);
  opt.zero(*be);
  Rng rng(3);
  w.for_each([&](const ParamSpec&, const Tensor& t) { for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = 1.0f; });
  g.for_each([&](const ParamSpec&, const Tensor& t) {
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(rng.normal());
  });
  const double norm = AdamW::grad_norm(*be, g);
  AdamWHyper h;
  h.lr = 1e-3, h.weight_decay = 0.1, h.step = 1;
  h.clip = AdamW::clip_factor(norm, /*max_norm=*/1.0);
  const double clip = h.clip;
  EXPECT_NEAR(clip, 1.0 / (norm + 1e-6), 1e-15);
  opt.step(*be, w, g, h);
  // First moment after one step: (1 - beta1) * clip * g, for every element.
  const Tensor& m0 = opt.exp_avg().get("model.layers.0.mlp.up_proj.weight");
  const Tensor& g0 = g.get("model.layers.0.mlp.up_proj.weight");
  for (int64_t i = 0; i < 10; ++i)
    EXPECT_NEAR(m0.f32()[i], 0.1 * clip * g0.f32()[i], 1e-6 * std::abs(0.1 * clip * g0.f32()[i]) + 1e-12);
  // Decay: norms and biases are not decayed (w stays 1 - lr * update only), matrices are.
  EXPECT_TRUE(AdamW::decays(specs[0]));
  for (const auto& s : specs)
    if (param_kind(s.role) == "norm") {
      EXPECT_FALSE(AdamW::decays(s)) << s.name;
    }
  // Without clipping (max_norm 0) nothing is scaled; a norm below max_norm is not scaled either.
  EXPECT_EQ(AdamW::clip_factor(norm, 0.0), 1.0);
  EXPECT_EQ(AdamW::clip_factor(0.5, 1.0), 1.0);
}

TEST(TrainLoop, AccumulationEqualsLargerBatch) {
  test::TempDir tmp;
  const Dataset data = random_blocks(4, 24, 131, 11);
  // Full attention, as the 1e-6 on the weights was measured (4.8e-7): AdamW's first step is about lr·sign(g), so
  // the few gradient elements near zero turn summation-order noise into weight differences, and which elements
  // those are depends on the data flow (1.8e-6 with S²-Attn from the same gradient noise). Accumulation under
  // S²-Attn is checked on the gradients: test_s2_attn.cpp, AccumulatedGradientsEqualTheLargerBatch.
  TrainArgs a = parse({"--max_steps", "1", "--learning_rate", "1e-3", "--save_strategy", "no", "--logging_steps", "1",
                       "--model_max_length", "24", "--seed", "5", "--use_full_attn", "True"});
  a.per_device_train_batch_size = 1, a.gradient_accumulation_steps = 4, a.output_dir = tmp.file("ga");
  TrainResult r1 = run_training(tiny_setup(a, data));
  a.per_device_train_batch_size = 4, a.gradient_accumulation_steps = 1, a.output_dir = tmp.file("batch");
  TrainResult r2 = run_training(tiny_setup(a, data));
  EXPECT_NEAR(r1.last_loss, r2.last_loss, 1e-6 * r2.last_loss);
  // One AdamW step from the same start: the weights agree to fp32 summation order.
  EXPECT_LE(max_rel_diff(read_weights(tmp.file("ga")), read_weights(tmp.file("batch"))), 1e-6);
}

TEST(TrainLoop, ResumeIsBitExactAndPruningKeepsTheNewest) {
  test::TempDir tmp;
  const Dataset data = random_blocks(5, 16, 131, 12);
  TrainArgs a = parse({"--max_steps", "6", "--learning_rate", "1e-3", "--warmup_steps", "2", "--lr_scheduler_type",
                       "cosine", "--logging_steps", "1", "--model_max_length", "16", "--per_device_train_batch_size",
                       "2", "--gradient_accumulation_steps", "1", "--weight_decay", "0.01", "--save_steps", "3"});
  a.output_dir = tmp.file("straight");
  TrainResult full = run_training(tiny_setup(a, data));
  EXPECT_EQ(full.steps, 6);

  // 3 steps, then a resumed run to 6 (the epoch boundary falls in between: 3 micro-batches per epoch).
  a.output_dir = tmp.file("resumed");
  a.max_steps = 3;
  run_training(tiny_setup(a, data));
  ASSERT_TRUE(fs::exists(tmp.file("resumed") + "/checkpoint-3"));
  a.max_steps = 6;
  a.resume_from_checkpoint = "True";
  a.save_steps = 1;
  a.save_total_limit = 2;
  TrainResult resumed = run_training(tiny_setup(a, data));
  EXPECT_EQ(resumed.steps, 6);
  EXPECT_EQ(resumed.last_loss, full.last_loss);  // bitwise
  auto wa = read_weights(tmp.file("straight")), wb = read_weights(tmp.file("resumed"));
  for (const auto& [name, v] : wa) EXPECT_EQ(v, wb.at(name)) << name;
  // Identical per-step losses in the metrics.
  EXPECT_EQ(logged(tmp.file("straight"), "loss"), logged(tmp.file("resumed"), "loss"));
  // save_total_limit 2 with a save every step: only the two newest remain.
  auto cps = run_checkpoints(tmp.file("resumed"), "");
  ASSERT_EQ(cps.size(), 2u);
  EXPECT_EQ(cps[0].first, 5);
  EXPECT_EQ(cps[1].first, 6);
  EXPECT_TRUE(fs::exists(tmp.file("resumed") + "/training.svg"));
  EXPECT_TRUE(fs::exists(tmp.file("resumed") + "/config.json"));
}

// LoRA+ (LongLoRA's r 8, alpha 16, q/k/v/o, trainable embed,norm): 6 steps in one run equal 3 + resume + 3 bit
// for bit, adapter and trainable tensors alike; the checkpoints hold the adapter, the trainable params and the
// optimizer state of those alone, no base model. With --bf16 True the trainable params are saved in bf16 and the
// exact fp32 values travel in optimizer.safetensors (master.*); with --master_weights False the weights (frozen
// ones included) are bf16 values, updated with stochastic rounding, and saved exactly in bf16.
TEST(TrainLoop, LoraResumeIsBitExact) {
  for (const std::string mode : {"fp32", "--bf16 True", "--master_weights False", "--moments_dtype bfloat16"}) {
    SCOPED_TRACE(mode);
    const bool bf16 = mode == "--bf16 True", no_master = mode == "--master_weights False";
    const bool bf16_moments = mode == "--moments_dtype bfloat16";
    test::TempDir tmp;
    const Dataset data = random_blocks(5, 16, 131, 21);
    TrainArgs a = parse({"--max_steps", "6", "--learning_rate", "2e-3", "--warmup_steps", "2", "--lr_scheduler_type",
                         "cosine", "--logging_steps", "1", "--model_max_length", "16", "--per_device_train_batch_size",
                         "2", "--weight_decay", "0.01", "--save_steps", "3", "--low_rank_training", "True",
                         "--trainable_params", "embed,norm", "--bf16", bf16 ? "True" : "False",
                         "--master_weights", no_master ? "False" : "True", "--moments_dtype",
                         bf16_moments ? "bfloat16" : "float32"});
    a.output_dir = tmp.file("straight");
    const TrainResult full = run_training(tiny_setup(a, data));
    ASSERT_EQ(full.steps, 6);

    a.output_dir = tmp.file("resumed");
    a.max_steps = 3;
    run_training(tiny_setup(a, data));
    const std::string cp = tmp.file("resumed") + "/checkpoint-3";
    for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "trainable_params.safetensors",
                          "optimizer.safetensors", "trainer_state.json"})
      EXPECT_TRUE(fs::exists(cp + "/" + f)) << f;
    for (const char* f : {"config.json", "model.safetensors"}) EXPECT_FALSE(fs::exists(cp + "/" + f)) << f;
    // Optimizer state for the trained tensors alone (exp_avg, exp_avg_sq, and master with --bf16).
    const auto trained = test::read_lora_dir(cp);
    const SafetensorsFile opt(cp + "/optimizer.safetensors");
    EXPECT_EQ(opt.tensors().size(), trained.size() * (bf16 ? 3 : 2));
    EXPECT_EQ(opt.tensors().front().dtype, bf16_moments ? DType::BF16 : DType::F32);
    EXPECT_EQ(SafetensorsFile(cp + "/trainable_params.safetensors").tensors().front().dtype,
              bf16 || no_master ? DType::BF16 : DType::F32);
    a.max_steps = 6;
    a.resume_from_checkpoint = "True";
    const TrainResult resumed = run_training(tiny_setup(a, data));
    EXPECT_EQ(resumed.steps, 6);
    EXPECT_EQ(resumed.last_loss, full.last_loss);  // bitwise
    EXPECT_EQ(logged(tmp.file("straight"), "loss"), logged(tmp.file("resumed"), "loss"));
    const auto wa = test::read_lora_dir(tmp.file("straight")), wb = test::read_lora_dir(tmp.file("resumed"));
    ASSERT_EQ(wa.size(), 22u);  // 2 layers x 4 modules x (A, B) + embedding + 5 norms
    for (const auto& [name, v] : wa) EXPECT_EQ(v, wb.at(name)) << name;

    // The exact trained values of the two runs' last checkpoints, whatever the saved dtype.
    SafetensorsFile oa(tmp.file("straight") + "/checkpoint-6/optimizer.safetensors"),
        ob(tmp.file("resumed") + "/checkpoint-6/optimizer.safetensors");
    for (const auto& t : oa.tensors()) {
      std::vector<float> x(static_cast<size_t>(t.numel())), y(x.size());
      oa.read(t.name, Tensor(x.data(), Shape::from(t.shape)));
      ob.read(t.name, Tensor(y.data(), Shape::from(t.shape)));
      EXPECT_EQ(x, y) << t.name;
    }
  }
}

// A LoRA checkpoint is resumed only by a LoRA run of the same base model and LoRA flags; errors say what to do.
TEST(TrainLoop, LoraResumeRefusesAnotherBaseModelOrConfig) {
  test::TempDir tmp;
  const Dataset data = random_blocks(2, 16, 131, 22);
  TrainArgs a = parse({"--max_steps", "1", "--model_max_length", "16", "--per_device_train_batch_size", "1",
                       "--save_steps", "1", "--low_rank_training", "True"});
  a.output_dir = tmp.file("out");
  run_training(tiny_setup(a, data));
  const std::string cp = tmp.file("out") + "/checkpoint-1";
  const nlohmann::json state = nlohmann::json::parse(test::read_text(cp + "/trainer_state.json"));
  EXPECT_EQ(fs::path(state["model_name_or_path"].get<std::string>()), fs::absolute(kModel).lexically_normal());
  auto error_of = [&](const TrainArgs& args, const std::string& model_dir) {
    try {
      check_resumable(cp, args.lora, model_dir);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of(a, kModel.string()), "no error");
  EXPECT_NE(error_of(a, tmp.file("elsewhere")).find("Resume with the base model the checkpoint was trained on"),
            std::string::npos);
  TrainArgs other = a;
  other.lora.r = 4;
  EXPECT_NE(error_of(other, kModel.string()).find("resume with the checkpoint's values"), std::string::npos);
  other = a;
  other.lora.trainable_params = {"norm"};
  EXPECT_NE(error_of(other, kModel.string()).find("--trainable_params 'embed,norm'"), std::string::npos);
  other = a;
  other.lora.enabled = false;
  EXPECT_NE(error_of(other, kModel.string()).find("resume it with --low_rank_training True"), std::string::npos);

  // A full fine-tuning checkpoint in a LoRA run.
  TrainArgs full = parse({"--max_steps", "1", "--model_max_length", "16", "--per_device_train_batch_size", "1",
                          "--save_steps", "1", "--low_rank_training", "False"});
  full.output_dir = tmp.file("full");
  run_training(tiny_setup(full, data));
  a.output_dir = tmp.file("full");
  a.resume_from_checkpoint = "True";
  a.max_steps = 2;
  try {
    run_training(tiny_setup(a, data));
    ADD_FAILURE() << "a full fine-tuning checkpoint was resumed by a LoRA run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("resume it with --low_rank_training False"), std::string::npos) << e.what();
  }
}

TEST(TrainCheckpoint, CrashDuringSaveKeepsThePreviousCheckpoint) {
  test::TempDir tmp;
  const Dataset data = random_blocks(2, 16, 131, 13);
  TrainArgs a = parse({"--max_steps", "2", "--model_max_length", "16", "--per_device_train_batch_size", "1",
                       "--save_steps", "1", "--logging_steps", "1"});
  a.output_dir = tmp.file("out");
  run_training(tiny_setup(a, data));
  const std::string cp = tmp.file("out") + "/checkpoint-2";
  const std::string before = test::read_text(cp + "/trainer_state.json");
  const auto weights_before = read_weights(cp);

  // Overwrite checkpoint-2 with other weights, crashing after two files: the old one must survive untouched.
  ModelConfig c = load_model_config(kModel.string());
  MemoryPlan plan = MemoryPlan::real(Device::CPU, 1 << 24);
  ParamSet w(plan, param_specs(c), DType::F32, MemCategory::Weights);
  w.for_each([](const ParamSpec&, const Tensor& t) { for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = 7.0f; });
  TrainProgress p;
  SaveRequest r;
  r.dir = cp;
  r.config = &c;
  r.weights = &w;
  r.progress = &p;
  set_save_fault_for_testing(2);
  EXPECT_THROW(save_checkpoint(r), Error);
  EXPECT_EQ(test::read_text(cp + "/trainer_state.json"), before);
  EXPECT_EQ(read_weights(cp), weights_before);
  for (const auto& e : fs::directory_iterator(tmp.file("out")))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp-", 0), std::string::npos) << "left behind: " << e.path();
  set_save_fault_for_testing(-1);
}

TEST(TrainSetupRules, RopeFactorAndVocabularyGrowth) {
  ModelConfig llama2 = parse_model_config(R"({"model_type":"llama","max_position_embeddings":4096})", "llama2");
  EXPECT_EQ(rope_for_length(llama2, 32768).factor, 8.0);
  EXPECT_EQ(rope_for_length(llama2, 32768).type, RopeType::Linear);
  EXPECT_EQ(rope_for_length(llama2, 4096).type, RopeType::Default);
  EXPECT_EQ(rope_for_length(llama2, 4097).factor, 2.0);
  ModelConfig llama3 = parse_model_config(R"({"model_type":"llama","max_position_embeddings":8192})", "llama3");
  EXPECT_EQ(rope_for_length(llama3, 32768).factor, 4.0);
  ModelConfig mistral = parse_model_config(R"({"model_type":"mistral","max_position_embeddings":32768})", "m");
  EXPECT_EQ(rope_for_length(mistral, 32768).type, RopeType::Default);
  ModelConfig scaled = parse_model_config(
      R"({"model_type":"llama","max_position_embeddings":4096,"rope_scaling":{"type":"linear","factor":2.0}})", "s");
  EXPECT_EQ(rope_for_length(scaled, 32768).factor, 8.0);  // 2 already × ceil(32768 / 8192)

  // A pad token added: one more row in the embedding and the LM head, equal to the mean of the old rows.
  ModelConfig file_c = load_model_config(kModel.string());
  ModelConfig grown = file_c;
  grown.vocab_size += 1;
  MemoryPlan plan = MemoryPlan::real(Device::CPU, 1 << 24);
  ParamSet w(plan, param_specs(grown), DType::F32, MemCategory::Weights);
  SafetensorsModel files(kModel.string());
  load_params_grown(files, file_c, grown, w);
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
    const Tensor& t = w.get(name);
    const int64_t V = file_c.vocab_size, d = file_c.hidden_size;
    std::vector<float> orig(static_cast<size_t>(V * d));
    files.read(name, Tensor(orig.data(), {V, d}));
    EXPECT_EQ(std::vector<float>(t.f32(), t.f32() + V * d), orig);
    for (int64_t j = 0; j < d; ++j) {
      double mean = 0;
      for (int64_t r = 0; r < V; ++r) mean += orig[static_cast<size_t>(r * d + j)];
      EXPECT_NEAR(t.f32()[V * d + j], mean / static_cast<double>(V), 1e-7) << name << " column " << j;
    }
  }
}

TEST(TrainCli, RefusesARunThatDoesNotFit) {
  test::TempDir tmp;
  test::write_text(tmp.file("d.jsonl"), "{\"input_ids\": [1, 2, 3, 4, 5, 6, 7, 8]}\n");
  // Below even the weights, moments and layer inputs: refused at once, before any dry run.
  auto r = test::run_miniseq("train --low_rank_training False --model_name_or_path " + kModel.string() + " --data_path " + tmp.file("d.jsonl") +
                             " --output_dir " + tmp.file("o") + " --model_max_length 8 --max_steps 1 " +
                             "--max_memory_gib 0.0001 --mini_sequence False");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("needs at least 772.25 KiB (weights, AdamW moments and the layer inputs of 8 x 8 tokens) "
                       "but only 104.86 KiB is available (--max_memory_gib)"),
            std::string::npos)
      << r.out;
  // Above that floor but below the plan: the refusal names the policy that fits and its flags.
  r = test::run_miniseq("train --low_rank_training False --model_name_or_path " + kModel.string() + " --data_path " + tmp.file("d.jsonl") +
                        " --output_dir " + tmp.file("o") + " --model_max_length 8 --max_steps 1 " +
                        "--max_memory_gib 0.001 --mini_sequence False");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("only 1.02 MiB is available (--max_memory_gib)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("with --mini_sequence True --gradient_checkpointing True it plans"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("the memory policy bf16 moments fits (planned 929.25 KiB): add --moments_dtype bfloat16"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("--auto` lists the options"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(tmp.file("o")));
  r = test::run_miniseq("train --low_rank_training False --model_name_or_path " + kModel.string() + " --data_path " + tmp.file("d.jsonl") +
                        " --output_dir " + tmp.file("o") + " --model_max_length 16");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("holds 9 tokens, less than one sequence of --model_max_length 16"), std::string::npos) << r.out;
  test::write_text(tmp.file("bad.jsonl"), "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [1, 500]}\n");
  r = test::run_miniseq("train --low_rank_training False --model_name_or_path " + kModel.string() + " --data_path " + tmp.file("bad.jsonl") +
                        " --output_dir " + tmp.file("o") + " --model_max_length 2");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("bad.jsonl:2: input_ids value 500 is outside the model's vocabulary [0, 131)"),
            std::string::npos)
      << r.out;
  r = test::run_miniseq("train --model_name_or_path /nonexistent --data_path x --output_dir y");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("is not a directory"), std::string::npos) << r.out;
}

// A LoRA run (train's default) that does not fit: its refusal quotes the plan of the LoRA layout, and the
// memplan command it suggests (batch and LoRA flags passed on) plans the very same bytes.
TEST(TrainCli, LoraRefusalAndMemplanAgree) {
  test::TempDir tmp;
  test::write_text(tmp.file("d.jsonl"), "{\"input_ids\": [1, 2, 3, 4, 5, 6, 7, 8]}\n");
  const auto r = test::run_miniseq("train --model_name_or_path " + kModel.string() + " --data_path " +
                                   tmp.file("d.jsonl") + " --output_dir " + tmp.file("o") +
                                   " --model_max_length 8 --max_steps 1 --max_memory_gib 0.0005 --mini_sequence False");
  EXPECT_EQ(r.status, 2) << r.out;
  const std::string suggested = " --per_device_train_batch_size 8 --low_rank_training True --lora_r 8 --lora_alpha 16 "
                                "--lora_target_modules q_proj,k_proj,v_proj,o_proj --trainable_params embed,norm --auto";
  EXPECT_NE(r.out.find(suggested), std::string::npos) << r.out;
  const auto m = test::run_miniseq("memplan --model " + kModel.string() +
                                   " --model_max_length 8 --per_device_train_batch_size 8 --low_rank_training True "
                                   "--trainable_params embed,norm --mini_sequence False --json");
  ASSERT_EQ(m.status, 0) << m.out;
  const auto plan = nlohmann::json::parse(m.out.substr(m.out.find('{')));
  EXPECT_TRUE(plan["low_rank_training"].get<bool>());
  EXPECT_NE(r.out.find("the run needs " + human_bytes(plan["arena_bytes"].get<size_t>()) + " (peak at"),
            std::string::npos)
      << r.out << "\nmemplan: " << plan["arena_bytes"];
}

TEST(TrainCli, SigintFinishesTheStepSavesAndExitsNonZero) {
  test::TempDir tmp;
  // Enough data for many steps; the run is stopped as soon as the first metrics line appears.
  std::string jsonl;
  Rng rng(1);
  for (int i = 0; i < 64; ++i) {
    jsonl += "{\"input_ids\": [";
    for (int k = 0; k < 64; ++k) {
      if (k) jsonl += ",";
      jsonl += std::to_string(rng.below(131));
    }
    jsonl += "]}\n";
  }
  test::write_text(tmp.file("d.jsonl"), jsonl);
  const std::string out = tmp.file("o");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string log = tmp.file("log.txt");
    freopen(log.c_str(), "w", stdout);
    execl(MINISEQ_BINARY, MINISEQ_BINARY, "train", "--low_rank_training", "False", "--model_name_or_path", kModel.c_str(), "--data_path",
          tmp.file("d.jsonl").c_str(), "--output_dir", out.c_str(), "--model_max_length", "64", "--max_steps",
          "100000", "--logging_steps", "1", "--per_device_train_batch_size", "1", "--save_steps", "100000",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 600 && !fs::exists(out + "/metrics.jsonl"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(out + "/metrics.jsonl")) << test::read_text(tmp.file("log.txt"));
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  auto cps = run_checkpoints(out, "");
  ASSERT_EQ(cps.size(), 1u);
  EXPECT_TRUE(fs::exists(cps[0].second + "/optimizer.safetensors"));
  EXPECT_NE(test::read_text(tmp.file("log.txt")).find("interrupted by signal 2"), std::string::npos);
}

// Memory policies (optimizer in backward, bf16 moments): same training as the default policy — bitwise where the
// arithmetic is the same, within the bf16 rounding bound where it is not.
TEST(TrainPolicies, OptimizerInBackwardIsBitwiseAndBf16MomentsAreClose) {
  test::TempDir tmp;
  const Dataset data = random_blocks(4, 20, 131, 21);
  const auto initial = read_weights(kModel.string());
  for (double max_norm : {1.0, 0.0}) {
    // Each run gets its own output_dir (a non-empty one is refused unless resumed or overwritten).
    const std::string tag = max_norm > 0 ? "-clip" : "-noclip";
    TrainArgs a = parse({"--max_steps", "4", "--learning_rate", "2e-3", "--warmup_steps", "1", "--logging_steps",
                         "1", "--model_max_length", "20", "--per_device_train_batch_size", "2", "--save_strategy",
                         "no", "--weight_decay", "0.01"});
    a.max_grad_norm = max_norm;
    a.output_dir = tmp.file("default" + tag);
    TrainResult base = run_training(tiny_setup(a, data));
    a.optimizer_in_backward = true;
    a.output_dir = tmp.file("fused" + tag);
    TrainResult fused = run_training(tiny_setup(a, data));
    EXPECT_EQ(fused.last_loss, base.last_loss) << "max_grad_norm " << max_norm;
    EXPECT_EQ(read_weights(tmp.file("fused" + tag)), read_weights(tmp.file("default" + tag))) << "max_grad_norm " << max_norm;
    EXPECT_EQ(logged(tmp.file("fused" + tag), "loss"), logged(tmp.file("default" + tag), "loss"));
    EXPECT_EQ(logged(tmp.file("fused" + tag), "grad_norm"), logged(tmp.file("default" + tag), "grad_norm"));

    // bf16 moments: each moment is rounded to 8 significant bits (relative error <= 2^-9) once per step, so each
    // update m/sqrt(v) is off by at most ~2^-9 + 2^-10 relative; over a few steps at a small learning rate the
    // weights' displacement from the start is off by well under 1% of itself.
    a.optimizer_in_backward = false;
    a.moments_dtype = DType::BF16;
    a.output_dir = tmp.file("bf16" + tag);
    TrainResult bf = run_training(tiny_setup(a, data));
    EXPECT_NEAR(bf.last_loss, base.last_loss, 1e-3 * base.last_loss);
    const auto wb = read_weights(tmp.file("bf16" + tag)), wf = read_weights(tmp.file("default" + tag));
    double diff = 0, disp = 0;
    for (const auto& [name, v] : wf) {
      for (size_t i = 0; i < v.size(); ++i) {
        diff += std::pow(static_cast<double>(wb.at(name)[i]) - v[i], 2);
        disp += std::pow(static_cast<double>(v[i]) - initial.at(name)[i], 2);
      }
    }
    EXPECT_LT(std::sqrt(diff), 1e-2 * std::sqrt(disp)) << "max_grad_norm " << max_norm;
    EXPECT_GT(std::sqrt(diff), 0.0);  // the policy really changed the arithmetic
  }
}

TEST(TrainPolicies, PlannerSeesThePolicies) {
  const ModelConfig c = load_model_config(kModel.string());
  StepPolicy p;
  PlanTarget t = PlanTarget::cpu();
  const MemReport base = plan_step(c, 1, 64, p, t);
  t.moments = DType::BF16;
  const MemReport bf = plan_step(c, 1, 64, p, t);
  EXPECT_LT(bf.at_peak[MemCategory::Optimizer], base.at_peak[MemCategory::Optimizer] * 0.51);
  t.optimizer_in_backward = true;
  const MemReport fused = plan_step(c, 1, 64, p, t);
  // Only one group's gradients (a layer, or the head with the embedding) are ever live.
  EXPECT_LT(fused.peak_by_category[MemCategory::Grads], base.peak_by_category[MemCategory::Grads] / 2);
  EXPECT_LT(fused.peak_bytes, bf.peak_bytes);
}

// `train --low_rank_training True` plans the LoRA layout (the trainer allocates exactly its plan: a buffer beyond
// it is an error): moments and gradients for the trained tensors alone.
TEST(TrainPolicies, PlannerSeesLora) {
  const ModelConfig c = load_model_config(kModel.string());
  const TrainArgs full = parse({"--model_max_length", "64", "--per_device_train_batch_size", "1"});
  const TrainArgs lora = parse({"--model_max_length", "64", "--per_device_train_batch_size", "1",
                                "--low_rank_training", "True", "--trainable_params", "embed,norm"});
  EXPECT_TRUE(plan_target(lora).lora.enabled);
  const MemReport f = plan_training(c, full, policy_from(full)), l = plan_training(c, lora, policy_from(lora));
  const double ratio = static_cast<double>(param_count(trainable_specs(c, lora.lora))) /
                       static_cast<double>(param_count(param_specs(c)));
  EXPECT_NEAR(static_cast<double>(l.at_peak[MemCategory::Optimizer]),
              ratio * static_cast<double>(f.at_peak[MemCategory::Optimizer]),
              0.02 * static_cast<double>(f.at_peak[MemCategory::Optimizer]));
  EXPECT_LT(l.peak_by_category[MemCategory::Grads], f.peak_by_category[MemCategory::Grads]);
}

// Text data through the Hugging Face tokenizer of the model directory, with LongLoRA's special-token rule: the
// Mistral tokenizer has no pad token, so "[PAD]" is added as id 32000, the vocabulary grows to 32001, the new
// embedding and LM-head rows are the mean of the old ones, and the saved tokenizer files carry the new token.
TEST(TrainText, TokenizerPadTokenAndVocabularyGrowth) {
  fs::path shared = fs::path(MINISEQ_SOURCE_DIR) / "../shared/data/tokenizers/mistral";
  if (const char* env = std::getenv("MINISEQ_TEST_DATA")) shared = fs::path(env) / "tokenizers/mistral";
  if (!fs::exists(shared / "tokenizer.json")) GTEST_SKIP() << "no Mistral tokenizer at " << shared;
  test::TempDir tmp;
  const std::string model = tmp.file("model");
  auto r = test::run_miniseq("tiny-model --out " + model +
                             " --arch mistral --vocab_size 32000 --hidden_size 32 --intermediate_size 48 "
                             "--num_attention_heads 2 --num_key_value_heads 1 --num_hidden_layers 1 --dtype float32");
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(shared / f, fs::path(model) / f);
  std::string docs;
  for (int i = 0; i < 8; ++i)
    docs += "{\"text\": \"Document " + std::to_string(i) + ": the pass key is 1234" + std::to_string(i) +
            ". Remember it; the grass is green and the sky is blue.\"}\n";
  test::write_text(tmp.file("docs.jsonl"), docs);
  const std::string out = tmp.file("out");
  r = test::run_miniseq("train --low_rank_training False --model_name_or_path " + model + " --data_path " + tmp.file("docs.jsonl") +
                        " --output_dir " + out + " --model_max_length 64 --per_device_train_batch_size 1 "
                        "--max_steps 2 --learning_rate 0 --logging_steps 1 --save_strategy no");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("tokenizer: added [PAD]; vocabulary 32000 -> 32001"), std::string::npos) << r.out;
  auto cfg = nlohmann::json::parse(test::read_text(out + "/config.json"));
  EXPECT_EQ(cfg["vocab_size"], 32001);
  EXPECT_EQ(cfg["pad_token_id"], 32000);
  auto tok = nlohmann::json::parse(test::read_text(out + "/tokenizer.json"));
  EXPECT_EQ(tok["added_tokens"].back()["content"], "[PAD]");
  EXPECT_EQ(tok["added_tokens"].back()["id"], 32000);
  EXPECT_EQ(nlohmann::json::parse(test::read_text(out + "/tokenizer_config.json"))["pad_token"], "[PAD]");
  // lr 0: the weights are the loaded ones; row 32000 is the mean of rows 0..31999.
  SafetensorsModel saved(out), orig(model);
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
    std::vector<float> w(32001 * 32), o(32000 * 32);
    saved.read(name, Tensor(w.data(), {32001, 32}));
    orig.read(name, Tensor(o.data(), {32000, 32}));
    EXPECT_TRUE(std::equal(o.begin(), o.end(), w.begin())) << name;
    for (int j = 0; j < 32; ++j) {
      double mean = 0;
      for (int r2 = 0; r2 < 32000; ++r2) mean += o[static_cast<size_t>(r2 * 32 + j)];
      EXPECT_NEAR(w[static_cast<size_t>(32000 * 32 + j)], mean / 32000.0, 1e-7) << name << " column " << j;
    }
  }
  // A loss was logged for both steps.
  EXPECT_EQ(logged(out, "loss").size(), 2u);
}

// The plan's budget is the run's device: a GPU's free memory (cudaMemGetInfo) for --device cuda, not the host's
// MemAvailable; --max_memory_gib overrides both. Shown with a dry backend that reports a fake device size.
TEST(TrainBudget, TheDevicesFreeMemoryIsTheBudget) {
  DryBackend gpu(Device::CUDA, DType::BF16, DType::F32, DType::BF16);
  gpu.set_free_bytes(size_t{3} << 30);
  TrainArgs a = test::parse_train_args({"--device", "cuda", "--output_dir", "unused"});
  EXPECT_EQ(device_memory_budget(a, gpu), size_t{3} << 30);
  a.max_memory_gib = 1.0;
  EXPECT_EQ(device_memory_budget(a, gpu), size_t{1} << 30);
  a.max_memory_gib = 0.0;
  DryBackend cpu;
  TrainArgs c = test::parse_train_args({"--output_dir", "unused"});
  EXPECT_GT(device_memory_budget(c, cpu), size_t{0});  // MemAvailable
  EXPECT_EQ(cpu.device_free_bytes(), size_t{0});

  // A GPU with 1 MiB free refuses the run before anything is allocated, naming where the budget came from.
  gpu.set_free_bytes(size_t{1} << 20);
  test::TempDir tmp;
  a.output_dir = tmp.file("out");
  a.model_max_length = 16;
  a.max_steps = 1;
  const Dataset data = test::random_blocks(2, 16, 131, 5);
  TrainSetup setup = tiny_setup(a, data);
  setup.backend = &gpu;
  try {
    run_training(setup);
    ADD_FAILURE() << "a plan larger than the GPU's free memory was not refused";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("is available (free on the GPU)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("only 1.00 MiB"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(tmp.file("out")));  // nothing written
}
