#include "miniseq/train/train_args.h"

#include "miniseq/cli/lora_flags.h"
#include "miniseq/core/check.h"

namespace miniseq {

using cli::FlagKind;

cli::Flags train_flags(bool sft) {
  return cli::Flags(
      sft ? "supervised-fine-tune" : "train",
      sft ? "miniseq supervised-fine-tune --model_name_or_path DIR --data_path FILE.json --output_dir OUT [flags]   "
            "(alias: miniseq sft; LongLoRA supervised-fine-tune.py)"
          : "miniseq train --model_name_or_path DIR --data_path FILE.jsonl --output_dir OUT [flags]   "
            "(or: miniseq train --preset demo)",
      cli::with_flags({
          // Model and data.
          {"model_name_or_path", FlagKind::String, "", "local Hugging Face model directory"},
          {"data_path", FlagKind::String, "",
           sft ? "a JSON list or JSONL of {\"instruction\", \"input\" (optional), \"output\"} records (LongAlpaca)"
               : "JSONL: {\"text\": ...} documents, or {\"input_ids\": [...]}"},
          {"output_dir", FlagKind::String, "", "where checkpoints and the final model go (new or empty, or resumed)"},
          {"overwrite_output_dir", FlagKind::Bool, "False",
           "train into a non-empty --output_dir that is not being resumed (its files are overwritten; earlier runs' "
           "checkpoints are kept and never rotated out)"},
          {"cache_dir", FlagKind::String, "", "accepted for compatibility (nothing is downloaded)"},
          {"model_max_length", FlagKind::Int, "32768", "tokens per training sequence"},
          {"preset", FlagKind::String, "", "built-in run: 'demo' (tiny Mistral on synthetic passkey documents)"},
          {"device", FlagKind::String, "cpu", "cpu or cuda"},
          // Precision and kernels.
          {"bf16", FlagKind::Bool, "False",
           "save bf16 weights; on the CPU also bf16 GEMM inputs with fp32 accumulation in the linear layers (fast "
           "with oneDNN on AVX512-BF16/AMX CPUs, a portable fallback elsewhere; the CUDA device always computes so)"},
          {"tf32", FlagKind::Bool, "False", "accepted for compatibility"},
          {"use_flash_attn", FlagKind::Bool, "True", "accepted: attention is always memory-efficient"},
          {"use_full_attn", FlagKind::Bool, "False",
           "False (LongLoRA's default): shifted sparse attention (S2-Attn) in training, groups of model_max_length/4 "
           "tokens (supervised-fine-tune: LongLoRA's SFT rule), half the heads shifted by half a group "
           "(docs/s2attn.md); True: full causal attention. Evaluation, passkey and generation always attend fully"},
          // LoRA: --low_rank_training, --lora_r, ... (cli/lora_flags.h, appended below).
          // Schedule and optimizer (Hugging Face TrainingArguments defaults).
          {"num_train_epochs", FlagKind::Float, "3", "epochs over the data (when max_steps <= 0)"},
          {"max_steps", FlagKind::Int, "-1", "optimizer steps; overrides num_train_epochs when > 0"},
          {"per_device_train_batch_size", FlagKind::Int, "8", "sequences per micro-batch"},
          {"gradient_accumulation_steps", FlagKind::Int, "1", "micro-batches per optimizer step"},
          {"learning_rate", FlagKind::Float, "5e-5", "peak learning rate"},
          {"weight_decay", FlagKind::Float, "0", "AdamW decoupled weight decay (not on biases and norms)"},
          {"adam_beta1", FlagKind::Float, "0.9", "AdamW beta1"},
          {"adam_beta2", FlagKind::Float, "0.999", "AdamW beta2"},
          {"adam_epsilon", FlagKind::Float, "1e-8", "AdamW epsilon"},
          {"max_grad_norm", FlagKind::Float, "1.0", "global gradient-norm clipping (0 = off)"},
          {"warmup_steps", FlagKind::Int, "0", "linear warmup steps"},
          {"warmup_ratio", FlagKind::Float, "0", "warmup as a fraction of all steps (when warmup_steps is 0)"},
          {"lr_scheduler_type", FlagKind::String, "linear", "constant, constant_with_warmup, linear, cosine"},
          // Logging and checkpoints.
          {"logging_steps", FlagKind::Int, "500", "log every N optimizer steps"},
          {"save_strategy", FlagKind::String, "steps", "steps, epoch or no"},
          {"save_steps", FlagKind::Int, "500", "checkpoint every N steps (save_strategy steps)"},
          {"save_total_limit", FlagKind::Int, "0", "keep at most N checkpoints (0 = all)"},
          {"evaluation_strategy", FlagKind::String, "no", "accepted; only \"no\" is supported"},
          {"seed", FlagKind::Int, "42", "seed of the data order (and of stochastic rounding: --master_weights False)"},
          {"resume_from_checkpoint", FlagKind::String, "", "checkpoint directory, or True for the latest"},
          {"skip_nonfinite_steps", FlagKind::Bool, "False",
           "a NaN/inf loss or gradient norm skips that step (no update) instead of stopping the run (exit 4)"},
          // miniseq's memory policy.
          {"mini_sequence", FlagKind::Bool, "True", "Mini-Sequence Transformer: chunked MLP and LM head + loss"},
          {"mlp_chunk_tokens", FlagKind::Int, "0",
           "rows per MLP chunk (0, with --lm_head_chunks 0: the largest chunks that fit the memory budget; "
           "0 with --lm_head_chunks given: hidden_size, the paper's)"},
          {"lm_head_chunks", FlagKind::Int, "0",
           "LM-head chunks (0, with --mlp_chunk_tokens 0: the fewest that fit the memory budget; 0 with "
           "--mlp_chunk_tokens given: ceil(vocab / hidden), the paper's)"},
          {"gradient_checkpointing", FlagKind::Bool, "True", "keep layer inputs, recompute layers in backward"},
          {"max_memory_gib", FlagKind::Float, "0", "memory budget checked before step 0 (0 = available RAM)"},
          {"optimizer_in_backward", FlagKind::Bool, "False",
           "update each parameter inside the backward pass: no full gradient buffer (needs accumulation 1; with "
           "max_grad_norm > 0 the step runs twice, first for the norm)"},
          {"moments_dtype", FlagKind::String, "float32", "AdamW moments: float32 or bfloat16"},
          {"master_weights", FlagKind::Bool, "True",
           "keep fp32 master weights beside bf16 weights (CUDA: 4 bytes per parameter). False: no master, the bf16 "
           "weights are updated in place with stochastic rounding (unbiased, seeded by --seed, reproducible), so "
           "updates below half a bf16 ulp are not lost; inexact (docs/memory.md). The CPU emulates bf16 weights"},
          {"grad_dtype", FlagKind::String, "float32",
           "gradient storage and accumulation: float32, or bfloat16 (2 bytes per parameter, every accumulation "
           "rounded to bf16, as the LongLoRA recipe in bf16; inexact). The CPU emulates bf16 gradients"},
          {"offload_optimizer", FlagKind::Bool, "False",
           "AdamW moments and fp32 master weights in host memory, updated by the CPU beside the device's backward"},
          {"offload_checkpoints", FlagKind::Int, "0",
           "checkpointed inputs of the first N layers in host memory (-1 = all)"},
          {"max_host_memory_gib", FlagKind::Float, "0",
           "host memory budget for what is offloaded (0 = available RAM)"},
          // Several processes (docs/distributed.md): mpirun -np N miniseq train ..., or srun --mpi=pmix.
          {"data_parallel", FlagKind::Int, "0",
           "data-parallel ranks: each takes distinct micro-batches of one global order, so the global "
           "batch is D x per_device_train_batch_size x gradient_accumulation_steps (0 = the number of "
           "processes launched)"},
          {"sequence_parallel", FlagKind::Int, "1",
           "Ulysses sequence parallelism: P ranks share every sequence, each holding model_max_length / P "
           "tokens; attention exchanges q/k/v between them by all-to-all (D x P = processes; ranks "
           "d*P .. d*P+P-1 form data-parallel group d)"},
          {"zero_stage", FlagKind::Int, "0",
           "ZeRO: 1 shards the AdamW moments and fp32 master weights over the data-parallel ranks (each keeps "
           "1/D of them; checkpoints hold one optimizer shard per rank); 2 also the gradients (each group "
           "summed into its owners' shards during the backward; no full gradient buffer); with every memory "
           "policy (--offload_optimizer True: the shards in host memory); 0 = every rank keeps all"},
          {"dist_timeout", FlagKind::Float, "1800",
           "seconds a rank waits in a collective for the others before it ends the job with a message "
           "(0 = forever)"},
      }, cli::lora_flag_specs("True")));
}

const char* schedule_name(Schedule s) {
  switch (s) {
    case Schedule::Constant: return "constant";
    case Schedule::ConstantWithWarmup: return "constant_with_warmup";
    case Schedule::Linear: return "linear";
    case Schedule::Cosine: return "cosine";
  }
  return "?";
}

TrainArgs train_args_from(const cli::Flags& f) {
  TrainArgs a;
  a.model_name_or_path = f.str("model_name_or_path");
  a.data_path = f.str("data_path");
  a.output_dir = f.str("output_dir");
  a.preset = f.str("preset");
  a.device = f.str("device");
  a.resume_from_checkpoint = f.str("resume_from_checkpoint");
  a.overwrite_output_dir = f.boolean("overwrite_output_dir");
  a.skip_nonfinite_steps = f.boolean("skip_nonfinite_steps");
  a.model_max_length = f.i64("model_max_length");
  a.bf16 = f.boolean("bf16");
  a.lora = cli::lora_config_from(f);
  a.use_full_attn = f.boolean("use_full_attn");
  a.num_train_epochs = f.f64("num_train_epochs");
  a.max_steps = f.i64("max_steps");
  a.per_device_train_batch_size = f.i64("per_device_train_batch_size");
  a.gradient_accumulation_steps = f.i64("gradient_accumulation_steps");
  a.learning_rate = f.f64("learning_rate");
  a.weight_decay = f.f64("weight_decay");
  a.adam_beta1 = f.f64("adam_beta1");
  a.adam_beta2 = f.f64("adam_beta2");
  a.adam_epsilon = f.f64("adam_epsilon");
  a.max_grad_norm = f.f64("max_grad_norm");
  a.warmup_steps = f.i64("warmup_steps");
  a.warmup_ratio = f.f64("warmup_ratio");
  a.logging_steps = f.i64("logging_steps");
  a.save_steps = f.i64("save_steps");
  a.save_total_limit = f.i64("save_total_limit");
  a.seed = f.i64("seed");
  a.mini_sequence = f.boolean("mini_sequence");
  a.gradient_checkpointing = f.boolean("gradient_checkpointing");
  a.mlp_chunk_tokens = f.i64("mlp_chunk_tokens");
  a.lm_head_chunks = f.i64("lm_head_chunks");
  a.max_memory_gib = f.f64("max_memory_gib");
  a.optimizer_in_backward = f.boolean("optimizer_in_backward");
  MS_CHECK(dtype_from_torch_name(f.str("moments_dtype"), &a.moments_dtype) && a.moments_dtype != DType::F16,
           "--moments_dtype must be float32 or bfloat16, got '", f.str("moments_dtype"), "'");
  a.master_weights = f.boolean("master_weights");
  MS_CHECK(dtype_from_torch_name(f.str("grad_dtype"), &a.grad_dtype) && a.grad_dtype != DType::F16,
           "--grad_dtype must be float32 or bfloat16, got '", f.str("grad_dtype"), "'");
  a.offload_optimizer = f.boolean("offload_optimizer");
  MS_CHECK(!a.offload_optimizer || (a.master_weights && a.grad_dtype == DType::F32),
           "--offload_optimizer True keeps fp32 master weights and takes fp32 gradients on the host; use it with "
           "--master_weights True --grad_dtype float32 (or keep the optimizer on the device)");
  a.offload_checkpoints = f.i64("offload_checkpoints");
  a.max_host_memory_gib = f.f64("max_host_memory_gib");
  a.data_parallel = f.i64("data_parallel");
  a.sequence_parallel = f.i64("sequence_parallel");
  MS_CHECK(a.sequence_parallel >= 1, "--sequence_parallel must be >= 1, got ", a.sequence_parallel);
  MS_CHECK(a.model_max_length % a.sequence_parallel == 0, "--sequence_parallel ", a.sequence_parallel,
           " splits every sequence into equal shards: --model_max_length ", a.model_max_length,
           " must be divisible by it");
  a.dist_timeout = f.f64("dist_timeout");
  a.zero_stage = f.i64("zero_stage");
  MS_CHECK(a.zero_stage >= 0 && a.zero_stage <= 2, "--zero_stage must be 0, 1 or 2, got ", a.zero_stage);
  MS_CHECK(a.zero_stage < 2 || a.grad_dtype == DType::F32,
           "--zero_stage 2 keeps fp32 gradient shards; use it with --grad_dtype float32");
  MS_CHECK(a.data_parallel >= 0, "--data_parallel must be >= 0 (0: the number of processes), got ",
           a.data_parallel);
  MS_CHECK(a.dist_timeout >= 0, "--dist_timeout must be >= 0 seconds (0: wait forever), got ",
           a.dist_timeout);
  MS_CHECK(a.offload_checkpoints >= -1, "--offload_checkpoints must be a layer count or -1 (all), got ",
           a.offload_checkpoints);
  MS_CHECK(a.offload_checkpoints == 0 || a.gradient_checkpointing,
           "--offload_checkpoints needs --gradient_checkpointing True (only checkpointed layer inputs move)");
  MS_CHECK(!a.optimizer_in_backward || a.gradient_accumulation_steps == 1,
           "--optimizer_in_backward True needs --gradient_accumulation_steps 1 (gradients are not kept between "
           "micro-batches)");
  MS_CHECK(!a.skip_nonfinite_steps || !a.optimizer_in_backward || a.max_grad_norm > 0,
           "--skip_nonfinite_steps True with --optimizer_in_backward True needs --max_grad_norm > 0: the gradient "
           "norm's first pass is what finds a non-finite step before any parameter is updated");

  const std::string sched = f.str("lr_scheduler_type");
  if (sched == "constant") a.lr_scheduler_type = Schedule::Constant;
  else if (sched == "constant_with_warmup") a.lr_scheduler_type = Schedule::ConstantWithWarmup;
  else if (sched == "linear") a.lr_scheduler_type = Schedule::Linear;
  else if (sched == "cosine") a.lr_scheduler_type = Schedule::Cosine;
  else fail("--lr_scheduler_type '", sched, "' is not supported (constant, constant_with_warmup, linear, cosine)");
  const std::string save = f.str("save_strategy");
  if (save == "steps") a.save_strategy = SaveStrategy::Steps;
  else if (save == "epoch") a.save_strategy = SaveStrategy::Epoch;
  else if (save == "no") a.save_strategy = SaveStrategy::No;
  else fail("--save_strategy '", save, "' is not one of steps, epoch, no");
  MS_CHECK(f.str("evaluation_strategy") == "no", "--evaluation_strategy '", f.str("evaluation_strategy"),
           "' is not supported: miniseq train does not evaluate during training (use `miniseq eval` afterwards)");
  MS_CHECK(a.device == "cpu" || a.device == "cuda", "--device must be cpu or cuda, got '", a.device, "'");
  MS_CHECK(a.model_max_length >= 2, "--model_max_length must be at least 2, got ", a.model_max_length);
  MS_CHECK(a.model_max_length <= INT32_MAX, "--model_max_length ", a.model_max_length,
           " is beyond what any run can hold (positions are 32-bit: at most ", INT32_MAX, ")");
  MS_CHECK(a.per_device_train_batch_size >= 1, "--per_device_train_batch_size must be >= 1");
  MS_CHECK(a.gradient_accumulation_steps >= 1, "--gradient_accumulation_steps must be >= 1");
  MS_CHECK(a.max_steps > 0 || a.num_train_epochs > 0, "give --max_steps > 0 or --num_train_epochs > 0");
  MS_CHECK(a.learning_rate >= 0, "--learning_rate must be >= 0");
  MS_CHECK(a.adam_beta1 >= 0 && a.adam_beta1 < 1 && a.adam_beta2 >= 0 && a.adam_beta2 < 1,
           "--adam_beta1 and --adam_beta2 must lie in [0, 1)");
  MS_CHECK(a.warmup_steps >= 0 && a.warmup_ratio >= 0 && a.warmup_ratio <= 1,
           "--warmup_steps must be >= 0 and --warmup_ratio in [0, 1]");
  MS_CHECK(a.logging_steps >= 1, "--logging_steps must be >= 1");
  MS_CHECK(a.save_strategy != SaveStrategy::Steps || a.save_steps >= 1, "--save_steps must be >= 1");
  MS_CHECK(a.save_total_limit >= 0, "--save_total_limit must be >= 0");
  MS_CHECK(a.mlp_chunk_tokens >= 0 && a.lm_head_chunks >= 0, "--mlp_chunk_tokens and --lm_head_chunks must be >= 0");
  return a;
}

}  // namespace miniseq
