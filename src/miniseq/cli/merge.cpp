// `miniseq merge --base_model DIR --peft_model DIR --save_path DIR [--context_size N]`: LongLoRA's
// merge_lora_weights_and_save_hf_model.py. The base model is prepared as training prepared it (the
// tokenizer's missing special tokens added, [PAD] first, the embedding and LM head grown with rows = mean of
// the old ones; with --context_size beyond the native context, the RoPE scaling of train/model_setup.h), the
// adapter's trainable_params.safetensors (LoRA+: embed / norm) is read over it, every LoRA pair is merged in
// fp32 as PEFT's merge_and_unload() does (model/lora_merge.h), and a Hugging Face model directory is written
// atomically: config.json, safetensors (sharded above 5 GiB, with an index), the tokenizer files (with the
// added tokens) and generation_config.json when the base has one.
//
// Differences from LongLoRA's script, on purpose: the merge is computed in fp32 whatever the saved dtype (the
// script merges in fp16 on the GPU); --context_size also writes the RoPE scaling into config.json (the script
// only sets the tokenizer's model_max_length, so its merged config lost the scaling training used).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "miniseq/cli/commands.h"
#include "miniseq/cli/flags.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/io/tokenizer/tokenizer.h"
#include "miniseq/model/adapter.h"
#include "miniseq/model/lora_merge.h"
#include "miniseq/model/rope_scaling.h"
#include "miniseq/train/checkpoint.h"
#include "miniseq/train/model_setup.h"
#include "miniseq/train/special_tokens.h"

