// Three optimizer steps of `miniseq train` against Hugging Face Trainer's arithmetic
// (tools/make_train_goldens.py, tests/data/golden/llama_basic/train_<case>/): transformers + peft +
// torch.optim.AdamW with Trainer's decay groups, clip_grad_norm_ and get_scheduler, on a fixed token batch.
// LoRA+ (LongLoRA's r 8, alpha 16, q/k/v/o, trainable embed,norm; starting from PEFT's own initialization,
// read from the golden's adapter_init/) and full fine-tuning. Every trained tensor after 3 steps within 1e-5
// relative (rel_l2), the logged losses within 1e-6 and gradient norms within 1e-5, for the optimizer paths:
// after the backward (MsT + checkpointing, and neither), in the backward, on the host, with bf16-free
// defaults.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "miniseq/io/safetensors.h"
#include "miniseq/model/adapter.h"
#include "miniseq/train/trainer.h"
#include "support/goldens.h"
#include "support/op_check.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

using namespace miniseq;
using test::rel_l2;
namespace fs = std::filesystem;

namespace {

using Tensors = std::map<std::string, std::vector<float>>;

struct Golden {
  fs::path dir;
  nlohmann::json info;
  Dataset data;
  Tensors trained;
};

Golden load_golden(const std::string& name) {
  Golden g;
  g.dir = test::golden_dir() / "llama_basic" / name;
  g.info = nlohmann::json::parse(test::read_text((g.dir / "case.json").string()));
  std::vector<int32_t> stream;
  for (const auto& row : g.info["input_ids"])
    for (const auto& id : row) stream.push_back(id.get<int32_t>());
  const int64_t vocab = load_model_config(test::train_test_model().string()).vocab_size;
  g.data = Dataset::from_stream(stream, DataSpec{g.info["seq"].get<int64_t>(), vocab, -1, 0});
  SafetensorsFile f((g.dir / "trained.safetensors").string());
  for (const auto& t : f.tensors()) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    f.read(t.name, Tensor(v.data(), Shape::from(t.shape)));
    g.trained[t.name] = std::move(v);
  }
  return g;
}

// The golden's hyper-parameters as flags, plus `extra`.
std::vector<std::string> golden_flags(const Golden& g, const std::vector<std::string>& extra) {
  const auto& i = g.info;
  auto num = [](const nlohmann::json& v) {
    std::ostringstream s;
    s.precision(17);
    s << v.get<double>();
    return s.str();
  };
  std::vector<std::string> f = {"--max_steps",
                                std::to_string(i["steps"].get<int64_t>()),
                                "--model_max_length",
                                std::to_string(i["seq"].get<int64_t>()),
                                "--per_device_train_batch_size",
                                std::to_string(i["batch"].get<int64_t>()),
                                "--learning_rate",
                                num(i["learning_rate"]),
                                "--weight_decay",
                                num(i["weight_decay"]),
                                "--adam_beta1",
                                num(i["adam_beta1"]),
                                "--adam_beta2",
                                num(i["adam_beta2"]),
                                "--adam_epsilon",
                                num(i["adam_epsilon"]),
                                "--max_grad_norm",
                                num(i["max_grad_norm"]),
                                "--lr_scheduler_type",
                                i["lr_scheduler_type"].get<std::string>(),
                                "--warmup_steps",
                                std::to_string(i["warmup_steps"].get<int64_t>()),
                                "--logging_steps",
                                "1",
                                "--save_strategy",
                                "no",
                                "--use_full_attn",
                                "True"};  // transformers attends fully: no S2-Attn
  if (i.contains("lora_r"))
    for (const std::string& s :
         {std::string("--low_rank_training"), std::string("True"), std::string("--lora_r"),
          std::to_string(i["lora_r"].get<int64_t>()), std::string("--lora_alpha"), num(i["lora_alpha"]),
          std::string("--lora_target_modules"), i["lora_target_modules"].get<std::string>(),
          std::string("--trainable_params"), i["trainable_params"].get<std::string>()})
      f.push_back(s);
  else
    f.insert(f.end(), {"--low_rank_training", "False"});
  f.insert(f.end(), extra.begin(), extra.end());
  return f;
}

void check_run(const Golden& g, const std::vector<std::string>& extra, const std::string& label) {
  SCOPED_TRACE(label);
  test::TempDir tmp;
  TrainArgs a = test::parse_train_args(golden_flags(g, extra));
  a.output_dir = tmp.file("out");
  TrainSetup setup = test::tiny_setup(a, g.data);
  const fs::path init = g.dir / "adapter_init";
  setup.init_lora = [&](const ParamSet& w, Backend* be) { load_adapter_weights(init.string(), w, be); };
  const TrainResult r = run_training(setup);
  ASSERT_EQ(r.steps, g.info["steps"].get<int64_t>());

  const auto losses = test::logged(a.output_dir, "loss"), norms = test::logged(a.output_dir, "grad_norm");
  ASSERT_EQ(losses.size(), g.info["losses"].size());
  for (size_t s = 0; s < losses.size(); ++s) {
    const double ref = g.info["losses"][s].get<double>(), ref_norm = g.info["grad_norms"][s].get<double>();
    EXPECT_NEAR(losses[s], ref, 1e-6 * ref) << "loss of step " << s + 1;
    EXPECT_NEAR(norms[s], ref_norm, 1e-5 * ref_norm) << "gradient norm of step " << s + 1;
  }
  const Tensors got = a.lora.enabled ? test::read_lora_dir(a.output_dir) : test::read_weights(a.output_dir);
  // Exactly the trained tensors (LoRA: nothing of the frozen base is saved), each within 1e-5.
  EXPECT_EQ(got.size(), g.trained.size());
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, ref] : g.trained) {
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << "not saved: " << name;
    ASSERT_EQ(it->second.size(), ref.size()) << name;
    const double e = rel_l2(it->second, ref);
    EXPECT_LE(e, 1e-5) << name;
    if (e > worst) worst = e, worst_name = name;
  }
  std::printf("  %-60s worst rel_l2 %.2e (%s)\n", label.c_str(), worst, worst_name.c_str());
}

}  // namespace

TEST(TrainGolden, LoraPlusThreeStepsMatchPeftAndTorchAdamW) {
  const Golden g = load_golden("train_lora");
  check_run(g, {}, "MsT + checkpointing, AdamW after the backward");
  check_run(g, {"--mini_sequence", "False", "--gradient_checkpointing", "False"}, "no MsT, no checkpointing");
  check_run(g, {"--optimizer_in_backward", "True"}, "optimizer in backward");
  check_run(g, {"--offload_optimizer", "True"}, "optimizer on the host");
  check_run(g,
            {"--offload_optimizer", "True", "--optimizer_in_backward", "True", "--offload_checkpoints", "-1"},
            "optimizer on the host, in backward, checkpoints on the host");
  check_run(g, {"--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2"},
            "accumulation over two micro-batches");
}

TEST(TrainGolden, FullFineTuningThreeStepsMatchTorchAdamW) {
  const Golden g = load_golden("train_full");
  check_run(g, {}, "MsT + checkpointing, AdamW after the backward");
  check_run(g, {"--optimizer_in_backward", "True"}, "optimizer in backward");
  check_run(g, {"--offload_optimizer", "True"}, "optimizer on the host");
}
