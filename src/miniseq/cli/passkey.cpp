// `miniseq passkey --model DIR --max_tokens N [--interval K] [--trials 10] [--seed S]`: LongLoRA's passkey
// retrieval test (eval/passkey.h). For every context length, `trials` prompts with the key at random depths;
// greedy decoding of as many tokens as " " + key adds to the prompt; a trial passes when they are exactly
// those tokens (passkey_answer: the space is a token of its own in byte-level vocabularies). Prints a table
// (accuracy per average prompt length) and, with --json FILE, writes the same as JSON.
#include <algorithm>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "miniseq/cli/commands.h"
#include "miniseq/cli/inference_flags.h"
#include "miniseq/core/progress.h"
#include "miniseq/eval/generate.h"
#include "miniseq/eval/inference_model.h"
#include "miniseq/eval/passkey.h"

namespace miniseq::cli {

int cmd_passkey(const Args& args) {
  Flags f("passkey",
          "miniseq passkey --model DIR --max_tokens N [--interval K] [--trials 10] [--seed S] [--json FILE]",
          inference_flags({
              {"max_tokens", FlagKind::Int, "0", "longest context to test (exclusive), in tokens"},
              {"interval", FlagKind::Int, "1000", "step between tested context lengths"},
              {"trials", FlagKind::Int, "10", "prompts per context length (key at a random depth each)"},
              {"seed", FlagKind::Int, "0", "trial i of every length uses seed + i"},
              {"chars_per_token", FlagKind::Float, "0",
               "filler characters per target token (0 = measured with the model's tokenizer; LongLoRA: 3.75)"},
              {"json", FlagKind::String, "", "also write the results to this JSON file"},
              {"progress", FlagKind::Bool, "True", "progress line on stderr"},
          }));
  if (!f.parse(args)) return 0;
  MS_CHECK(f.has("model"), "passkey: --model is required (see `miniseq passkey --help`)");
  MS_CHECK(f.i64("trials") >= 1, "passkey: --trials must be >= 1");
  const ModelSource source = inference_model_source(f, "passkey");
  const std::string& dir = source.model;
  ModelConfig config = load_inference_config(dir, f.f64("rope_scaling_factor"));
  const std::string& peft = source.peft;
  const LoraConfig lora = prepare_peft_config(dir, peft, config);
  const auto tokenizer = load_tokenizer_if_present(dir, config);
  MS_CHECK(tokenizer, "passkey: ", dir, " has no tokenizer.json; the test is posed in text");
  const double ratio = f.f64("chars_per_token") > 0
                           ? f.f64("chars_per_token")
                           : passkey_chars_per_token([&](const std::string& s) {
                               return static_cast<int64_t>(tokenizer->encode(s, false).size());
                             });
  std::vector<int64_t> fillers = passkey_filler_lengths(f.i64("max_tokens"), f.i64("interval"), ratio);
  const int64_t max_tokens = f.i64("max_tokens");
  const int64_t trials = f.i64("trials");

  // All prompts first: the memory plan is made for the longest.
  struct Trial {
    std::vector<int32_t> prompt;
    PasskeyAnswer answer;
  };
  const PasskeyEncodeFn encode = [&](const std::string& s) {
    return tokenizer->encode(s, /*add_special_tokens=*/false);
  };
  std::vector<std::vector<Trial>> runs;
  int64_t longest = 0, answer_max = 0;
  std::vector<int64_t> tested;  // the fillers that stay distinct once fitted to --max_tokens
  for (int64_t n_garbage : fillers) {
    // The whole context (prompt and answer) stays within --max_tokens: the filler of a length whose prompts
    // would pass it (the instructions and the key add tokens to the filler's) shrinks by 1024 characters at a
    // time, LongLoRA's granularity.
    std::vector<Trial> length;
    for (;;) {
      length.clear();
      int64_t over = 0;
      for (int64_t i = 0; i < trials; ++i) {
        const PasskeyPrompt p = passkey_prompt(n_garbage, static_cast<uint64_t>(f.i64("seed") + i));
        Trial t{tokenizer->encode(p.text), passkey_answer(p.text, p.answer, encode)};
        over = std::max<int64_t>(over, static_cast<int64_t>(t.prompt.size() + t.answer.tokens.size()) - max_tokens);
        length.push_back(std::move(t));
      }
      if (over <= 0 || n_garbage < 1024) break;
      n_garbage -= 1024;
    }
    MS_CHECK(static_cast<int64_t>(length[0].prompt.size() + length[0].answer.tokens.size()) <= max_tokens,
             "passkey: --max_tokens ", max_tokens, " is too short for even the shortest prompt (",
             length[0].prompt.size(), " tokens)");
    if (!tested.empty() && n_garbage <= tested.back()) continue;  // shrunk onto the previous length
    tested.push_back(n_garbage);
    for (const Trial& t : length) {
      longest = std::max<int64_t>(longest, static_cast<int64_t>(t.prompt.size()));
      answer_max = std::max<int64_t>(answer_max, static_cast<int64_t>(t.answer.tokens.size()));
    }
    runs.push_back(std::move(length));
  }
  fillers = tested;
  GenerateOptions opt;
  opt.max_new_tokens = answer_max;
  opt.eos_id = tokenizer->eos_id();
  const StepPolicy policy = inference_policy(f);
  auto backend = inference_backend(f);
  const MemReport planned = plan_generation(config, longest, opt, policy, backend->device(),
                                            backend->param_dtype(), backend->activation_dtype(), lora);
  InferenceModel model(dir, config, *backend, planned.arena_bytes, peft, lora);
  std::printf("passkey: %zu context lengths x %lld trials (%.2f filler characters per token), longest prompt %lld "
              "tokens; planned memory %.2f MiB\n",
              fillers.size(), (long long)trials, ratio, (long long)longest,
              static_cast<double>(planned.peak_bytes) / (1 << 20));

  const PasskeyDecodeFn decode = [&](const std::vector<int32_t>& ids) { return tokenizer->decode(ids); };
  Progress bar("passkey", static_cast<int64_t>(fillers.size()) * trials, f.boolean("progress"));
  nlohmann::json results = nlohmann::json::array();
  std::printf("%10s  %10s  %8s\n", "tokens", "accuracy", "passed");
  int64_t done = 0;
  for (size_t k = 0; k < runs.size(); ++k) {
    int64_t passed = 0, tokens = 0;
    for (const Trial& t : runs[k]) {
      GenerateOptions o = opt;
      o.max_new_tokens = static_cast<int64_t>(t.answer.tokens.size());
      const auto out = generate(model.decoder(), model.plan(), backend->activation_dtype(), t.prompt, o, policy);
      passed += passkey_passed(t.answer, out, decode) ? 1 : 0;
      tokens += static_cast<int64_t>(t.prompt.size());
      bar.update(++done);
    }
    const int64_t avg = tokens / trials;
    const double acc = static_cast<double>(passed) / static_cast<double>(trials);
    std::printf("%10lld  %10.2f  %4lld/%lld\n", (long long)avg, acc, (long long)passed, (long long)trials);
    results.push_back({{"tokens", avg}, {"filler_chars", fillers[k]}, {"accuracy", acc}, {"passed", passed},
                       {"trials", trials}});
  }
  if (f.has("json")) {
    std::ofstream out(f.str("json"));
    MS_CHECK(out, "passkey: cannot write ", f.str("json"));
    out << nlohmann::json{{"model", dir}, {"results", results}}.dump(2) << "\n";
    std::printf("wrote %s\n", f.str("json").c_str());
  }
  return 0;
}

}  // namespace miniseq::cli
