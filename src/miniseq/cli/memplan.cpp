// `miniseq memplan`: the peak memory of a training run before it runs, from a model directory or a bare
// config.json: the real step schedule executed dry (model/planner.h), per category and with the moment of the peak,
// for the requested policy and the alternatives; --find_max_length searches the longest sequence that fits
// --memory under each policy; --auto picks chunk sizes; --json prints one JSON object.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "miniseq/cli/commands.h"
#include "miniseq/cli/flags.h"
#include "miniseq/cli/lora_flags.h"
#include "miniseq/eval/perplexity.h"
#include "miniseq/model/param_spec.h"
#include "miniseq/model/planner.h"
#include "miniseq/model/sequence_parallel.h"

namespace miniseq::cli {

namespace {

// "80GiB", "141 GB", "512MiB", "1.5TiB", or a plain number of bytes.
size_t parse_memory(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  MS_CHECK(end != s.c_str() && v > 0, "--memory '", s, "' is not a size like 80GiB");
  std::string unit(end);
  unit.erase(0, unit.find_first_not_of(' '));
  double mult = 1;
  if (unit == "" || unit == "B") mult = 1;
  else if (unit == "KiB") mult = 1024.0;
  else if (unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else if (unit == "TiB") mult = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "KB") mult = 1e3;
  else if (unit == "MB") mult = 1e6;
  else if (unit == "GB") mult = 1e9;
  else if (unit == "TB") mult = 1e12;
  else fail("--memory '", s, "': unknown unit '", unit, "' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
  return static_cast<size_t>(v * mult);
}

// "7.242B", "124.4M", "250.4K", "96": a parameter count at its scale.
std::string count_label(int64_t n) {
  char buf[32];
  const auto v = static_cast<double>(n);
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.3fB", v / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.1fK", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", (long long)n);
  return buf;
}

std::string gib(size_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1ull << 30));
  return buf;
}

nlohmann::json report_json(const MemReport& r) {
  nlohmann::json cats = nlohmann::json::object(), own = nlohmann::json::object();
  for (int i = 0; i < kNumMemCategories; ++i) {
    auto c = static_cast<MemCategory>(i);
    cats[std::string(mem_category_name(c))] = r.at_peak[c];
    own[std::string(mem_category_name(c))] = r.peak_by_category[c];
  }
  return {{"peak_bytes", r.peak_bytes},     {"arena_bytes", r.arena_bytes}, {"by_category", cats},
          {"peak_by_category", own},        {"peak_moment", r.peak_moment}};
}

std::string policy_label(const StepPolicy& p) {
  if (p.mini_sequence && p.checkpointing) return "checkpointing + MsT";
  if (p.checkpointing) return "checkpointing only";
  if (p.mini_sequence) return "MsT only";
  return "neither";
}

}  // namespace

