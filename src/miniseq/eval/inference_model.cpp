#include "miniseq/eval/inference_model.h"

#include <filesystem>

#include "miniseq/io/safetensors.h"
#include "miniseq/model/adapter.h"
#include "miniseq/train/model_setup.h"
#include "miniseq/train/special_tokens.h"

namespace miniseq {

ModelConfig load_inference_config(const std::string& dir, double rope_scaling_factor) {
  ModelConfig c = load_model_config(dir);
  MS_CHECK(rope_scaling_factor >= 0.0, "--rope_scaling_factor must be >= 0 (0 = as in config.json), got ",
           rope_scaling_factor);
  if (rope_scaling_factor > 0.0) {
    MS_CHECK(c.rope.type == RopeType::Default || c.rope.type == RopeType::Linear, dir,
             ": --rope_scaling_factor sets linear scaling, but config.json uses ",
             rope_type_name(c.rope.type), " scaling; change its factor in config.json instead");
    c.rope.type = RopeType::Linear;
    c.rope.factor = rope_scaling_factor;
  }
  return c;
}

std::unique_ptr<tok::Tokenizer> load_tokenizer_if_present(const std::string& dir, const ModelConfig& config) {
  if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json")) return nullptr;
  auto t = std::make_unique<tok::Tokenizer>(tok::Tokenizer::load(dir));
  MS_CHECK(
      t->vocab_size() <= config.vocab_size, dir, "/tokenizer.json has ", t->vocab_size(),
      " ids but the model's vocab_size is ", config.vocab_size,
      ": the tokenizer does not belong to these weights (a fine-tune that added tokens saves both; use its "
      "output directory)");
  return t;
}

LoraConfig prepare_peft_config(const std::string& model_dir, const std::string& peft_dir,
                               ModelConfig& config) {
  if (peft_dir.empty()) return {};
  MS_CHECK(std::filesystem::is_directory(peft_dir), "--peft_model ", peft_dir, " is not a directory");
  const LoraConfig lora = read_adapter_config(peft_dir);
  if (std::filesystem::exists(std::filesystem::path(model_dir) / "tokenizer.json")) {
    const tok::Tokenizer tokenizer = tok::Tokenizer::load(model_dir);
    const PreparedTokenizer prep = prepare_special_tokens(model_dir, tokenizer);
    grow_for_tokenizer(config, prep.vocab_size, prep.pad_id);
  }
  return lora;
}

InferenceModel::InferenceModel(const std::string& dir, const ModelConfig& config, Backend& backend,
                               size_t arena_bytes, const std::string& peft_dir, const LoraConfig& lora)
    : plan_(new MemoryPlan(MemoryPlan::real(backend.device(), arena_bytes))),
      decoder_(std::make_unique<Decoder>(config, backend, *plan_, GradStorage::None, lora)) {
  SafetensorsModel files(dir);
  if (peft_dir.empty()) {
    load_params(files, config, decoder_->weights(), &backend);
    return;
  }
  load_params_grown(files, load_model_config(dir), config, decoder_->weights(), &backend);
  try {
    load_adapter_weights(peft_dir, decoder_->weights(), &backend);
  } catch (const Error& e) {
    fail(e.what(), " (--peft_model: is --model ", dir, " the model this adapter was trained on?)");
  }
  load_trainable_params(peft_dir, decoder_->weights(), &backend);
}

}  // namespace miniseq
