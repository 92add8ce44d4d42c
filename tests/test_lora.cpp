// LoRA beside the goldens: the trained set (LongLoRA's substring rule), PEFT's initialization, the planner's
// view of a LoRA run, and `miniseq grad` with LoRA flags and a PEFT adapter directory.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "miniseq/io/safetensors.h"
#include "miniseq/model/adapter.h"
#include "miniseq/model/decoder.h"
#include "miniseq/model/planner.h"
#include "support/goldens.h"
#include "support/tmpdir.h"

using namespace miniseq;
namespace fs = std::filesystem;

// The trained set follows LongLoRA's substring loop over PEFT's names (model/lora.h).
TEST(LoraTrainable, LongLoRASubstringRule) {
  ModelConfig qwen3 = load_model_config((test::golden_dir() / "qwen3_tied/model").string());
  LoraConfig lora;
  lora.enabled = true;
  lora.trainable_params = {"embed", "norm"};
  std::vector<std::string> base;
  for (const auto& s : trainable_specs(qwen3, lora))
    if (s.role != ParamRole::LoraA && s.role != ParamRole::LoraB) base.push_back(s.name);
  // embed_tokens (tied: also the LM head), 4 norms per Qwen3 layer (q_norm / k_norm match "norm"), the final
  // norm
  EXPECT_EQ(base.size(), 1u + 4u * static_cast<size_t>(qwen3.num_hidden_layers) + 1u);
  EXPECT_EQ(base.front(), "model.embed_tokens.weight");
  EXPECT_EQ(lora_specs(qwen3, lora).size(), 2u * 4u * static_cast<size_t>(qwen3.num_hidden_layers));
  // A substring of the PEFT name: "base_layer" matches exactly the adapted linears' frozen weights.
  lora.trainable_params = {"base_layer"};
  size_t n = 0;
  for (const auto& s : trainable_specs(qwen3, lora))
    n += s.role != ParamRole::LoraA && s.role != ParamRole::LoraB;
  EXPECT_EQ(n, 4u * static_cast<size_t>(qwen3.num_hidden_layers));
  // Full fine-tuning trains everything.
  EXPECT_EQ(trainable_specs(qwen3, LoraConfig{}).size(), param_specs(qwen3).size());
}

// A --trainable_params key that is in no parameter's name (a typo) is refused, not silently dropped.
TEST(LoraTrainable, AKeyThatMatchesNothingIsAnError) {
  ModelConfig qwen3 = load_model_config((test::golden_dir() / "qwen3_tied/model").string());
  LoraConfig lora;
  lora.enabled = true;
  lora.trainable_params = {"embed", "nrom"};
  try {
    trainable_specs(qwen3, lora);
    ADD_FAILURE() << "accepted 'nrom'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--trainable_params: 'nrom' is in the name of no parameter"),
              std::string::npos)
        << e.what();
  }
  lora.trainable_params = {"embed", "norm"};
  EXPECT_NO_THROW(trainable_specs(qwen3, lora));
}

TEST(LoraInit, PeftKaimingUniformAndZeroB) {
  ParamSpec a{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
              {8, 400},
              ParamRole::LoraA,
              0,
              ParamRole::QProj};
  std::vector<float> v(8 * 400), w(8 * 400);
  lora_init_values(a, 7, v.data());
  lora_init_values(a, 7, w.data());
  EXPECT_EQ(v, w);  // seeded
  const double bound = 1.0 / std::sqrt(400.0);
  double mean = 0, sq = 0, mx = 0;
  for (float x : v) mean += x, sq += double(x) * x, mx = std::max(mx, std::abs(double(x)));
  mean /= v.size(), sq /= v.size();
  EXPECT_LE(mx, bound);
  EXPECT_GT(mx, 0.99 * bound);
  EXPECT_NEAR(sq, bound * bound / 3.0, 0.1 * bound * bound / 3.0);  // variance of U(-b, b)
  EXPECT_NEAR(mean, 0.0, 0.05 * bound);
  ParamSpec b{"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
              {64, 8},
              ParamRole::LoraB,
              0,
              ParamRole::QProj};
  std::vector<float> z(64 * 8, 1.0f);
  lora_init_values(b, 7, z.data());
  for (float x : z) EXPECT_EQ(x, 0.0f);
}

