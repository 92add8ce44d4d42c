// `miniseq eval --model DIR --data FILE --seq_len N [--stride K] [--batch B]`: perplexity and next-token accuracy
// of a token stream over sliding windows (eval/perplexity.h), forward only. The memory of the whole evaluation is
// planned first (dry run of the same calls) and the weights are loaded into an arena of exactly that size.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "miniseq/cli/commands.h"
#include "miniseq/cli/inference_flags.h"
#include "miniseq/core/progress.h"
#include "miniseq/core/rss.h"
#include "miniseq/eval/inference_model.h"
#include "miniseq/eval/perplexity.h"
#include "miniseq/eval/token_stream.h"

namespace miniseq::cli {

int cmd_eval(const Args& args) {
  Flags f("eval",
          "miniseq eval --model DIR --data FILE --seq_len N [--stride K] [--batch B] [--rope_scaling_factor F] "
          "[--token_dtype uint16|uint32] [--json]",
          inference_flags({
              {"data", FlagKind::String, "",
               "token stream: flat binary of ids (LongLoRA's PG19/proof-pile .bin; see --token_dtype), or .jsonl "
               "documents ({\"text\"} or {\"input_ids\"}) or .txt text, tokenized with the model's tokenizer"},
              {"data_format", FlagKind::String, "", "bin, jsonl or text (default: from the file name)"},
              {"token_dtype", FlagKind::String, "uint16", "width of the ids of a binary file: uint16 or uint32"},
              {"seq_len", FlagKind::Int, "0", "window length in tokens"},
              {"stride", FlagKind::Int, "0", "tokens between window starts (0 = seq_len: disjoint windows)"},
              {"batch", FlagKind::Int, "1", "windows per forward pass"},
              {"json", FlagKind::Bool, "False", "print the result as one JSON object on stdout"},
              {"progress", FlagKind::Bool, "True", "progress line on stderr"},
          }));
  if (!f.parse(args)) return 0;
  for (const char* required : {"model", "data"})
    MS_CHECK(f.has(required), "eval: --", required, " is required (see `miniseq eval --help`)");
  const int64_t seq_len = f.i64("seq_len");
  MS_CHECK(seq_len >= 2, "eval: --seq_len N (the window length, >= 2) is required");
  const int64_t stride = f.i64("stride") > 0 ? f.i64("stride") : seq_len;
  const std::string dtype = f.str("token_dtype");
  MS_CHECK(dtype == "uint16" || dtype == "uint32", "eval: --token_dtype must be uint16 or uint32, got '", dtype, "'");

  const ModelSource source = inference_model_source(f, "eval");
  const std::string& dir = source.model;
  const std::string data = f.str("data");
  ModelConfig config = load_inference_config(dir, f.f64("rope_scaling_factor"));
  const std::string& peft = source.peft;
  const LoraConfig lora = prepare_peft_config(dir, peft, config);
  const StreamFormat format = f.str("data_format").empty() ? stream_format_for(data)
                                                            : parse_stream_format(f.str("data_format"));
  std::vector<int32_t> stream;
  if (format == StreamFormat::Binary) {
    stream = read_token_binary(data, dtype == "uint16" ? 2 : 4, config.vocab_size);
  } else {
    const auto tokenizer = load_tokenizer_if_present(dir, config);
    DocumentTokenizer tokenize;
    if (tokenizer)
      tokenize = [&](const std::vector<std::string>& docs) { return tokenizer->encode_batch(docs); };
    stream = read_token_text(data, format, config.vocab_size, tokenize);
  }
  const auto n = static_cast<int64_t>(stream.size());
  const StepPolicy policy = inference_policy(f);
  auto backend = inference_backend(f);

  const MemReport planned =
      plan_evaluation(config, n, seq_len, stride, f.i64("batch"), policy, backend->device(),
                      backend->param_dtype(), backend->activation_dtype(), lora);
  backend->warm_up();
  const size_t rss_baseline = current_rss_bytes();
  InferenceModel model(dir, config, *backend, planned.arena_bytes, peft, lora);
  const int64_t n_windows = static_cast<int64_t>(eval_windows(n, seq_len, stride).size());
  Progress bar("eval", n_windows, f.boolean("progress"));
  reset_peak_rss();
  const EvalResult r = evaluate_stream(model.decoder(), stream, seq_len, stride, f.i64("batch"), policy,
                                       [&](int64_t done, int64_t, int64_t scored) {
                                         char extra[64];
                                         std::snprintf(extra, sizeof extra, "windows, %.0f tokens/s",
                                                       static_cast<double>(scored) / bar.seconds());
                                         bar.update(done, extra);
                                       });
  const double seconds = bar.seconds();
  const size_t rss_peak = peak_rss_bytes();
  const MemReport measured = model.plan().report();

  if (f.boolean("json")) {
    nlohmann::json j = {{"model", dir},
                        {"data", data},
                        {"tokens", n},
                        {"seq_len", seq_len},
                        {"stride", stride},
                        {"batch", f.i64("batch")},
                        {"windows", r.windows},
                        {"scored_tokens", r.scored},
                        {"loss", r.mean_loss()},
                        {"perplexity", r.perplexity()},
                        {"accuracy", r.accuracy()},
                        {"seconds", seconds},
                        {"planned_peak_bytes", planned.peak_bytes},
                        {"measured_peak_bytes", measured.peak_bytes}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("data: %s, %lld tokens; %lld windows of %lld tokens (stride %lld), %lld tokens scored once each\n",
              data.c_str(), (long long)n, (long long)r.windows, (long long)seq_len, (long long)stride,
              (long long)r.scored);
  std::printf("loss %.6f  perplexity %.4f  accuracy %.4f\n", r.mean_loss(), r.perplexity(), r.accuracy());
  std::printf("time %.2f s, %.1f scored tokens/s\n", seconds, static_cast<double>(r.scored) / seconds);
  std::printf("planned memory: %s", planned.str().c_str());
  if (backend->device() == Device::CPU)
    std::printf("measured peak RSS above the process baseline: %.2f MiB (planned arena %.2f MiB)\n",
                static_cast<double>(rss_peak > rss_baseline ? rss_peak - rss_baseline : 0) / (1 << 20),
                static_cast<double>(planned.arena_bytes) / (1 << 20));
  return 0;
}

}  // namespace miniseq::cli