namespace miniseq::cli {

namespace fs = std::filesystem;

namespace {

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool same_dir(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::exists(a) && fs::exists(b) && fs::equivalent(a, b, ec);
}

size_t arena_bytes_for(const std::vector<ParamSpec>& specs) {
  const size_t align = MemoryPlan::kAlignment;
  size_t n = 0;
  for (const auto& s : specs)
    n += (static_cast<size_t>(s.shape.numel()) * sizeof(float) + align - 1) / align * align;
  return n + align;
}

}  // namespace

int cmd_merge(const Args& args) {
  Flags f(
      "merge",
      "miniseq merge --base_model DIR --peft_model DIR --save_path DIR [--context_size N] "
      "[--save_dtype auto|float32|bfloat16|float16] [--overwrite_save_path True]",
      {
          {"base_model", FlagKind::String, "", "the base model directory the adapter was trained on"},
          {"peft_model", FlagKind::String, "",
           "the adapter directory (adapter_config.json, adapter_model.safetensors, optional "
           "trainable_params.safetensors): a training run's output or checkpoint"},
          {"save_path", FlagKind::String, "", "where the merged Hugging Face model directory is written"},
          {"context_size", FlagKind::Int, "-1",
           "the --model_max_length the adapter was trained with: beyond the native context it sets the RoPE "
           "scaling training used (and the tokenizer's model_max_length); -1 = the base model's"},
          {"save_dtype", FlagKind::String, "auto",
           "dtype of the saved weights: auto (the base model's), float32, bfloat16 or float16; the merge "
           "itself is always fp32"},
          {"overwrite_save_path", FlagKind::Bool, "False", "replace a non-empty --save_path"},
          {"cache_dir", FlagKind::String, "",
           "accepted for LongLoRA's command line; unused (local directories)"},
      });
  if (!f.parse(args)) return 0;
  for (const char* required : {"base_model", "peft_model", "save_path"})
    MS_CHECK(f.has(required), "merge: --", required, " is required (see `miniseq merge --help`)");
  const std::string base = f.str("base_model"), peft = f.str("peft_model"), save = f.str("save_path");
  MS_CHECK(fs::is_directory(base), "merge: --base_model ", base,
           " is not a directory; miniseq reads local Hugging Face model directories");
  MS_CHECK(fs::is_directory(peft), "merge: --peft_model ", peft, " is not a directory");
  MS_CHECK(!same_dir(save, base) && !same_dir(save, peft), "merge: --save_path ", save,
           " is the base model or the adapter directory; write the merged model elsewhere");
  if (fs::exists(save)) {
    MS_CHECK(fs::is_directory(save), "merge: --save_path ", save, " exists and is not a directory");
    MS_CHECK(fs::is_empty(save) || f.boolean("overwrite_save_path"), "merge: --save_path ", save,
             " is not empty; choose a new directory or pass --overwrite_save_path True to replace it");
  }
  const int64_t context_size = f.i64("context_size");
  MS_CHECK(context_size == -1 || context_size > 0, "merge: --context_size must be > 0 (or -1), got ",
           context_size);
  MS_CHECK(!fs::exists(fs::path(peft) / "trainable_params.bin") ||
               fs::exists(fs::path(peft) / kTrainableParamsFile),
           "merge: ", (fs::path(peft) / "trainable_params.bin").string(),
           " is a torch pickle, which miniseq does not read; convert it once with python -c \"import torch; "
           "from safetensors.torch import save_file; save_file({k: v.contiguous() for k, v in "
           "torch.load('trainable_params.bin').items()}, '",
           kTrainableParamsFile, "')\" in that directory");

  // The base model as training prepared it: RoPE rule, special tokens, grown vocabulary.
  const ModelConfig file_config = load_model_config(base);
  ModelConfig config = file_config;
  if (context_size > 0) config.rope = rope_for_length(file_config, context_size);
  nlohmann::json overrides = nlohmann::json::object();
  if (fs::exists(fs::path(base) / "tokenizer.json")) {
    const tok::Tokenizer tokenizer = tok::Tokenizer::load(base);
    const PreparedTokenizer prep = prepare_special_tokens(base, tokenizer);
    if (!prep.added.empty()) {
      std::string added;
      for (const auto& t : prep.added) added += (added.empty() ? "" : ", ") + t;
      std::printf(
          "tokenizer: added %s; vocabulary %lld -> %lld (new rows = mean of the old, as in training)\n",
          added.c_str(), (long long)config.vocab_size,
          (long long)std::max<int64_t>(config.vocab_size, prep.vocab_size));
    }
    grow_for_tokenizer(config, prep.vocab_size, prep.pad_id);
    overrides = prep.file_overrides;
  }
  const fs::path tok_config = fs::path(base) / "tokenizer_config.json";
  if (context_size > 0 && (overrides.contains("tokenizer_config.json") || fs::exists(tok_config))) {
    // LongLoRA loads the tokenizer with model_max_length=context_size, and save_pretrained writes it.
    const std::string text = overrides.contains("tokenizer_config.json")
                                 ? overrides["tokenizer_config.json"].get<std::string>()
                                 : read_all(tok_config);
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
    MS_CHECK(j.is_object(), tok_config.string(), ": expected a JSON object");
    j["model_max_length"] = context_size;
    overrides["tokenizer_config.json"] = j.dump(2, ' ', false) + "\n";
  }
  if (config.rope.type != file_config.rope.type || config.rope.factor != file_config.rope.factor)
    std::printf("rope: %s scaling, factor %g (--context_size %lld, native context %lld)\n",
                rope_type_name(config.rope.type).data(), config.rope.factor, (long long)context_size,
                (long long)file_config.native_context());

  const LoraConfig lora = read_adapter_config(peft);
  const std::vector<ParamSpec> base_specs = param_specs(config), adapter_specs = lora_specs(config, lora);
  MemoryPlan plan =
      MemoryPlan::real(Device::CPU, arena_bytes_for(base_specs) + arena_bytes_for(adapter_specs));
  const ParamSet weights(plan, base_specs, DType::F32, MemCategory::Weights);
  const ParamSet adapter(plan, adapter_specs, DType::F32, MemCategory::Weights);
  load_params_grown(SafetensorsModel(base), file_config, config, weights);
  try {
    load_adapter_weights(peft, adapter);
  } catch (const Error& e) {
    fail(e.what(), " (merge: is --base_model ", base, " the model this adapter was trained on?)");
  }
  const bool trained_params = load_trainable_params(peft, weights);
  merge_lora(weights, adapter, lora);
  std::printf("merged %zu LoRA pairs (r %lld, alpha %g, scale %g) into %s%s\n", adapter_specs.size() / 2,
              (long long)lora.r, lora.alpha, static_cast<double>(lora.scale()), base.c_str(),
              trained_params ? ("; " + std::string(kTrainableParamsFile) + " loaded over it").c_str() : "");

  DType dtype = file_config.torch_dtype;
  const std::string d = f.str("save_dtype");
  MS_CHECK(d == "auto" || (dtype_from_torch_name(d, &dtype) &&
                           (dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16)),
           "merge: --save_dtype must be auto, float32, bfloat16 or float16, got '", d, "'");
  SaveRequest r;
  r.dir = save;
  r.config = &config;
  r.weights = &weights;
  r.weights_dtype = dtype;
  r.tokenizer_dir = base;
  r.tokenizer_overrides = overrides;
  save_checkpoint(r);  // model only: written into a temporary directory, then renamed into place
  std::printf("saved %s (%s weights)\n", save.c_str(), dtype_name(dtype).data());
  return 0;
}

}  // namespace miniseq::cli