// The planner sees LoRA: every weight stays (bf16 on CUDA), gradients and optimizer state (fp32 moments +
// fp32 master) only for the trained tensors.
TEST(LoraPlan, FrozenWeightsHaveNoGradientOrOptimizerState) {
  const ModelConfig c =
      parse_model_config(R"({"model_type":"mistral","hidden_size":4096,"intermediate_size":14336,
    "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":32000,
    "max_position_embeddings":32768,"sliding_window":4096})",
                         "mistral-7b");
  PlanTarget t = PlanTarget::cuda();
  t.optimizer = true;
  t.lora.enabled = true;
  t.lora.trainable_params = {"embed", "norm"};
  const int64_t trained = param_count(trainable_specs(c, t.lora));
  // LoRA on q, k, v, o (r 8): per layer A+B of q and o 2·8·4096, of k and v 8·4096 + 1024·8; embed; 65 norms
  const int64_t lora_per_layer = 2 * (8 * 4096 + 4096 * 8) + 2 * (8 * 4096 + 1024 * 8);
  EXPECT_EQ(trained, 32 * lora_per_layer + 32000 * 4096 + 65 * 4096);
  const MemReport r = plan_step(c, 1, 4096, StepPolicy{}, t);
  EXPECT_EQ(r.peak_by_category[MemCategory::Grads], static_cast<size_t>(trained) * 4 + 0)
      << "fp32 gradients of the trained tensors only";
  const size_t weights = static_cast<size_t>(param_count(param_specs(c)) + 32 * lora_per_layer) * 2;
  EXPECT_NEAR(static_cast<double>(r.peak_by_category[MemCategory::Weights]), static_cast<double>(weights),
              256.0 * 600);  // bf16, each buffer 256-aligned
  EXPECT_NEAR(static_cast<double>(r.peak_by_category[MemCategory::Optimizer]),
              static_cast<double>(trained) * 12,
              256.0 * 3 * 600);  // exp_avg, exp_avg_sq, master
  // Full fine-tuning of the same model needs gradients for all 7.24B parameters.
  PlanTarget full = PlanTarget::cuda();
  EXPECT_GT(plan_step(c, 1, 4096, StepPolicy{}, full).peak_bytes, r.peak_bytes + (size_t{40} << 30));
}

// Issue 16's targets for Mistral-7B LoRA+ (r 8, alpha 16, q/k/v/o, embed and norms trained), in the decimal
// GB it states them, with at most 128 GB of host memory: >= 64K tokens on 24 GB, >= 500K on 80 GB, >= 800K on
// 141 GB, each with the ladder's last rung (the checkpointed inputs of as few layers as needed on the host,
// the optimizer with bf16 moments on the device, in backward). The device arena is checked, not only the
// peak: placement holes count.
TEST(LoraPlan, Mistral7BReachesTheTargetLengths) {
  const ModelConfig c =
      load_model_config((fs::path(MINISEQ_SOURCE_DIR) / "bench/configs/mistral-7b.json").string());
  PlanTarget base = PlanTarget::cuda();
  base.lora.enabled = true;
  base.lora.trainable_params = {"embed", "norm"};
  const PlanTarget t = policy_ladder(base).back().second;
  ASSERT_LT(t.offload_layers, 0);
  ASSERT_FALSE(t.offload_optimizer);
  const StepPolicy p;
  const size_t host = 128'000'000'000;
  for (auto [device, S] : {std::pair<size_t, int64_t>{24'000'000'000, 65'536},
                           {80'000'000'000, 500'000},
                           {141'000'000'000, 800'000}}) {
    const int64_t k = min_offload_layers(c, 1, S, p, t, device, host);
    ASSERT_GE(k, 0) << S << " tokens on " << device / 1e9 << " GB";
    PlanTarget tk = t;
    tk.offload_layers = k;
    const RunPlan run = plan_run(c, 1, S, p, tk);
    EXPECT_LE(run.device.arena_bytes, device);
    EXPECT_LE(run.host.arena_bytes, host);
    EXPECT_EQ(run.device.arena_bytes, run.device.peak_bytes) << "no placement holes at the peak";
  }
}

