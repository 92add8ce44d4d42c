// The training loop of `miniseq train`: plan the memory of the whole run before step 0 (weights, gradients, AdamW
// state, one micro-batch's step) and refuse if it does not fit; then micro-batches → gradient accumulation →
// global-norm clipping → AdamW with the Hugging Face schedule; logging, checkpoints, resume, and a clean stop on
// SIGINT/SIGTERM (finish the step, save, exit non-zero).
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "miniseq/core/memory_plan.h"
#include "miniseq/dist/communicator.h"
#include "miniseq/model/planner.h"
#include "miniseq/model/params.h"
#include "miniseq/model/step_policy.h"
#include "miniseq/train/dataset.h"
#include "miniseq/train/train_args.h"

namespace miniseq {

struct TrainSetup {
  TrainArgs args;
  ModelConfig file_config;  // as read from the model directory
  ModelConfig config;       // what is trained: RoPE factor and vocabulary applied
  std::string model_dir;    // weights come from here...
  std::function<void(const ParamSet&, Backend*)> init_weights;  // ...or from this (the demo's random model)
  // LoRA: the adapters' start (tests: a PEFT adapter directory); by default PEFT's initialization (A
  // Kaiming-uniform, B = 0) seeded by --seed.
  std::function<void(const ParamSet&, Backend*)> init_lora;
  const Dataset* data = nullptr;
  std::string tokenizer_dir;
  nlohmann::json tokenizer_overrides = nlohmann::json::object();
  bool quiet = false;       // no progress output (tests)
  Backend* backend = nullptr;  // the backend to run on (tests); by default one made for --device
  dist::Communicator* comm = nullptr;  // the ranks of a data-parallel run (null: this process alone)
};

struct TrainResult {
  int64_t steps = 0;          // optimizer steps done in total
  double last_loss = 0.0;     // loss of the last step
  double first_loss = 0.0;    // loss of the first step of this run
  int64_t steps_this_run = 0;  // optimizer steps run by this call (0: a resumed run already at its last step)
  // The first and last "loss" this run wrote to metrics.jsonl (averages over --logging_steps): the summary line
  // quotes these, so it matches the log.
  double first_logged_loss = 0.0, last_logged_loss = 0.0;
  bool logged = false;  // whether this run wrote any record (a run stopped before --logging_steps did not)
  bool interrupted = false;
  // A non-finite loss or gradient norm stopped the run at this step (0: it did not); nothing was saved from it.
  int64_t nonfinite_step = 0;
  std::string last_good_checkpoint;  // the checkpoint to resume from after such a stop ("" when none)
  int64_t skipped_steps = 0;         // steps skipped as non-finite (--skip_nonfinite_steps True)
  MemReport planned;       // device (on the CPU backend: the main arena)
  MemReport planned_host;  // host memory of offloaded state (empty without offload)
  // What the run allocated from its arenas (the real plans' reports at the end): the planner runs the same
  // schedule, so these equal `planned` and `planned_host`.
  MemReport used, used_host;
  StepPolicy policy;  // the policy the run used (chunk sizes chosen automatically when not given)
  std::string final_dir;
};

StepPolicy policy_from(const TrainArgs& a);
// The storage the run plans with (CPU; moments dtype and optimizer placement from the flags).
PlanTarget plan_target(const TrainArgs& a);
// Plans the run's peak: weights, grads, AdamW moments and one step at [B, S], with the given policy.
MemReport plan_training(const ModelConfig& config, const TrainArgs& args, const StepPolicy& policy);
// The same with the host memory of offloaded state.
RunPlan plan_training_run(const ModelConfig& config, const TrainArgs& args, const StepPolicy& policy);
// Optimizer steps of a run over `blocks` training blocks (Hugging Face: max_steps, or epochs × steps per epoch).
int64_t total_training_steps(const TrainArgs& a, int64_t blocks);

TrainResult run_training(const TrainSetup& setup);

// The memory the device plan must fit: --max_memory_gib when given, else the device's free memory (a GPU's
// cudaMemGetInfo), else the host's MemAvailable (CPU backend). A host arena (offloaded state) is checked against
// --max_host_memory_gib or MemAvailable separately.
size_t device_memory_budget(const TrainArgs& a, const Backend& be);

// The run's plan, with chunk sizes chosen for `budget` when not given, or a refusal (Error) that gives the
// numbers and the memory policy that would fit (the planner's ladder, as `memplan --auto`). budget 0: unchecked.
struct CheckedPlan {
  RunPlan run;
  StepPolicy policy;
};
CheckedPlan plan_or_refuse(const ModelConfig& config, const TrainArgs& a, size_t budget);
// The command-line flags that select a planner target's memory policy, e.g. "--moments_dtype bfloat16".
std::string policy_flags(const PlanTarget& t);

}  // namespace miniseq
