// `miniseq train`: LongLoRA fine-tune.py's command line, natively. Flags: train/train_args.cpp (one table);
// the loop: train/trainer.cpp; `--preset demo` trains a tiny Mistral on synthetic passkey documents.
// `miniseq supervised-fine-tune` (alias `sft`): LongLoRA supervised-fine-tune.py, the same flags and loop
// over instruction records (train/sft_dataset.h) instead of pretraining blocks.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>

#include "miniseq/cli/commands.h"
#include "miniseq/dist/communicator.h"
#include "miniseq/ops/dry_backend.h"
#include "miniseq/train/demo_preset.h"
#include "miniseq/train/model_setup.h"
#include "miniseq/train/sft_dataset.h"
#include "miniseq/train/special_tokens.h"
#include "miniseq/train/trainer.h"

namespace miniseq::cli {

namespace {

// The demo's defaults, applied unless the flag was given on the command line.
void apply_demo_defaults(Flags& f, std::vector<std::string>& args) {
  const std::pair<const char*, const char*> defaults[] = {
      {"output_dir", "demo-out/train"}, {"model_max_length", "4096"},   {"per_device_train_batch_size", "1"},
      {"max_steps", "60"},              {"learning_rate", "2e-3"},      {"warmup_steps", "5"},
      {"lr_scheduler_type", "cosine"},  {"logging_steps", "5"},         {"save_steps", "30"},
      {"save_total_limit", "1"},        {"weight_decay", "0.0"},        {"seed", "42"},
      {"mlp_chunk_tokens", "512"},      {"lm_head_chunks", "8"},        {"low_rank_training", "False"}};
  for (const auto& [name, value] : defaults)
    if (!f.given(name)) args.push_back(std::string("--") + name + "=" + value);
}

// The log lines of a supervised fine-tuning dataset.
void print_sft_stats(const SftStats& s, int64_t max_len) {
  std::printf(
      "supervised fine-tuning data: %lld records, %lld tokens (%lld response tokens trained), longest %lld\n",
      (long long)s.records, (long long)s.tokens, (long long)s.target_tokens, (long long)s.longest);
  if (s.truncated > 0)
    std::printf(
        "  %lld %s longer than --model_max_length %lld and truncated to it, as LongLoRA does (the "
        "first: %s)\n",
        (long long)s.truncated, s.truncated == 1 ? "record is" : "records are", (long long)max_len,
        s.first_truncated.c_str());
  if (s.without_target > 0)
    std::printf(
        "  %lld %s no response token after truncation and add%s nothing to the loss (the first: %s)\n",
        (long long)s.without_target, s.without_target == 1 ? "record keeps" : "records keep",
        s.without_target == 1 ? "s" : "", s.first_without_target.c_str());
}

int train_command(const Args& raw_args, bool sft) {
  Flags f = train_flags(sft);
  if (!f.parse(raw_args)) return 0;
  TrainSetup setup;
  // The ranks, when launched by mpirun or srun (docs/distributed.md); a plain run never initializes MPI. Only
  // rank 0 prints.
  dist::Communicator& comm = dist::world(f.str("device") == "cuda" ? Device::CUDA : Device::CPU);
  comm.set_timeout_seconds(f.f64("dist_timeout"));
  setup.comm = &comm;
  const bool root = comm.is_root();
  Dataset data;
  MS_CHECK(!sft || f.str("preset").empty(),
           "--preset is a `miniseq train` flag (supervised fine-tuning needs --model_name_or_path and "
           "--data_path)");
  if (f.str("preset") == "demo") {
    Args args = raw_args;
    apply_demo_defaults(f, args);
    f = train_flags();
    f.parse(args);
    setup.args = train_args_from(f);
    setup.file_config = setup.config = demo_model_config(setup.args.model_max_length);
    const uint64_t seed = static_cast<uint64_t>(setup.args.seed);
    setup.init_weights = [seed](const ParamSet& w, Backend* be) { init_random_weights(w, seed, be); };
    for (const auto& [name, text] : demo_tokenizer_files()) setup.tokenizer_overrides[name] = text;
    const int64_t S = setup.args.model_max_length;
    data = Dataset::from_stream(demo_token_stream(S * 24, S * 3 / 4, seed),
                                DataSpec{S, setup.config.vocab_size, -1, 0});
  } else {
    MS_CHECK(f.str("preset").empty(), "--preset '", f.str("preset"), "' is unknown (available: demo)");
    setup.args = train_args_from(f);
    const TrainArgs& a = setup.args;
    MS_CHECK(!a.model_name_or_path.empty(), "--model_name_or_path is required (a local model directory)");
    MS_CHECK(!a.data_path.empty(), "--data_path is required (",
             sft ? "a JSON list or JSONL of {\"instruction\", \"input\", \"output\"} records"
                 : "JSONL with \"text\" or \"input_ids\"",
             ")");
    MS_CHECK(std::filesystem::is_directory(a.model_name_or_path), "--model_name_or_path ", a.model_name_or_path,
             " is not a directory; miniseq reads local Hugging Face model directories (download it first)");
    setup.model_dir = a.model_name_or_path;
    setup.file_config = load_model_config(a.model_name_or_path);
    setup.config = setup.file_config;
    setup.config.rope = rope_for_length(setup.file_config, a.model_max_length);
    DataSpec spec;
    spec.seq = a.model_max_length;
    TokenizeFn tokenize;
    // Held by pointer, never moved: a Tokenizer is not relocatable once built (its caches point into it).
    std::unique_ptr<tok::Tokenizer> tokenizer, sft_tokenizer;
    SftTokenization sft_tok;
    MS_CHECK(!sft || std::filesystem::exists(std::filesystem::path(a.model_name_or_path) / "tokenizer.json"),
             a.model_name_or_path,
             " has no tokenizer.json; supervised fine-tuning tokenizes its prompts with the model's "
             "tokenizer (copy "
             "the tokenizer files of the model into it)");
    if (std::filesystem::exists(std::filesystem::path(a.model_name_or_path) / "tokenizer.json")) {
      // LongLoRA: add the missing special tokens ([PAD] first) and grow the vocabulary to len(tokenizer).
      tokenizer = std::make_unique<tok::Tokenizer>(tok::Tokenizer::load(a.model_name_or_path));
      const PreparedTokenizer prep = prepare_special_tokens(a.model_name_or_path, *tokenizer);
      if (!prep.added.empty() && root) {
        std::string added;
        for (const auto& t : prep.added) added += (added.empty() ? "" : ", ") + t;
        std::printf("tokenizer: added %s; vocabulary %lld -> %lld (new embedding and LM-head rows = mean of the old)\n",
                    added.c_str(), (long long)setup.config.vocab_size,
                    (long long)std::max<int64_t>(setup.config.vocab_size, prep.vocab_size));
      }
      grow_for_tokenizer(setup.config, prep.vocab_size, prep.pad_id);
      setup.tokenizer_overrides = prep.file_overrides;
      spec.eos_id = prep.eos_id;
      spec.pad_id = prep.pad_id;
      const tok::Tokenizer* t = tokenizer.get();
      tokenize = [t](const std::vector<std::string>& texts) { return t->encode_batch(texts, /*add_special_tokens=*/true); };
      if (sft) {  // as LongLoRA, the prompts are tokenized after the additions: "[PAD]" etc. are tokens then
        if (prep.file_overrides.contains("tokenizer.json")) {
          const auto& o = prep.file_overrides;
          sft_tokenizer = std::make_unique<tok::Tokenizer>(tok::Tokenizer::from_json(
              o["tokenizer.json"].get<std::string>(), o["tokenizer_config.json"].get<std::string>(),
              (std::filesystem::path(a.model_name_or_path) / "tokenizer.json").string() +
                  " (with added tokens)"));
        }
        sft_tok.tokenizer = sft_tokenizer ? sft_tokenizer.get() : t;
        sft_tok.eos_token = sft_tok.tokenizer->id_to_token(prep.eos_id).value_or("");
        sft_tok.pad_id = prep.pad_id;
        sft_tok.max_len = a.model_max_length;
      }
    } else {
      const ModelConfig& c = setup.config;
      spec.eos_id = c.eos_token_id ? static_cast<int32_t>(*c.eos_token_id) : -1;
      spec.pad_id = c.pad_token_id ? static_cast<int32_t>(*c.pad_token_id) : std::max(spec.eos_id, 0);
    }
    spec.vocab = setup.config.vocab_size;
    // The plan before the data: on the CPU a run that cannot fit is refused before the data is read (the
    // device's own budget is checked in run_training, once the GPU is open).
    if (a.device != "cuda") plan_or_refuse(setup.config, a, device_memory_budget(a, DryBackend()));
    // Tokenized once into the token cache beside the data and memory-mapped (train/token_cache.h); the key names
    // the tokenization: tokenizer.json and the special tokens added to it.
    std::string key = "no tokenizer";
    if (tokenizer) {
      std::ifstream in(std::filesystem::path(a.model_name_or_path) / "tokenizer.json", std::ios::binary);
      key.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      key += setup.tokenizer_overrides.dump();
    }
    if (sft) {
      SftStats stats;
      data = sft_dataset(a.data_path, sft_tok, spec.vocab, &stats);
      if (root) print_sft_stats(stats, a.model_max_length);
    } else {
      // Rank 0 builds the token cache (once, beside the data); the other ranks then map it.
      if (!root) comm.barrier();
      data = Dataset::from_jsonl_cached(a.data_path, spec, tokenize, key,
                                        /*progress=*/root);  // refuses too little data
      if (root) comm.barrier();
    }
    setup.tokenizer_dir = a.model_name_or_path;
  }
  setup.data = &data;
  if (root) std::printf("miniseq %s:\n%s", sft ? "supervised-fine-tune" : "train", f.effective_config().c_str());
  if (root && (setup.config.rope.type != setup.file_config.rope.type ||
               setup.config.rope.factor != setup.file_config.rope.factor))
    std::printf("RoPE %s scaling: factor %g for model_max_length %lld (native context %lld)\n",
                std::string(rope_type_name(setup.config.rope.type)).c_str(), setup.config.rope.factor,
                (long long)setup.args.model_max_length, (long long)setup.file_config.native_context());
  std::fflush(stdout);

  if (setup.args.data_parallel == 0)  // plans count the ranks (ZeRO)
    setup.args.data_parallel = std::max<int64_t>(1, comm.size() / setup.args.sequence_parallel);
  const TrainResult r = run_training(setup);
  if (!root) return r.nonfinite_step > 0 ? 4 : r.interrupted ? 130 : 0;  // rank 0 reports
  if (r.nonfinite_step > 0) {
    std::fprintf(stderr,
                 "miniseq: error: training diverged: non-finite loss or gradient norm at step %lld. %s; lower "
                 "--learning_rate, check the data, or pass --skip_nonfinite_steps True to skip such steps\n",
                 (long long)r.nonfinite_step,
                 r.last_good_checkpoint.empty()
                     ? "No checkpoint of this run exists yet"
                     : ("Resume from " + r.last_good_checkpoint + " (--resume_from_checkpoint True)").c_str());
    return 4;
  }
  if (r.steps_this_run == 0)
    std::printf("no steps run: the run was already at step %lld\n", (long long)r.steps);
  else if (r.logged)
    std::printf("logged loss %.4f -> %.4f over %lld steps of this run (step %lld of the run)\n", r.first_logged_loss,
                r.last_logged_loss, (long long)r.steps_this_run, (long long)r.steps);
  else  // stopped before its first --logging_steps step: the step losses, not zeros
    std::printf(
        "loss %.4f -> %.4f over %lld steps of this run (step %lld of the run; none was a logging step)\n",
        r.first_loss, r.last_loss, (long long)r.steps_this_run, (long long)r.steps);
  // What MsT bought: the same run planned without it.
  StepPolicy no_mst = r.policy;
  no_mst.mini_sequence = false;
  const MemReport without = plan_training(setup.config, setup.args, no_mst);
  std::printf("planned peak: %s with mini-sequence, %s without (checkpointing %s)\n",
              human_bytes(r.planned.arena_bytes).c_str(), human_bytes(without.arena_bytes).c_str(),
              setup.args.gradient_checkpointing ? "on" : "off");
  if (r.interrupted) return 130;
  if (setup.args.lora.enabled)
    std::printf(
        "final adapter: %s (PEFT adapter_model.safetensors + adapter_config.json%s; checkpoints: "
        "%s/checkpoint-*). A full model: miniseq merge --base_model %s --peft_model %s --save_path "
        "MERGED%s\n",
        r.final_dir.c_str(), setup.args.lora.trainable_params.empty() ? "" : ", trainable_params.safetensors",
        setup.args.output_dir.c_str(), setup.model_dir.empty() ? "BASE" : setup.model_dir.c_str(),
        r.final_dir.c_str(),
        setup.config.rope.factor != setup.file_config.rope.factor
            ? (" --context_size " + std::to_string(setup.args.model_max_length)).c_str()
            : "");
  else
    std::printf("final model: %s (checkpoints: %s/checkpoint-*)\n", r.final_dir.c_str(),
                setup.args.output_dir.c_str());
  return 0;
}

}  // namespace

int cmd_train(const Args& args) {
  return train_command(args, /*sft=*/false);
}
int cmd_sft(const Args& args) {
  return train_command(args, /*sft=*/true);
}

}  // namespace miniseq::cli