// `miniseq grad --peft_model` writes the golden's tensors and loss; the LoRA flags are validated.
TEST(LoraGradCli, PeftAdapterDirectory) {
  const fs::path dir = test::golden_dir() / "qwen2_bias_tied";
  if (!fs::exists(dir / "lora")) GTEST_SKIP() << "no golden " << dir / "lora";
  test::TempDir tmp;
  const std::string out = tmp.file("g.safetensors");
  const std::string base = "grad --model " + (dir / "model").string() + " --data " +
                           (dir / "batch.jsonl").string() + " --out " + out;
  auto r = test::run_miniseq(base + " --peft_model " + (dir / "lora/adapter").string() +
                             " --trainable_params embed,norm --mini_sequence False");
  ASSERT_EQ(r.status, 0) << r.out;
  SafetensorsFile grads(out), golden((dir / "lora/grads.safetensors").string());
  EXPECT_NEAR(std::stod(grads.metadata().at("loss")), std::stod(golden.metadata().at("loss")), 1e-6 * 4.9);
  ASSERT_EQ(grads.tensors().size(), golden.tensors().size());
  for (const auto& t : golden.tensors()) EXPECT_NE(grads.find(t.name), nullptr) << t.name;
  EXPECT_EQ(grads.find("model.layers.0.self_attn.q_proj.weight"), nullptr);  // frozen: no gradient

  // LoRA from PEFT's initialization (B = 0): the loss is the base model's.
  r = test::run_miniseq(base + " --low_rank_training True --trainable_params ''");
  ASSERT_EQ(r.status, 0) << r.out;
  SafetensorsFile fresh(out), full((dir / "grads.safetensors").string());
  EXPECT_NEAR(std::stod(fresh.metadata().at("loss")), std::stod(full.metadata().at("loss")), 1e-6 * 4.9);
  EXPECT_EQ(fresh.tensors().size(), 2u * 4u * 2u);  // A and B of q, k, v, o in 2 layers, nothing else

  // Errors name the flag.
  r = test::run_miniseq(base + " --low_rank_training True --lora_target_modules q_proj,qkv");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("unknown LoRA target module 'qkv'"), std::string::npos) << r.out;
  r = test::run_miniseq(base + " --lora_r 16");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--lora_r applies to LoRA only"), std::string::npos) << r.out;
  r = test::run_miniseq(base + " --peft_model " + (dir / "lora/adapter").string() + " --lora_alpha 32");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--lora_alpha is read from"), std::string::npos) << r.out;
  // An adapter with dropout is refused (LongLoRA trains with 0).
  fs::create_directories(tmp.file("drop"));
  fs::copy_file(dir / "lora/adapter/adapter_model.safetensors", tmp.file("drop/adapter_model.safetensors"));
  std::string cfg = test::read_text((dir / "lora/adapter/adapter_config.json").string());
  const std::string zero = "\"lora_dropout\": 0.0";
  const auto at = cfg.find(zero);
  ASSERT_NE(at, std::string::npos);
  cfg.replace(at, zero.size(), "\"lora_dropout\": 0.05");
  test::write_text(tmp.file("drop/adapter_config.json"), cfg);
  r = test::run_miniseq(base + " --peft_model " + tmp.file("drop"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("lora_dropout 0.05 is not supported"), std::string::npos) << r.out;
}

