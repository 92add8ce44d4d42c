// The flags of `miniseq train`, declared once (train_args.cpp): LongLoRA fine-tune.py / Hugging Face
// TrainingArguments names and defaults, plus miniseq's own (data_path, mini_sequence, chunking, preset, device).
#pragma once

#include <cstdint>
#include <string>

#include "miniseq/cli/flags.h"
#include "miniseq/core/dtype.h"
#include "miniseq/model/lora.h"

namespace miniseq {

enum class Schedule { Constant, ConstantWithWarmup, Linear, Cosine };
enum class SaveStrategy { Steps, Epoch, No };

struct TrainArgs {
  std::string model_name_or_path, output_dir, data_path, resume_from_checkpoint, preset, device = "cpu";
  int64_t model_max_length = 8192 * 4;
  bool bf16 = false;
  // --low_rank_training (LongLoRA's default True), --lora_r, --lora_alpha, --lora_target_modules,
  // --trainable_params (cli/lora_flags.h); lora.enabled false: full fine-tuning.
  LoraConfig lora;
  bool use_full_attn = false;  // false: S²-Attn in training (LongLoRA's default)
  double num_train_epochs = 3.0;
  int64_t max_steps = -1;
  int64_t per_device_train_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  double learning_rate = 5e-5, weight_decay = 0.0, adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
  Schedule lr_scheduler_type = Schedule::Linear;
  int64_t logging_steps = 500;
  SaveStrategy save_strategy = SaveStrategy::Steps;
  int64_t save_steps = 500;
  int64_t save_total_limit = 0;  // 0 = keep all (only the current run's checkpoints are ever rotated out)
  bool overwrite_output_dir = false;  // train into a non-empty output_dir that is not being resumed
  bool skip_nonfinite_steps = false;  // a non-finite loss or gradient norm skips the step instead of stopping
  int64_t seed = 42;
  bool mini_sequence = true, gradient_checkpointing = true;
  int64_t mlp_chunk_tokens = 0, lm_head_chunks = 0;
  double max_memory_gib = 0;  // 0 = the machine's available RAM
  bool optimizer_in_backward = false;  // update each parameter as soon as its gradient is complete
  DType moments_dtype = DType::F32;    // AdamW moments in fp32 or bf16
  bool master_weights = true;          // false: bf16 weights updated with stochastic rounding, no fp32 master
  DType grad_dtype = DType::F32;       // gradient accumulation in fp32 or bf16
  bool offload_optimizer = false;      // moments + fp32 master weights in host memory, CPU AdamW
  int64_t offload_checkpoints = 0;     // checkpointed inputs of the first N layers in host memory (-1 = all)
  double max_host_memory_gib = 0;      // host budget for offloaded state (0 = available RAM)
  int64_t data_parallel = 0;           // data-parallel ranks (0 = the number of processes launched / P)
  int64_t sequence_parallel = 1;       // Ulysses: ranks sharing each sequence (D × P = processes)
  double dist_timeout = 1800;          // seconds a collective may wait for the other ranks
  int64_t zero_stage = 0;              // 1: AdamW state and master weights sharded over the data-parallel ranks
};

// The flag table (name, type, default, help) for parsing, --help and the effective-config printout; `sft`:
// the same table for `miniseq supervised-fine-tune` (its name, usage line and --data_path help).
cli::Flags train_flags(bool sft = false);
// Reads parsed flags into TrainArgs, validating values (one-line errors naming the flag).
TrainArgs train_args_from(const cli::Flags& f);
const char* schedule_name(Schedule s);

}  // namespace miniseq
