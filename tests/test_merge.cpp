// `miniseq merge` (LongLoRA's merge_lora_weights_and_save_hf_model.py) against transformers + peft's
// merge_and_unload() in fp32, bit for bit, on the LoRA goldens (tests/data/merge/, written by
// tools/merge_reference.py); its output-directory rules and errors; and `--peft_model` for eval against the
// merged model and against the PEFT model's loss.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "miniseq/io/model_config.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/model/adapter.h"
#include "miniseq/model/params.h"
#include "miniseq/train/demo_preset.h"
#include "support/goldens.h"
#include "support/tmpdir.h"

using namespace miniseq;
namespace fs = std::filesystem;

namespace {

const char* kCases[] = {"llama_basic", "mistral_window", "qwen2_bias_tied", "qwen3_tied"};

fs::path merge_data() {
  return test::test_data_dir() / "merge";
}
std::string base_model(const std::string& c) {
  return (test::golden_dir() / c / "model").string();
}

// A PEFT output directory as training writes it: the golden adapter and the reference's trainable params.
std::string peft_dir(const test::TempDir& tmp, const std::string& c) {
  const fs::path dir = tmp.path() / (c + "-peft");
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(test::golden_dir() / c / "lora" / "adapter"))
    fs::copy_file(e.path(), dir / e.path().filename());
  fs::copy_file(merge_data() / c / "trainable_params.safetensors", dir / "trainable_params.safetensors");
  return dir.string();
}

std::string merge_args(const std::string& base, const std::string& peft, const std::string& out) {
  return "merge --base_model " + base + " --peft_model " + peft + " --save_path " + out;
}

const nlohmann::json& reference() {
  static const nlohmann::json j =
      nlohmann::json::parse(test::read_text((merge_data() / "reference.json").string()));
  return j;
}

}  // namespace

class MergeGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(MergeGolden, EqualsPeftMergeAndUnloadBitForBit) {
  const std::string c = GetParam();
  test::TempDir tmp;
  const std::string out = tmp.file("merged");
  const auto r = test::run_miniseq(merge_args(base_model(c), peft_dir(tmp, c), out));
  ASSERT_EQ(r.status, 0) << r.out;
  const SafetensorsModel got(out);
  const SafetensorsFile want((merge_data() / c / "merged.safetensors").string());
  EXPECT_EQ(got.names().size(), want.tensors().size());
  size_t checked = 0;
  for (const auto& t : want.tensors()) {
    const auto* e = got.find(t.name);
    ASSERT_TRUE(e) << out << " lacks " << t.name;
    ASSERT_EQ(e->info->dtype, DType::F32) << t.name;
    ASSERT_EQ(e->info->shape, t.shape) << t.name;
    const size_t bytes = static_cast<size_t>(t.numel()) * sizeof(float);
    EXPECT_EQ(std::memcmp(e->file->data(*e->info), want.data(t), bytes), 0)
        << t.name << " differs from peft's";
    ++checked;
  }
  EXPECT_GT(checked, 10u);
  // The config is the base model's (no tokens added: the golden models have no tokenizer).
  const ModelConfig base = load_model_config(base_model(c)), merged = load_model_config(out);
  EXPECT_EQ(merged.vocab_size, base.vocab_size);
  EXPECT_EQ(merged.rope.type, base.rope.type);
  EXPECT_TRUE(fs::exists(fs::path(out) / "generation_config.json") ==
              fs::exists(fs::path(base_model(c)) / "generation_config.json"));
}

INSTANTIATE_TEST_SUITE_P(Cases, MergeGolden, ::testing::ValuesIn(kCases));

TEST(MergeCli, ContextSizeSetsTrainingsRopeScaling) {
  test::TempDir tmp;
  const std::string out = tmp.file("merged");
  // llama_basic: 128 positions, no scaling; trained at 512 -> linear 4, as `miniseq train` would have used.
  const auto r = test::run_miniseq(merge_args(base_model("llama_basic"), peft_dir(tmp, "llama_basic"), out) +
                                   " --context_size 512");
  ASSERT_EQ(r.status, 0) << r.out;
  const ModelConfig merged = load_model_config(out);
  EXPECT_EQ(merged.rope.type, RopeType::Linear);
  EXPECT_EQ(merged.rope.factor, 4.0);
}

