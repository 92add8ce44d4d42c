// Checkpoints in Hugging Face layout: OUT/checkpoint-STEP/ holds the model (config.json, safetensors, sharded
// with an index when large), the tokenizer files, and the training state: optimizer.safetensors (AdamW
// moments and, when the model is saved in bf16, the fp32 master weights, by Hugging Face name) and
// trainer_state.json (step, epoch, data position, seed, log history). A checkpoint is written into a
// temporary directory, every file fsynced, then renamed into place: a crash during a save leaves the previous
// checkpoint as it was.
//
// A LoRA run (--low_rank_training True) saves what it trains and nothing of the frozen base model, as
// LongLoRA + PEFT do: a PEFT adapter directory (adapter_config.json, adapter_model.safetensors in fp32, as
// PEFT keeps adapters beside a bf16 base) and trainable_params.safetensors (the --trainable_params tensors,
// HF names), with the tokenizer files, optimizer.safetensors (state of the trained tensors only) and
// trainer_state.json, which records the base model (model_name_or_path) and the trainable_params: a resume
// reads the frozen weights from that base model again and refuses another one. `miniseq merge --base_model
// BASE --peft_model DIR` makes a full model of it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "miniseq/io/model_config.h"
#include "miniseq/model/lora.h"
#include "miniseq/model/params.h"

namespace miniseq {

struct TrainProgress {
  int64_t global_step = 0;      // optimizer steps done
  int64_t epoch = 0;            // current epoch (0-based)
  int64_t micro_in_epoch = 0;   // next micro-batch of the epoch
  int64_t micro_batch_blocks = 0;  // blocks per global micro-batch (batch × data-parallel ranks; 0: unknown)
  int64_t total_steps = 0;
  uint64_t seed = 0;
  int64_t tokens_seen = 0;
  std::string run_id;  // the run these checkpoints belong to (train/output_dir.h)
  // The base model directory, absolute ("" for a built-in preset) and, for a LoRA run, its
  // --trainable_params.
  std::string model_name_or_path;
  bool low_rank_training = false;
  std::vector<std::string> trainable_params;
  nlohmann::json log_history = nlohmann::json::array();
};

struct SaveRequest {
  std::string dir;                    // final directory (created or replaced atomically)
  const ModelConfig* config = nullptr;
  const ParamSet* weights = nullptr;  // LoRA: the trained ones (Decoder::trained_weights)
  // LoRA run: the adapter and trainable params are saved instead of the model (null or disabled: the model).
  const LoraConfig* lora = nullptr;
  std::string base_model;             // adapter_config.json's base_model_name_or_path
  DType weights_dtype = DType::F32;   // dtype of the saved model weights
  const ParamSet* exp_avg = nullptr;  // null: a model-only save (the final model)
  const ParamSet* exp_avg_sq = nullptr;
  const ParamSet* master = nullptr;   // fp32 master weights kept apart (optimizer on the host): saved as master.*
  const TrainProgress* progress = nullptr;
  std::string tokenizer_dir;          // tokenizer files copied from here ("" = none)
  nlohmann::json tokenizer_overrides; // {"file name": contents} written instead of copying (e.g. with [PAD] added)
  size_t max_shard_bytes = 5ull << 30;  // Hugging Face's default max_shard_size
  Backend* backend = nullptr;         // to download device tensors (null: everything is on the CPU)
  // Called with the temporary directory once this process's files are in it, before it is renamed into place:
  // the other ranks' ZeRO optimizer shards go in there (train/zero_optimizer.h).
  std::function<void(const std::string& tmp_dir)> before_rename;
};

void save_checkpoint(const SaveRequest& r);

// Model files of a directory (weights and config) written in place, file by file atomically (the final model in
// output_dir, next to the checkpoint-* directories).
void save_model_files(const SaveRequest& r);

struct LoadedState {
  TrainProgress progress;
};
// Restores weights (fp32 master if present, else the model file, or for a LoRA checkpoint the adapter and
// trainable_params files), moments and progress from a checkpoint. `weights` are the trained ones. Every
// tensor is checked against the parameter table; errors name the file and tensor. With `master` (optimizer on
// the host) the weights are read into it instead, and the caller uploads them.
LoadedState load_checkpoint(const std::string& dir, const ParamSet& weights, const ParamSet& exp_avg,
                            const ParamSet& exp_avg_sq, Backend* backend = nullptr,
                            const ParamSet* master = nullptr);

// Refuses, saying what to do, a checkpoint `dir` that this run cannot resume: a full fine-tuning checkpoint
// in a LoRA run or the reverse, a LoRA checkpoint of another base model (`model_dir`, "" for a preset), LoRA
// rank, alpha, target modules or trainable_params. Nothing is checked when `dir` is not a directory.
void check_resumable(const std::string& dir, const LoraConfig& lora, const std::string& model_dir);
// The absolute form recorded as model_name_or_path ("" stays "").
std::string recorded_model_path(const std::string& model_dir);

// The progress recorded in a checkpoint's trainer_state.json (text: the file's contents; where: its path for
// errors). Hostile files end in an Error naming the file (issue 20).
TrainProgress parse_trainer_state(const std::string& text, const std::string& where);

// (Listing, rotation and the latest checkpoint of a run: train/output_dir.h.)

// Test hook: make the next save throw after `files` files were written (simulates a crash mid-save). -1 = off.
void set_save_fault_for_testing(int files);

}  // namespace miniseq