int cmd_memplan(const Args& args) {
  Flags f("memplan",
          "miniseq memplan --model DIR_OR_CONFIG.json --model_max_length S [--per_device_train_batch_size B] "
          "[--device cpu|cuda] [--memory 80GiB] [--find_max_length] [--auto] [--json] [policy flags] "
          "[--low_rank_training True [LoRA flags]]",
          with_flags({
              {"model", FlagKind::String, "", "model directory or config.json (no weights needed)"},
              {"model_max_length", FlagKind::Int, "", "sequence length S"},
              {"per_device_train_batch_size", FlagKind::Int, "1", "sequences per micro-batch"},
              {"device", FlagKind::String, "cpu", "cpu (fp32) or cuda (bf16 weights/grads/activations)"},
              {"memory", FlagKind::String, "", "budget for --find_max_length and --auto, e.g. 80GiB"},
              {"mini_sequence", FlagKind::Bool, "True", "MsT chunking of MLP and LM head"},
              {"gradient_checkpointing", FlagKind::Bool, "True", "per-layer activation checkpointing"},
              {"mlp_chunk_tokens", FlagKind::Int, "0", "rows per MLP chunk (0 = hidden_size)"},
              {"lm_head_chunks", FlagKind::Int, "0", "LM-head chunks (0 = ceil(vocab / hidden))"},
              {"moments_dtype", FlagKind::String, "float32", "AdamW moments: float32 or bfloat16"},
              {"master_weights", FlagKind::Bool, "True",
               "fp32 master weights beside bf16 weights (False: stochastic rounding, no master)"},
              {"grad_dtype", FlagKind::String, "float32", "gradients: float32 or bfloat16"},
              {"gradient_accumulation_steps", FlagKind::Int, "1",
               "micro-batches per step (> 1 rules out the optimizer in backward, also for --auto)"},
              {"optimizer_in_backward", FlagKind::Bool, "False", "update parameters inside backward (no grad buffer)"},
              {"offload_optimizer", FlagKind::Bool, "False", "AdamW moments + fp32 master weights in host memory"},
              {"offload_checkpoints", FlagKind::Int, "0", "checkpointed inputs of the first N layers on the host (-1 = all)"},
              {"host_memory", FlagKind::String, "", "host memory budget for offloaded state, e.g. 128GiB"},
              {"data_parallel", FlagKind::Int, "1", "data-parallel ranks (the plan is one rank's: docs/distributed.md)"},
              {"sequence_parallel", FlagKind::Int, "1",
               "Ulysses: P ranks share each sequence (the plan is one rank's, S/P tokens of each sequence)"},
              {"zero_stage", FlagKind::Int, "0",
               "1: AdamW state and master weights sharded over the ranks (ZeRO-1); 2: also the gradients"},
              {"find_max_length", FlagKind::Bool, "False", "longest S that fits --memory, per policy"},
              {"policy_ladder", FlagKind::Bool, "True",
               "with --find_max_length: also the longest S of every memory policy of the ladder"},
              {"auto", FlagKind::Bool, "False", "choose chunk sizes that fit --memory with the fewest chunks"},
              {"json", FlagKind::Bool, "False", "print one JSON object instead of text"},
          }, lora_flag_specs("False")));
  if (!f.parse(args)) return 0;
  MS_CHECK(f.has("model"), "memplan: --model is required (a model directory or a config.json)");
  const ModelConfig c = load_model_config(f.str("model"));
  const std::string device = f.str("device");
  MS_CHECK(device == "cpu" || device == "cuda", "memplan: --device must be cpu or cuda");
  PlanTarget target = device == "cuda" ? PlanTarget::cuda() : PlanTarget::cpu();
  MS_CHECK(dtype_from_torch_name(f.str("moments_dtype"), &target.moments) && target.moments != DType::F16,
           "memplan: --moments_dtype must be float32 or bfloat16");
  DType grads = DType::F32;
  MS_CHECK(dtype_from_torch_name(f.str("grad_dtype"), &grads) && grads != DType::F16,
           "memplan: --grad_dtype must be float32 or bfloat16");
  target = with_precision(target, f.boolean("master_weights"), grads);
  target.lora = lora_config_from(f);
  const int64_t GA = f.i64("gradient_accumulation_steps");
  MS_CHECK(GA >= 1, "memplan: --gradient_accumulation_steps must be >= 1");
  target.optimizer_in_backward = f.boolean("optimizer_in_backward");
  MS_CHECK(!target.optimizer_in_backward || GA == 1,
           "memplan: --optimizer_in_backward True needs --gradient_accumulation_steps 1");
  MS_CHECK(!f.boolean("offload_optimizer") || (target.master_weights && grads == DType::F32),
           "memplan: --offload_optimizer True keeps fp32 master weights and fp32 gradients (--master_weights True "
           "--grad_dtype float32)");
  target.offload_optimizer = f.boolean("offload_optimizer");
  target.offload_layers = f.i64("offload_checkpoints");
  MS_CHECK(target.offload_layers >= -1, "memplan: --offload_checkpoints must be a layer count or -1 (all)");
  const int64_t D = f.i64("data_parallel"), zero = f.i64("zero_stage");
  MS_CHECK(D >= 1, "memplan: --data_parallel must be >= 1");
  MS_CHECK(zero >= 0 && zero <= 2, "memplan: --zero_stage must be 0, 1 or 2");
  MS_CHECK(zero < 2 || grads == DType::F32,
           "memplan: --zero_stage 2 keeps fp32 gradient shards; use it with "
           "--grad_dtype float32");
  const int64_t P = f.i64("sequence_parallel");
  MS_CHECK(P >= 1, "memplan: --sequence_parallel must be >= 1");
  const std::string heads = sequence_parallel_heads_problem(c.num_attention_heads, c.num_key_value_heads, P);
  MS_CHECK(heads.empty(), "memplan: --sequence_parallel ", P, ": ", heads);
  target.sequence_parallel = P > 1 ? P : 0;
  target.zero_ranks = zero >= 1 ? D * P : 0;  // ZeRO shards over every rank (D x P)
  target.zero_grads = zero >= 2;
  const int64_t B = f.i64("per_device_train_batch_size");
  MS_CHECK(B >= 1, "memplan: --per_device_train_batch_size must be >= 1");
  const bool find = f.boolean("find_max_length"), autoc = f.boolean("auto");
  MS_CHECK(f.has("model_max_length") || find, "memplan: --model_max_length is required (or --find_max_length)");
  const int64_t S = f.has("model_max_length") ? f.i64("model_max_length") : 0;
  MS_CHECK(!f.has("model_max_length") || S >= 1, "memplan: --model_max_length must be >= 1");
  MS_CHECK(S % P == 0, "memplan: --sequence_parallel ", P, " splits every sequence into equal shards: "
           "--model_max_length ", S, " must be divisible by it");
  size_t budget = 0;
  if (f.has("memory")) budget = parse_memory(f.str("memory"));
  const size_t host_budget = f.has("host_memory") ? parse_memory(f.str("host_memory")) : 0;
  MS_CHECK(budget > 0 || !(find || autoc), "memplan: --find_max_length and --auto need --memory (e.g. 80GiB)");

  StepPolicy req;
  req.mini_sequence = f.boolean("mini_sequence");
  req.checkpointing = f.boolean("gradient_checkpointing");
  req.mlp_chunk_tokens = f.i64("mlp_chunk_tokens");
  req.lm_head_chunks = f.i64("lm_head_chunks");
  bool auto_ok = true;
  std::string auto_name;
  // --auto: the cheapest memory policy (policy_ladder) that fits, then its chunk sizes.
  if (autoc && S > 0) auto_ok = auto_policy(c, B, S, budget, host_budget, &target, &req, &auto_name, GA);

  nlohmann::json out = {{"moments_dtype", std::string(dtype_name(target.moments))},
                        {"master_weights", keeps_master(target)},
                        {"grad_dtype", std::string(dtype_name(target.grad_precision))},
                        {"gradient_accumulation_steps", GA},
                        {"optimizer_in_backward", target.optimizer_in_backward},
                        {"offload_optimizer", target.offload_optimizer},
                        {"offload_checkpoints", target.offload_layers},
                        {"model_type", std::string(arch_name(c.arch))},
                        {"parameters", param_count(param_specs(c))},
                        {"low_rank_training", target.lora.enabled},
                        {"trainable_parameters", param_count(trainable_specs(c, target.lora))},
                        {"device", device},
                        {"batch", B},
                        {"data_parallel", D},
                        {"sequence_parallel", P},
                        {"zero_stage", zero}};
  const bool text = !f.boolean("json");
  if (text)
    std::printf("memplan: %s, %s parameters, batch %lld, device %s (%s weights%s, %s grads%s%s, %s activations, "
                "%s AdamW moments%s)\n",
                std::string(arch_name(c.arch)).c_str(), count_label(param_count(param_specs(c))).c_str(),
                (long long)B, device.c_str(), std::string(dtype_name(target.params)).c_str(),
                keeps_master(target)      ? " + fp32 master"
                : !target.master_weights ? " without master (stochastic rounding)"
                                          : "",
                std::string(dtype_name(target.grad_precision)).c_str(),
                target.grads != target.grad_precision ? " (emulated in F32)" : "",
                target.optimizer_in_backward ? " per group (optimizer in backward)" : "",
                std::string(dtype_name(target.activations)).c_str(), std::string(dtype_name(target.moments)).c_str(),
                zero >= 1 ? (", 1/" + std::to_string(D * P) + " of them and of the master" +
                             (zero >= 2 ? " and gradients" : "") + " per rank (ZeRO-" + std::to_string(zero) + ")")
                                .c_str()
                          : "");
  if (text && P > 1)
    std::printf("sequence parallel: one rank of %lld data-parallel group(s) of %lld; each rank holds S/%lld tokens of "
                "every sequence, attention the whole sequence for %lld of the %lld heads\n",
                (long long)D, (long long)P, (long long)P, (long long)(c.num_attention_heads / P),
                (long long)c.num_attention_heads);
  if (text && target.lora.enabled)
    std::printf("LoRA r %lld, alpha %g, %zu target module(s), trainable_params '%s': %s trained parameters (the "
                "rest frozen: no gradient, no optimizer state)\n",
                (long long)target.lora.r, target.lora.alpha, target.lora.target_modules.size(),
                f.str("trainable_params").c_str(), count_label(param_count(trainable_specs(c, target.lora))).c_str());
  if (S > 0) {
    out["model_max_length"] = S;
    const RunPlan run = plan_run(c, B, S, req, target);
    const MemReport& r = run.device;
    out["policy"] = {{"mini_sequence", req.mini_sequence},
                     {"gradient_checkpointing", req.checkpointing},
                     {"mlp_chunk_rows", req.mlp_chunk_rows(c, B * S / P)},
                     {"lm_head_chunk_rows", req.lm_head_chunk_rows(c, B * S / P)}};
    out.update(report_json(r));
    if (autoc) out["auto_fits"] = auto_ok, out["auto_policy"] = auto_name;
    if (run.host.arena_bytes > 0) out["host"] = report_json(run.host);
    if (text) {
      std::printf("S = %lld, requested policy: %s (MLP chunks of %lld rows, LM head in chunks of %lld rows)%s\n",
                  (long long)S, policy_label(req).c_str(), (long long)req.mlp_chunk_rows(c, B * S / P),
                  (long long)req.lm_head_chunk_rows(c, B * S / P),
                  autoc ? (auto_ok ? ", chosen by --auto" : ", --auto found nothing that fits") : "");
      if (autoc && auto_ok) std::printf("memory policy chosen by --auto: %s\n", auto_name.c_str());
      std::printf("%s", r.str().c_str());
      if (run.host.arena_bytes > 0) std::printf("host memory (offloaded state): %s", run.host.str().c_str());
      std::printf("alternatives at S = %lld:\n", (long long)S);
    }
    nlohmann::json alts = nlohmann::json::object();
    for (auto [mst, ckpt] : {std::pair{true, true}, {false, true}, {true, false}, {false, false}}) {
      StepPolicy p = req;
      p.mini_sequence = mst;
      p.checkpointing = ckpt;
      const MemReport ar = plan_step(c, B, S, p, target);
      alts[policy_label(p)] = report_json(ar);
      if (text)
        std::printf("  %-22s peak %12s at %s\n", policy_label(p).c_str(), gib(ar.arena_bytes).c_str(),
                    ar.peak_moment.c_str());
    }
    out["alternatives"] = alts;
    if (S >= 2) {  // `miniseq eval` at this length: forward only, weights and one layer's activations
      nlohmann::json ev = nlohmann::json::object();
      if (text) std::printf("forward-only evaluation (miniseq eval, passkey) at S = %lld:\n", (long long)S);
      for (bool mst : {true, false}) {
        StepPolicy p = req;
        p.mini_sequence = mst;
        const MemReport er = plan_evaluation(c, S, S, S, B, p, target.device, target.params, target.activations);
        ev[mst ? "MsT" : "no MsT"] = report_json(er);
        if (text)
          std::printf("  %-22s peak %12s at %s\n", mst ? "MsT" : "no MsT", gib(er.arena_bytes).c_str(),
                      er.peak_moment.c_str());
      }
      out["eval"] = ev;
    }
  }
  if (find) {
    nlohmann::json ml = nlohmann::json::object();
    if (text) std::printf("longest sequence within %s (batch %lld):\n", gib(budget).c_str(), (long long)B);
    for (auto [mst, ckpt] : {std::pair{true, true}, {false, true}, {true, false}, {false, false}}) {
      StepPolicy p = req;
      p.mini_sequence = mst;
      p.checkpointing = ckpt;
      const int64_t m = find_max_length(c, B, p, target, budget, int64_t{1} << 24, host_budget);
      ml[policy_label(p)] = m;
      if (text) std::printf("  %-22s %lld tokens\n", policy_label(p).c_str(), (long long)m);
    }
    out["max_length"] = ml;
  }
  if (find && f.boolean("policy_ladder")) {
    // The memory policies beyond MsT, each with MsT and checkpointing on.
    nlohmann::json ladder = nlohmann::json::object();
    if (text)
      std::printf("longest sequence per memory policy (MsT + checkpointing; host memory %s):\n",
                  host_budget ? gib(host_budget).c_str() : "unlimited");
    StepPolicy mst = req;
    mst.mini_sequence = mst.checkpointing = true;
    for (const auto& [label, t] : policy_ladder(target, GA)) {
      const int64_t m = find_max_length(c, B, mst, t, budget, int64_t{1} << 24, host_budget);
      ladder[label] = m;
      if (text) std::printf("  %-48s %lld tokens\n", label.c_str(), (long long)m);
    }
    out["max_length_by_memory_policy"] = ladder;
  }
  if (find) {
    if (host_budget) out["host_memory_bytes"] = host_budget;
    out["memory_bytes"] = budget;
  }
  if (!text) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace miniseq::cli