TEST(MergeCli, RefusesANonEmptySavePathUnlessAsked) {
  test::TempDir tmp;
  const std::string peft = peft_dir(tmp, "llama_basic"), out = tmp.file("merged");
  fs::create_directories(out);
  test::write_text(tmp.file("merged/keep.txt"), "x");
  auto r = test::run_miniseq(merge_args(base_model("llama_basic"), peft, out));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--overwrite_save_path True"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(tmp.file("merged/keep.txt")));
  r = test::run_miniseq(merge_args(base_model("llama_basic"), peft, out) + " --overwrite_save_path True");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_FALSE(fs::exists(tmp.file("merged/keep.txt")));
  EXPECT_TRUE(fs::exists(tmp.file("merged/model.safetensors")));
  // Never over the adapter or the base model.
  r = test::run_miniseq(merge_args(base_model("llama_basic"), peft, peft) + " --overwrite_save_path True");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("is the base model or the adapter directory"), std::string::npos) << r.out;
}

TEST(MergeCli, AMismatchedBaseNamesTheFileAndTensor) {
  test::TempDir tmp;
  // llama_basic's adapter (hidden size 64) over a model of hidden size 32.
  const std::string other = tmp.file("other");
  ASSERT_EQ(test::run_miniseq("tiny-model --out " + other + " --hidden_size 32 --vocab_size 131").status, 0);
  const auto r = test::run_miniseq(merge_args(other, peft_dir(tmp, "llama_basic"), tmp.file("merged")));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find(
                "adapter_model.safetensors: tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("the model this adapter was trained on"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(tmp.file("merged")));
  // Trainable params of another model (Qwen3's q_norm / k_norm are no Llama parameters).
  const std::string peft = tmp.file("llama_basic-peft");
  fs::copy_file(merge_data() / "qwen3_tied" / "trainable_params.safetensors",
                fs::path(peft) / "trainable_params.safetensors", fs::copy_options::overwrite_existing);
  const auto r2 = test::run_miniseq(merge_args(base_model("llama_basic"), peft, tmp.file("merged")));
  EXPECT_EQ(r2.status, 2);
  EXPECT_NE(r2.out.find("trainable_params.safetensors: tensor 'model.layers.0.self_attn."), std::string::npos)
      << r2.out;
  EXPECT_NE(r2.out.find("is not a parameter of this model"), std::string::npos) << r2.out;
}

namespace {
double json_loss(const std::string& out) {
  const size_t at = out.find('{');
  EXPECT_NE(at, std::string::npos) << out;
  return nlohmann::json::parse(out.substr(at)).at("loss").get<double>();
}
}  // namespace

TEST_P(MergeGolden, PeftModelEqualsTheMergedModelAndPeft) {
  const std::string c = GetParam();
  test::TempDir tmp;
  const std::string peft = peft_dir(tmp, c), merged = tmp.file("merged");
  ASSERT_EQ(test::run_miniseq(merge_args(base_model(c), peft, merged)).status, 0);
  const std::string stream = (test::test_data_dir() / "eval" / "stream.bin").string();
  const std::string eval = " --data " + stream + " --seq_len " +
                           std::to_string(reference().at("seq_len").get<int64_t>()) +
                           " --json --progress False";
  const auto a = test::run_miniseq("eval --model " + base_model(c) + " --peft_model " + peft + eval);
  ASSERT_EQ(a.status, 0) << a.out;
  const auto b = test::run_miniseq("eval --model " + merged + eval);
  ASSERT_EQ(b.status, 0) << b.out;
  const double with_adapter = json_loss(a.out), of_merged = json_loss(b.out);
  const double peft_loss = reference().at("cases").at(c).at("peft_loss").get<double>();
  EXPECT_LE(std::abs(with_adapter - of_merged), 1e-6 * std::abs(of_merged));
  EXPECT_LE(std::abs(with_adapter - peft_loss), 1e-6 * std::abs(peft_loss)) << "transformers + peft";
  // Without the adapter the loss is another (the adapter is really applied).
  const auto base = test::run_miniseq("eval --model " + base_model(c) + eval);
  ASSERT_EQ(base.status, 0) << base.out;
  EXPECT_GT(std::abs(json_loss(base.out) - peft_loss), 1e-3);
  // generate: the same tokens from the adapter over the base as from the merged model.
  const std::string gen = " --prompt_ids [5,17,3,99,42,7] --max_new_tokens 12 --stop_at_eos False --json";
  const auto g1 = test::run_miniseq("generate --model " + base_model(c) + " --peft_model " + peft + gen);
  const auto g2 = test::run_miniseq("generate --model " + merged + gen);
  ASSERT_EQ(g1.status, 0) << g1.out;
  ASSERT_EQ(g2.status, 0) << g2.out;
  const auto ids = [](const std::string& out) {
    return nlohmann::json::parse(out.substr(out.find('{'))).at("new_ids");
  };
  EXPECT_EQ(ids(g1.out), ids(g2.out));
}

// An adapter directory given as --model (what `miniseq train` writes with LoRA) runs over the base model its
// adapter_config.json names, as peft's AutoPeftModelForCausalLM does: the same loss as --model BASE
// --peft_model ADAPTER; a base that is not a local directory, or an adapter given twice, is a clear error.
TEST(MergeCli, AnAdapterDirectoryAsModelRunsOverItsBase) {
  test::TempDir tmp;
  const std::string c = "llama_basic", peft = peft_dir(tmp, c);
  const std::string cfg = peft + "/adapter_config.json";
  auto j = nlohmann::json::parse(test::read_text(cfg));
  j["base_model_name_or_path"] = base_model(c);
  std::ofstream(cfg) << j.dump(2);
  const std::string eval = " --data " + (test::test_data_dir() / "eval" / "stream.bin").string() +
                           " --seq_len 16 --json --progress False";
  const auto a = test::run_miniseq("eval --model " + base_model(c) + " --peft_model " + peft + eval);
  const auto b = test::run_miniseq("eval --model " + peft + eval);
  ASSERT_EQ(a.status, 0) << a.out;
  ASSERT_EQ(b.status, 0) << b.out;
  EXPECT_EQ(json_loss(a.out), json_loss(b.out));
  EXPECT_NE(b.out.find("is a PEFT adapter; running it over its base model " + base_model(c)), std::string::npos)
      << b.out;

  const auto twice = test::run_miniseq("eval --model " + peft + " --peft_model " + peft + eval);
  EXPECT_EQ(twice.status, 2);
  EXPECT_NE(twice.out.find("give its base model as --model and the adapter as --peft_model"), std::string::npos)
      << twice.out;
  j["base_model_name_or_path"] = "meta-llama/Llama-2-7b-hf";
  std::ofstream(cfg) << j.dump(2);
  const auto hub = test::run_miniseq("passkey --model " + peft + " --max_tokens 64");
  EXPECT_EQ(hub.status, 2);
  EXPECT_NE(hub.out.find("whose base model 'meta-llama/Llama-2-7b-hf' is not a local directory: pass --model "
                         "BASE_MODEL_DIR --peft_model " +
                         peft),
            std::string::npos)
      << hub.out;
}

TEST(MergeCli, PeftModelErrorsNameTheAdapter) {
  test::TempDir tmp;
  const std::string other = tmp.file("other");
  ASSERT_EQ(test::run_miniseq("tiny-model --out " + other + " --hidden_size 32 --vocab_size 131").status, 0);
  const auto r = test::run_miniseq("eval --model " + other + " --peft_model " + peft_dir(tmp, "llama_basic") +
                                   " --data " + (test::test_data_dir() / "eval" / "stream.bin").string() +
                                   " --seq_len 16");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("adapter_model.safetensors: tensor"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("is --model " + other + " the model this adapter was trained on"), std::string::npos)
      << r.out;
  const auto r2 = test::run_miniseq("generate --model " + base_model("llama_basic") + " --peft_model " +
                                    tmp.file("none") + " --prompt_ids [1,2]");
  EXPECT_EQ(r2.status, 2);
  EXPECT_NE(r2.out.find("--peft_model"), std::string::npos) << r2.out;
}

// The tokenizer growth of training: a base model whose tokenizer has no pad and no unk token gets "[PAD]" and
// "<unk>" (LongLoRA's smart_tokenizer_and_embedding_resize), its embedding and LM head two rows = the mean of
// the old ones; merge writes the grown model and tokenizer, eval --peft_model runs the same grown model.
TEST(MergeCli, GrowsTheVocabularyAsTrainingDoes) {
  test::TempDir tmp;
  const std::string base = tmp.file("base"), peft = tmp.file("peft"), out = tmp.file("merged");
  ASSERT_EQ(
      test::run_miniseq("tiny-model --out " + base + " --vocab_size 259 --dtype float32 --seed 3").status, 0);
  for (auto [name, text] : demo_tokenizer_files()) {
    if (name == "tokenizer_config.json") {
      auto j = nlohmann::json::parse(text);
      j.erase("pad_token");
      text = j.dump(2);
    }
    test::write_text((fs::path(base) / name).string(), text);
  }
  // An adapter of this model: A as PEFT initializes it, B nonzero; and a trained final norm.
  const ModelConfig config = load_model_config(base);
  LoraConfig lora;
  lora.enabled = true;
  lora.trainable_params = {"norm"};
  MemoryPlan plan = MemoryPlan::real(Device::CPU, 64 << 20);
  const ParamSet adapter(plan, model_param_specs(config, lora), DType::F32, MemCategory::Weights);
  load_params(SafetensorsModel(base), config, adapter);
  init_lora_weights(adapter, 7);
  adapter.for_each([](const ParamSpec& s, const Tensor& t) {
    if (s.role != ParamRole::LoraB && s.name != "model.norm.weight") return;
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = 0.01f * static_cast<float>((i * 37) % 11) - 0.05f;
  });
  save_adapter(peft, adapter, lora, base, DType::F32);
  ASSERT_TRUE(save_trainable_params(peft, adapter, lora, DType::F32));

  auto r = test::run_miniseq(merge_args(base, peft, out) + " --context_size 8192");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("added [PAD], <unk>; vocabulary 259 -> 261"), std::string::npos) << r.out;
  const ModelConfig merged = load_model_config(out);
  EXPECT_EQ(merged.vocab_size, 261);
  EXPECT_EQ(merged.pad_token_id, 259);
  EXPECT_EQ(merged.rope.type, RopeType::Linear);  // 2048 positions trained at 8192
  EXPECT_EQ(merged.rope.factor, 4.0);
  const auto tok_config = nlohmann::json::parse(test::read_text(out + "/tokenizer_config.json"));
  EXPECT_EQ(tok_config.at("pad_token"), "[PAD]");
  EXPECT_EQ(tok_config.at("model_max_length"), 8192);
  EXPECT_NE(test::read_text(out + "/tokenizer.json").find("\"[PAD]\""), std::string::npos);

  // The new rows are the mean of the old; a merged weight is W + s·B·A; the trained norm is the adapter's.
  const SafetensorsModel files(out), orig(base);
  std::vector<float> emb(261 * 64), emb0(259 * 64);
  files.read("model.embed_tokens.weight", Tensor(emb.data(), {261, 64}));
  orig.read("model.embed_tokens.weight", Tensor(emb0.data(), {259, 64}));
  for (int64_t j = 0; j < 64; ++j) {
    double mean = 0;
    for (int64_t i = 0; i < 259; ++i) mean += emb0[i * 64 + j];
    mean /= 259;
    EXPECT_NEAR(emb[259 * 64 + j], mean, 1e-7);
    EXPECT_EQ(emb[260 * 64 + j], emb[259 * 64 + j]);
    EXPECT_EQ(emb[5 * 64 + j], emb0[5 * 64 + j]);
  }
  const std::string q = "model.layers.1.self_attn.q_proj.weight";
  const Tensor& A = adapter.get("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");  // [8, 64]
  const Tensor& B = adapter.get("base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight");  // [64, 8]
  std::vector<float> w(64 * 64);
  files.read(q, Tensor(w.data(), {64, 64}));
  const float* w0 = adapter.get(q).f32();
  for (int64_t i = 0; i < 64; ++i)
    for (int64_t j = 0; j < 64; ++j) {
      double d = 0;
      for (int64_t k = 0; k < 8; ++k) d += static_cast<double>(B.f32()[i * 8 + k]) * A.f32()[k * 64 + j];
      EXPECT_NEAR(w[i * 64 + j], w0[i * 64 + j] + 2.0 * d, 1e-6) << i << "," << j;
    }
  std::vector<float> norm(64);
  files.read("model.norm.weight", Tensor(norm.data(), {64}));
  EXPECT_EQ(norm[3], adapter.get("model.norm.weight").f32()[3]);

  // eval --peft_model prepares the same grown model (the RoPE factor merge wrote from --context_size given as
  // LongLoRA's eval.py sets it).
  test::write_text(tmp.file("doc.txt"), "The pass key is 12345. Remember it. 12345 is the pass key.");
  const std::string eval = " --data " + tmp.file("doc.txt") + " --seq_len 32 --json --progress False";
  const auto a =
      test::run_miniseq("eval --model " + base + " --peft_model " + peft + " --rope_scaling_factor 4" + eval);
  const auto b = test::run_miniseq("eval --model " + out + eval);
  ASSERT_EQ(a.status, 0) << a.out;
  ASSERT_EQ(b.status, 0) << b.out;
  EXPECT_NEAR(json_loss(a.out), json_loss(b.out), 1e-6 * json_loss(b.out));
}