// save_adapter / save_trainable_params write what read_adapter_config / load_adapter_weights /
// load_trainable_params read back bit for bit, and `miniseq grad --peft_model` on the written directory gives
// the loss of the tensors it holds. tools/check_adapter.py loads such a directory with peft (set
// MINISEQ_ADAPTER_OUT=DIR to keep a copy there).
TEST(LoraAdapterFiles, SaveLoadRoundTrip) {
  const fs::path dir = test::golden_dir() / "qwen2_bias_tied";
  if (!fs::exists(dir / "lora")) GTEST_SKIP() << "no golden " << dir / "lora";
  const ModelConfig config = load_model_config((dir / "model").string());
  LoraConfig lora = read_adapter_config((dir / "lora/adapter").string());
  lora.trainable_params = {"embed", "norm"};
  auto be = make_cpu_backend();
  const auto specs = model_param_specs(config, lora);
  auto make_set = [&](MemoryPlan& p) { return ParamSet(p, specs, DType::F32, MemCategory::Weights); };
  MemoryPlan real = MemoryPlan::real(Device::CPU, size_t{1} << 22);
  const ParamSet w = make_set(real);
  load_params(SafetensorsModel((dir / "model").string()), config, w);
  load_adapter_weights((dir / "lora/adapter").string(), w);
  // Move away from the base and the golden: every trained tensor scaled by 1.25.
  w.for_each([&](const ParamSpec& s, const Tensor& t) {
    if (is_trainable(s, lora)) be->scale_inplace(t, 1.25f);
  });
  test::TempDir tmp;
  const char* keep = std::getenv("MINISEQ_ADAPTER_OUT");
  const std::string out = keep && *keep ? std::string(keep) : tmp.file("adapter");
  save_adapter(out, w, lora, (dir / "model").string(), DType::F32);
  ASSERT_TRUE(save_trainable_params(out, w, lora, DType::F32));
  EXPECT_FALSE(fs::exists(fs::path(out) / "README.md"));
  const LoraConfig back = read_adapter_config(out);
  EXPECT_EQ(back.r, lora.r);
  EXPECT_EQ(back.alpha, lora.alpha);
  EXPECT_EQ(back.target_modules, lora.target_modules);
  const ParamSet w2 = make_set(real);
  load_params(SafetensorsModel((dir / "model").string()), config, w2);
  load_adapter_weights(out, w2);
  ASSERT_TRUE(load_trainable_params(out, w2));
  for (size_t i = 0; i < w.size(); ++i)
    ASSERT_EQ(0, std::memcmp(w[i].data, w2[i].data, w[i].bytes())) << w.specs()[i].name;
  // trainable_params.safetensors holds exactly the trained base tensors, under HF names.
  SafetensorsFile tp((fs::path(out) / kTrainableParamsFile).string());
  size_t n = 0;
  for (const auto& s : specs)
    n += is_trainable(s, lora) && s.role != ParamRole::LoraA && s.role != ParamRole::LoraB;
  EXPECT_EQ(tp.tensors().size(), n);
  EXPECT_NE(tp.find("model.embed_tokens.weight"), nullptr);
  EXPECT_NE(tp.find("model.norm.weight"), nullptr);
  // The loss of the written adapter differs from the golden's (the tensors moved) and is reproducible.
  auto r = test::run_miniseq("grad --model " + (dir / "model").string() + " --data " +
                             (dir / "batch.jsonl").string() + " --out " + tmp.file("g.safetensors") +
                             " --peft_model " + out);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("trainable_params.safetensors"), std::string::npos) << r.out;
  SafetensorsFile g(tmp.file("g.safetensors")), golden((dir / "lora/grads.safetensors").string());
  EXPECT_GT(std::abs(std::stod(g.metadata().at("loss")) - std::stod(golden.metadata().at("loss"))), 1e-3);
}

// Decoder::trained_weights: the weights of exactly the trained tensors, in the gradients' order, aliasing
// weights() (what the optimizer walks in step with grads()).
TEST(LoraDecoder, TrainedWeightsViewTheWeightsInGradientOrder) {
  const ModelConfig config = load_model_config((test::golden_dir() / "qwen3_tied/model").string());
  auto be = make_cpu_backend();
  for (bool enabled : {true, false}) {
    LoraConfig lora;
    lora.enabled = enabled;
    lora.trainable_params = {"norm"};
    MemoryPlan plan = MemoryPlan::real(Device::CPU, size_t{1} << 23);
    Decoder model(config, *be, plan, GradStorage::Persistent, lora);
    const ParamSet& tw = model.trained_weights();
    ASSERT_EQ(tw.size(), model.grads().size());
    for (size_t i = 0; i < tw.size(); ++i) {
      EXPECT_EQ(tw.specs()[i].name, model.grads().specs()[i].name);
      EXPECT_EQ(tw[i].data, model.weights().get(tw.specs()[i].name).data);
      EXPECT_EQ(tw[i].shape, model.grads()[i].shape);
    }
    // qwen3_tied (2 layers): LoRA A and B of q, k, v, o per layer, 4 norms per layer (q_norm and k_norm match
    // "norm") and the final norm; full fine-tuning trains all 24 base tensors (tied: no lm_head).
    EXPECT_EQ(tw.size(), enabled ? 2u * 4u * 2u + 2u * 4u + 1u : 24u);
    EXPECT_EQ(model.weights().size(), enabled ? 24u + 16u : 24u);
  }
}
