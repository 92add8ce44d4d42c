// `miniseq generate --model DIR --prompt TEXT [--max_new_tokens N]`: continues a prompt greedily (or with
// temperature + top-p sampling) using a KV cache; --use_cache False recomputes the whole sequence per token.
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "miniseq/cli/commands.h"
#include "miniseq/cli/inference_flags.h"
#include "miniseq/eval/generate.h"
#include "miniseq/eval/inference_model.h"
#include "miniseq/io/json_read.h"
#include "miniseq/model/batch.h"

namespace miniseq::cli {

int cmd_generate(const Args& args) {
  Flags f("generate",
          "miniseq generate --model DIR (--prompt TEXT | --prompt_ids '[1,2,3]') [--max_new_tokens N] "
          "[--do_sample True --temperature T --top_p P --seed S] [--use_cache False] [--json]",
          inference_flags({
              {"prompt", FlagKind::String, "", "prompt text (tokenized with the model's tokenizer, BOS as configured)"},
              {"prompt_ids", FlagKind::String, "", "prompt as a JSON array of token ids (models without a tokenizer)"},
              {"max_new_tokens", FlagKind::Int, "32", "tokens to generate at most (stops early at EOS)"},
              {"do_sample", FlagKind::Bool, "False", "sample (temperature, top_p) instead of greedy decoding"},
              {"temperature", FlagKind::Float, "1.0", "softmax temperature when sampling"},
              {"top_p", FlagKind::Float, "1.0", "nucleus sampling: keep the most likely tokens up to this mass"},
              {"seed", FlagKind::Int, "0", "random seed when sampling"},
              {"use_cache", FlagKind::Bool, "True", "KV cache (False: recompute the whole sequence per token)"},
              {"stop_at_eos", FlagKind::Bool, "True", "stop after the model's EOS token"},
              {"json", FlagKind::Bool, "False", "print prompt ids, new ids and text as one JSON object"},
          }));
  if (!f.parse(args)) return 0;
  MS_CHECK(f.has("model"), "generate: --model is required (see `miniseq generate --help`)");
  MS_CHECK(f.has("prompt") != f.has("prompt_ids"), "generate: give exactly one of --prompt and --prompt_ids");
  const ModelSource source = inference_model_source(f, "generate");
  const std::string& dir = source.model;
  ModelConfig config = load_inference_config(dir, f.f64("rope_scaling_factor"));
  const std::string& peft = source.peft;
  const LoraConfig lora = prepare_peft_config(dir, peft, config);
  const auto tokenizer = load_tokenizer_if_present(dir, config);
  std::vector<int32_t> prompt;
  if (f.has("prompt")) {
    MS_CHECK(tokenizer, "generate: ", dir, " has no tokenizer.json; give the prompt as --prompt_ids");
    prompt = tokenizer->encode(f.str("prompt"));
  } else {
    const nlohmann::json ids = {{"input_ids", jsonio::parse(f.str("prompt_ids"), "generate: --prompt_ids",
                                                            nullptr, "not a JSON array of token ids")}};
    prompt = json_token_ids(ids, "input_ids", false, config.vocab_size, "--prompt_ids", 1);
  }
  MS_CHECK(!prompt.empty(), "generate: the prompt has no tokens");

  GenerateOptions opt;
  opt.max_new_tokens = f.i64("max_new_tokens");
  opt.use_cache = f.boolean("use_cache");
  opt.sampling.sample = f.boolean("do_sample");
  opt.sampling.temperature = f.f64("temperature");
  opt.sampling.top_p = f.f64("top_p");
  opt.sampling.seed = static_cast<uint64_t>(f.i64("seed"));
  if (f.boolean("stop_at_eos"))
    opt.eos_id = tokenizer && tokenizer->eos_id() >= 0 ? tokenizer->eos_id()
                                                       : static_cast<int32_t>(config.eos_token_id.value_or(-1));
  const StepPolicy policy = inference_policy(f);
  auto backend = inference_backend(f);
  const MemReport planned =
      plan_generation(config, static_cast<int64_t>(prompt.size()), opt, policy, backend->device(),
                      backend->param_dtype(), backend->activation_dtype(), lora);
  InferenceModel model(dir, config, *backend, planned.arena_bytes, peft, lora);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> out = generate(model.decoder(), model.plan(), backend->activation_dtype(), prompt, opt,
                                            policy);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string text = tokenizer ? tokenizer->decode(out) : "";

  if (f.boolean("json")) {
    nlohmann::json j = {{"prompt_ids", prompt}, {"new_ids", out}, {"seconds", seconds},
                        {"planned_peak_bytes", planned.peak_bytes}};
    if (tokenizer) j["text"] = text;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  if (tokenizer) {
    std::printf("%s%s\n", f.str("prompt").c_str(), text.c_str());
  } else {
    std::string ids;
    for (int32_t id : out) {
      if (!ids.empty()) ids += ' ';
      ids += std::to_string(id);
    }
    std::printf("%s\n", ids.c_str());
  }
  std::fprintf(stderr, "generate: %zu prompt tokens, %zu new tokens in %.2f s (%s); planned memory %.2f MiB\n",
               prompt.size(), out.size(), seconds, opt.use_cache ? "KV cache" : "no cache",
               static_cast<double>(planned.peak_bytes) / (1 << 20));
  return 0;
}

}  // namespace miniseq::cli
