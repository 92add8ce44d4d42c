#include "miniseq/train/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/core/rss.h"
#include "miniseq/model/adapter.h"
#include "miniseq/model/decoder.h"
#include "miniseq/model/planner.h"
#include "miniseq/train/checkpoint.h"
#include "miniseq/train/distributed.h"
#include "miniseq/train/host_optimizer.h"
#include "miniseq/train/metrics.h"
#include "miniseq/train/model_setup.h"
#include "miniseq/train/optimizer.h"
#include "miniseq/train/output_dir.h"
#include "miniseq/train/schedule.h"
#include "miniseq/train/zero_optimizer.h"

namespace miniseq {

namespace fs = std::filesystem;

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

size_t available_ram_bytes() {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  size_t kib = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %zu kB", &kib) == 1) break;
  std::fclose(f);
  return kib * 1024;
}

std::string gib(double bytes);

// Page-locks the part of the host arena that asynchronous copies use, from `from` to its end, while the run lasts
// (nothing on the CPU backend). The offloaded optimizer state below `from` (~12 bytes per parameter: 87 GB for
// Mistral-7B) is only touched by the CPU and stays pageable; pinning it would cost start-up time and lock memory.
struct HostPin {
  Backend& be;
  void* p = nullptr;
  HostPin(Backend& backend, MemoryPlan* host, size_t from) : be(backend) {
    if (!host || from >= host->capacity() || be.device() == Device::CPU) return;
    const auto t0 = std::chrono::steady_clock::now();
    const size_t bytes = host->capacity() - from;
    be.pin_host_memory(p = static_cast<char*>(host->base()) + from, bytes);
    std::printf("host memory: %s page-locked for asynchronous copies in %.2f s\n",
                gib(static_cast<double>(bytes)).c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  ~HostPin() {
    if (p) be.unpin_host_memory(p);
  }
  HostPin(const HostPin&) = delete;
  HostPin& operator=(const HostPin&) = delete;
};

std::string gib(double bytes) { return human_bytes(static_cast<size_t>(bytes)); }

std::string hms(double seconds) {
  const long s = static_cast<long>(std::max(0.0, seconds));
  char b[32];
  std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  return b;
}

// Sequence parallelism needs S divisible by P: an example batch (right-padded to its longest example) gets more
// pad positions at the end, labels -100. Exact: causal attention keeps them out of every earlier position, and
// their ignored labels give them no gradient (only dynamic RoPE, which depends on S, sees the longer length).
void pad_to_multiple(TokenBatch& b, int64_t P) {
  const int64_t S = (b.seq + P - 1) / P * P;
  if (S == b.seq) return;
  std::vector<int32_t> ids(static_cast<size_t>(b.batch * S)), labels(ids.size(), kIgnoreIndex);
  for (int64_t r = 0; r < b.batch; ++r)
    for (int64_t s = 0; s < S; ++s) {
      const auto to = static_cast<size_t>(r * S + s);
      const auto from = static_cast<size_t>(r * b.seq + std::min(s, b.seq - 1));
      ids[to] = b.input_ids[from];  // the row's last token repeated
      if (s < b.seq) labels[to] = b.labels[from];
    }
  b.seq = S, b.input_ids = std::move(ids), b.labels = std::move(labels);
}

}  // namespace

std::string policy_flags(const PlanTarget& t) {
  std::string f;
  if (t.moments != DType::F32) f += " --moments_dtype bfloat16";
  if (!t.master_weights) f += " --master_weights False";
  if (t.grad_precision != DType::F32) f += " --grad_dtype bfloat16";
  if (t.optimizer_in_backward) f += " --optimizer_in_backward True";
  if (t.offload_optimizer) f += " --offload_optimizer True";
  if (t.offload_layers != 0) f += " --offload_checkpoints " + std::to_string(t.offload_layers);
  return f.empty() ? f : f.substr(1);
}

CheckedPlan plan_or_refuse(const ModelConfig& config, const TrainArgs& a, size_t budget) {
  const Device device = a.device == "cuda" ? Device::CUDA : Device::CPU;
  const char* where = a.max_memory_gib > 0 ? "--max_memory_gib" : device == Device::CPU ? "host memory" : "free on the GPU";
  // A floor without a dry run (which walks every chunk of every layer): the weights and one layer input per layer.
  // A mistyped --model_max_length is refused here at once.
  if (budget > 0) {
    const PlanTarget t = plan_target(a);
    // ZeRO: one rank's 1/D of the moments.
    const double per_param = static_cast<double>(dtype_size(t.params)) +
                             (t.offload_optimizer ? 0.0 : 2.0 * static_cast<double>(dtype_size(t.moments))) /
                                 static_cast<double>(std::max<int64_t>(1, t.zero_ranks));
    // LoRA: every weight, moments for the trained ones alone.
    const double floor =
        static_cast<double>(param_count(model_param_specs(config, a.lora))) *
            static_cast<double>(dtype_size(t.params)) +
        static_cast<double>(param_count(trainable_specs(config, a.lora))) *
            (per_param - static_cast<double>(dtype_size(t.params))) +
        static_cast<double>(config.num_hidden_layers) * static_cast<double>(a.per_device_train_batch_size) *
            static_cast<double>(a.model_max_length) * static_cast<double>(config.hidden_size) *
            static_cast<double>(dtype_size(t.activations)) * (a.offload_checkpoints != 0 ? 0.0 : 1.0);
    MS_CHECK(
        floor <= static_cast<double>(budget), "the run needs at least ", gib(floor),
        " (weights, AdamW moments and the layer inputs of ", a.per_device_train_batch_size, " x ",
        a.model_max_length, " tokens) but only ", gib(static_cast<double>(budget)), " is available (", where,
        "); lower --model_max_length or --per_device_train_batch_size (`miniseq memplan --find_max_length` "
        "gives the longest that fits)");
  }
  CheckedPlan out;
  out.policy = policy_from(a);
  // Chunk sizes not given: the largest chunks (fewest, most efficient GEMMs) that fit the budget.
  if (a.mini_sequence && a.mlp_chunk_tokens == 0 && a.lm_head_chunks == 0 && budget > 0)
    auto_chunks(config, a.per_device_train_batch_size, a.model_max_length, plan_target(a), budget, &out.policy);
  out.run = plan_training_run(config, a, out.policy);
  const size_t host_budget = a.max_host_memory_gib > 0 ? static_cast<size_t>(a.max_host_memory_gib * (1ull << 30))
                                                       : available_ram_bytes();
  if (out.run.host.arena_bytes > 0 && host_budget > 0)
    MS_CHECK(out.run.host.arena_bytes <= host_budget, "the offloaded state needs ",
             gib(static_cast<double>(out.run.host.arena_bytes)), " of host memory but only ",
             gib(static_cast<double>(host_budget)),
             " is available; offload fewer layers (--offload_checkpoints) or use --moments_dtype bfloat16");
  if (budget == 0 || out.run.device.arena_bytes <= budget) return out;

  // Refused: say what would fit, with the numbers (the planner's policy ladder, as `memplan --auto`).
  std::string advice;
  if (!(a.mini_sequence && a.gradient_checkpointing)) {
    TrainArgs alt = a;
    alt.mini_sequence = alt.gradient_checkpointing = true;
    advice += "; with --mini_sequence True --gradient_checkpointing True it plans " +
              gib(static_cast<double>(plan_training(config, alt, policy_from(alt)).arena_bytes));
  }
  PlanTarget t = plan_target(a);
  StepPolicy p = policy_from(a);
  p.mini_sequence = p.checkpointing = true;
  std::string name;
  if (auto_policy(config, a.per_device_train_batch_size, a.model_max_length, budget, a.max_host_memory_gib > 0 ? host_budget : 0,
                  &t, &p, &name, a.gradient_accumulation_steps)) {
    const RunPlan fits = plan_run(config, a.per_device_train_batch_size, a.model_max_length, p, t);
    advice += "; the memory policy " + name + " fits (planned " + gib(static_cast<double>(fits.device.arena_bytes)) +
              (fits.host.arena_bytes ? " + " + gib(static_cast<double>(fits.host.arena_bytes)) + " of host memory" : "") +
              "): add " + policy_flags(t);
  } else {
    advice += "; no memory policy fits this length (docs/memory.md)";
  }
  char mem[32];  // a --memory value that memplan reads back
  std::snprintf(mem, sizeof mem, "%.2fMiB", static_cast<double>(budget) / (1024.0 * 1024.0));
  // memplan plans batch 1 and full fine-tuning unless told: the run's batch, accumulation and LoRA flags go on.
  std::string run_flags;
  if (a.per_device_train_batch_size != 1)
    run_flags += " --per_device_train_batch_size " + std::to_string(a.per_device_train_batch_size);
  if (a.gradient_accumulation_steps != 1)
    run_flags += " --gradient_accumulation_steps " + std::to_string(a.gradient_accumulation_steps);
  if (a.lora.enabled) {
    char alpha[32];
    std::snprintf(alpha, sizeof alpha, "%g", a.lora.alpha);
    const std::string keys = join_list(a.lora.trainable_params);
    run_flags += " --low_rank_training True --lora_r " + std::to_string(a.lora.r) + " --lora_alpha " + alpha +
                 " --lora_target_modules " + join_list(a.lora.target_modules) + " --trainable_params " +
                 (keys.empty() ? std::string("''") : keys);
  }
  fail("the run needs ", gib(static_cast<double>(out.run.device.arena_bytes)), " (peak at ", out.run.device.peak_moment,
       ") but only ", gib(static_cast<double>(budget)), " is available (", where,
       "); lower --model_max_length or --per_device_train_batch_size", advice, ". `miniseq memplan --model ",
       a.model_name_or_path.empty() ? "MODEL" : a.model_name_or_path, " --model_max_length ", a.model_max_length,
       " --memory ", mem, device == Device::CUDA ? " --device cuda" : "", run_flags, " --auto` lists the options");
}

size_t device_memory_budget(const TrainArgs& a, const Backend& be) {
  if (a.max_memory_gib > 0) return static_cast<size_t>(a.max_memory_gib * (1ull << 30));
  return be.device() == Device::CPU ? available_ram_bytes() : be.device_free_bytes();
}

StepPolicy policy_from(const TrainArgs& a) {
  StepPolicy p;
  p.mini_sequence = a.mini_sequence;
  p.checkpointing = a.gradient_checkpointing;
  p.mlp_chunk_tokens = a.mlp_chunk_tokens;
  p.lm_head_chunks = a.lm_head_chunks;
  p.s2_attn = !a.use_full_attn;
  return p;
}

PlanTarget plan_target(const TrainArgs& a) {
  PlanTarget t = a.device == "cuda" ? PlanTarget::cuda() : PlanTarget::cpu();
  t.moments = a.moments_dtype;
  t.optimizer_in_backward = a.optimizer_in_backward;
  t.offload_optimizer = a.offload_optimizer;
  t.offload_layers = a.offload_checkpoints;
  // ZeRO shards over every rank (D × P: the sequence-parallel ranks hold whole gradients too).
  t.zero_ranks = a.zero_stage >= 1 ? std::max<int64_t>(1, a.data_parallel) * a.sequence_parallel : 0;
  t.sequence_parallel = a.sequence_parallel > 1 ? a.sequence_parallel : 0;
  t.zero_grads = a.zero_stage >= 2;
  t.lora = a.lora;
  return with_precision(t, a.master_weights, a.grad_dtype);
}

MemReport plan_training(const ModelConfig& config, const TrainArgs& args, const StepPolicy& policy) {
  return plan_step(config, args.per_device_train_batch_size, args.model_max_length, policy, plan_target(args));
}

RunPlan plan_training_run(const ModelConfig& config, const TrainArgs& args, const StepPolicy& policy) {
  return plan_run(config, args.per_device_train_batch_size, args.model_max_length, policy, plan_target(args));
}

int64_t total_training_steps(const TrainArgs& a, int64_t blocks) {
  if (a.max_steps > 0) return a.max_steps;
  const int64_t micro = DataParallel::micro_per_epoch(
      blocks, a.per_device_train_batch_size, static_cast<int>(std::max<int64_t>(1, a.data_parallel)));
  const int64_t per_epoch =
      std::max<int64_t>(1, (micro + a.gradient_accumulation_steps - 1) / a.gradient_accumulation_steps);
  return static_cast<int64_t>(std::ceil(a.num_train_epochs * static_cast<double>(per_epoch)));
}

TrainResult run_training(const TrainSetup& setup) {
  // Data parallel over the world (train/distributed.h): only rank 0 prints and writes files.
  std::unique_ptr<dist::Communicator> single = setup.comm ? nullptr : dist::make_single_process();
  DataParallel dp(setup.comm ? *setup.comm : *single);
  check_data_parallel(setup.args, dp.size());
  TrainArgs args = setup.args;
  // Sequence parallelism (model/sequence_parallel.h): ranks d·P … d·P + P − 1 share data-parallel group d's
  // micro-batches, each holding S/P tokens of every sequence; the gradients are summed over all D × P ranks.
  const int SP = static_cast<int>(args.sequence_parallel);
  const int sp_rank = dp.rank() % SP, dp_rank = dp.rank() / SP;
  std::unique_ptr<dist::Communicator> sp_group;
  if (SP > 1) {
    sp_group = dp.size() == SP ? nullptr : dp.comm().split(dp_rank, sp_rank);
    if (sp_group) sp_group->set_timeout_seconds(args.dist_timeout);
  }
  args.data_parallel = dp.size() / SP;  // the steps of an epoch count the blocks of all groups; ZeRO's shards
  const TrainArgs& a = args;
  const ModelConfig& config = setup.config;
  const Dataset& data = *setup.data;
  const Device device = a.device == "cuda" ? Device::CUDA : Device::CPU;
  MS_CHECK(data.size() > 0, "the training data holds no ", data.examples() ? "example" : "block of --model_max_length ",
           data.examples() ? "" : std::to_string(a.model_max_length) + " tokens");
  MS_CHECK(!a.output_dir.empty(), "--output_dir is required");
  StepPolicy policy = policy_from(a);
  TrainResult result;
  const bool quiet = setup.quiet || !dp.root();

  // The backend first: its device's free memory is the plan's budget.
  std::unique_ptr<Backend> owned_backend = setup.backend ? nullptr : make_backend(device);
  Backend* const be = setup.backend ? setup.backend : owned_backend.get();
  MS_CHECK(be->device() == device, "internal: the given backend is not on the run's device");

  // ---- plan the whole run before step 0, and refuse when it does not fit ----
  const CheckedPlan checked = plan_or_refuse(config, a, device_memory_budget(a, *be));
  const RunPlan& run_plan = checked.run;
  policy = checked.policy;
  if (data.examples()) policy.s2_sft_group = kLongLoraSftGroup;  // supervised fine-tuning: LongLoRA's SFT groups
  result.planned = run_plan.device;
  result.planned_host = run_plan.host;
  result.policy = policy;

  // ---- the output directory, checked and prepared before anything is loaded (train/output_dir.h) ----
  std::string resume = a.resume_from_checkpoint;
  if (resume == "True" || resume == "true") {
    resume = dp.broadcast_string(dp.root() ? latest_checkpoint(a.output_dir) : "");
    MS_CHECK(!resume.empty(), "--resume_from_checkpoint True: no checkpoint-* directory in ", a.output_dir);
  } else if (resume == "False" || resume == "false") {
    resume.clear();
  }
  if (!resume.empty()) check_resumable(resume, a.lora, setup.model_dir);
  OutputDirRequest out_req;
  out_req.output_dir = a.output_dir;
  out_req.model_dir = setup.model_dir;
  out_req.resuming = !resume.empty();
  out_req.overwrite = a.overwrite_output_dir;
  {
    // Full fine-tuning saves every parameter; LoRA what it trains (the adapter in fp32; counted as weights).
    const auto n = static_cast<uint64_t>(param_count(trainable_specs(config, a.lora)));
    const bool bf16_weights = a.bf16 || !a.master_weights || device == Device::CUDA;
    const uint64_t w = bf16_weights && !a.lora.enabled ? 2 : 4, m = dtype_size(a.moments_dtype);  // LoRA: fp32 adapter
    const uint64_t master = bf16_weights && a.master_weights ? 4 : 0;
    out_req.checkpoint_bytes = a.save_strategy == SaveStrategy::No ? 0 : n * (w + 2 * m + master);
    out_req.final_model_bytes = n * w;
  }
  // Rank 0 checks and prepares the directory; the others wait for it and take its run id.
  OutputDir out_dir;
  if (dp.root()) out_dir = prepare_output_dir(out_req, resume.empty() ? "" : checkpoint_run_id(resume));
  out_dir.run_id = dp.broadcast_string(out_dir.run_id);
  if (!quiet)
    for (const auto& c : out_dir.cleaned)
      std::printf("output_dir: %s (left by an interrupted run)\n", c.c_str());

  // ---- allocate exactly the plan, load or create the weights ----
  // --bf16 True on the CPU: the linear layers' GEMMs take bf16 inputs with fp32 accumulation (the CUDA backend
  // always computes so). --bf16 True also saves the weights in bf16, on either device.
  const bool cpu_bf16 = a.bf16 && device == Device::CPU;
  if (cpu_bf16) set_cpu_math(*be, cpu::Math::BF16);
  // Precision policy: bf16 weights without master (CUDA stores bf16 weights anyway; the CPU emulates them) and
  // the gradients' precision, before the decoder allocates them.
  be->set_precision(a.master_weights ? be->param_dtype() : DType::BF16, a.grad_dtype);
  MemoryPlan plan = MemoryPlan::real(device, result.planned.arena_bytes);
  // Host memory for offloaded state (a second arena, planned with the first; pinned for fast copies on a GPU).
  std::unique_ptr<MemoryPlan> host_plan;
  if (run_plan.host.arena_bytes > 0)
    host_plan.reset(new MemoryPlan(MemoryPlan::real(Device::CPU, run_plan.host.arena_bytes)));
  Decoder model(
      config, *be, plan,
      a.optimizer_in_backward || a.zero_stage >= 2 ? GradStorage::PerGroup : GradStorage::Persistent, a.lora);
  // What AdamW updates: every weight in full fine-tuning; with LoRA the adapters and --trainable_params (the
  // frozen weights have no gradient and no optimizer state).
  const ParamSet& trained = model.trained_weights();
  const std::vector<ParamSpec> trained_specs = trainable_specs(config, a.lora);
  model.set_checkpoint_offload(host_plan.get(), a.offload_checkpoints);
  model.set_async_grad_reads(a.offload_optimizer && a.optimizer_in_backward &&
                             a.zero_stage == 0);  // as plan_run
  if (SP > 1) model.set_sequence_parallel({sp_group ? sp_group.get() : &dp.comm(), sp_rank, SP});
  // AdamW on the device, or its state and fp32 master weights on the host (same allocation order as
  // plan_run).
  std::optional<AdamW> dev_opt;
  std::optional<HostOptimizer> host_opt;
  std::optional<ZeroAdamW> zero_opt;  // --zero_stage 1, 2: this rank's shard of the state (train/zero_optimizer.h)
  if (a.zero_stage >= 1) {
    ZeroOptions zo;
    zo.shard_grads = a.zero_stage >= 2;
    zo.in_backward = a.optimizer_in_backward;
    zo.host = a.offload_optimizer ? host_plan.get() : nullptr;
    zo.master_weights = a.master_weights;
    zo.seed = static_cast<uint64_t>(a.seed);
    zero_opt.emplace(plan, trained_specs, a.moments_dtype, be->param_dtype(), dp.rank(), dp.size(), zo);
  } else if (a.offload_optimizer) {
    host_opt.emplace(*host_plan, trained_specs, a.moments_dtype, *be);
  } else {
    dev_opt.emplace(plan, trained_specs, a.moments_dtype, be->param_dtype(), a.master_weights,
                    static_cast<uint64_t>(a.seed));
  }
  const HostPin pin(*be, host_plan.get(),
                    host_opt                            ? host_opt->staging_offset()
                    : zero_opt && zero_opt->offloaded() ? zero_opt->staging_offset()
                                                        : 0);
  const ParamSet* exp_avg = host_opt ? &host_opt->exp_avg() : dev_opt ? &dev_opt->exp_avg() : nullptr;
  const ParamSet* exp_avg_sq = host_opt ? &host_opt->exp_avg_sq() : dev_opt ? &dev_opt->exp_avg_sq() : nullptr;
  TrainProgress progress;
  progress.seed = static_cast<uint64_t>(a.seed);
  progress.total_steps = total_training_steps(a, data.size());

  // The base model: every weight of a fresh run; with LoRA the frozen weights also on resume (a LoRA
  // checkpoint holds only what is trained, train/checkpoint.h).
  auto load_base = [&]() {
    if (setup.init_weights) {
      setup.init_weights(model.weights(), be);
    } else {
      SafetensorsModel files(setup.model_dir);
      load_params_grown(files, setup.file_config, config, model.weights(), be);
    }
    // bf16 weights without a master (emulated on the CPU): the frozen ones are rounded as the trained ones
    // are.
    if (a.lora.enabled && be->weight_precision() != DType::F32)
      model.weights().for_each([&](const ParamSpec& s, const Tensor& w) {
        if (!is_trainable(s, a.lora)) be->round_to_precision(w, be->weight_precision());
      });
  };
  bool resume_flag = false;
  if (!resume.empty() && a.lora.enabled) load_base();
  if (!resume.empty() && zero_opt) {
    progress = load_zero_checkpoint(resume, *zero_opt, trained, *be, dp.comm());
    resume_flag = true;
    if (a.max_steps > 0) progress.total_steps = a.max_steps;
  } else if (!resume.empty()) {
    refuse_sharded_checkpoint(resume);
    const ParamSet* master = host_opt                ? &host_opt->master()
                             : dev_opt->has_master() ? &dev_opt->master()
                                                     : nullptr;
    progress = load_checkpoint(resume, trained, *exp_avg, *exp_avg_sq, be, master).progress;
    if (host_opt)
      host_opt->upload_to(trained);
    else
      dev_opt->weights_from_master(*be, trained);
    resume_flag = true;
    if (a.max_steps > 0) progress.total_steps = a.max_steps;
  } else {
    load_base();
    if (a.lora.enabled && setup.init_lora)
      setup.init_lora(model.weights(), be);
    else if (a.lora.enabled)
      init_lora_weights(model.weights(), static_cast<uint64_t>(a.seed), be);
    if (host_opt)
      host_opt->init_from(trained);
    else if (zero_opt)
      zero_opt->reset(*be, trained);
    else
      dev_opt->reset(*be, trained);
  }
  progress.model_name_or_path = recorded_model_path(setup.model_dir);
  progress.low_rank_training = a.lora.enabled;
  progress.trainable_params = a.lora.enabled ? a.lora.trainable_params : std::vector<std::string>{};
  // Written with another global micro-batch (batch size or rank count): continue after the blocks it
  // consumed.
  const int64_t now_blocks = a.per_device_train_batch_size * a.data_parallel;
  if (resume_flag && progress.micro_batch_blocks > 0 && progress.micro_batch_blocks != now_blocks) {
    const int64_t done = progress.micro_in_epoch * progress.micro_batch_blocks;
    progress.micro_in_epoch = (done + now_blocks - 1) / now_blocks;
    if (!quiet)
      std::printf(
          "resume: the checkpoint took %lld blocks per micro-batch, this run %lld: continuing the epoch "
          "after block %lld\n",
          (long long)progress.micro_batch_blocks, (long long)now_blocks,
          (long long)(progress.micro_in_epoch * now_blocks));
  }
  progress.run_id = out_dir.run_id;
  progress.micro_batch_blocks = a.per_device_train_batch_size * a.data_parallel;
  const int64_t B = a.per_device_train_batch_size, GA = a.gradient_accumulation_steps;
  const int D = static_cast<int>(a.data_parallel);
  const int64_t micro_per_epoch = DataParallel::micro_per_epoch(data.size(), B, D);  // global micro-batches
  const int64_t warmup = warmup_steps_for(a, progress.total_steps);
  if (dp.root()) fs::create_directories(a.output_dir);

  SaveRequest save;
  save.config = &config;
  save.weights = a.lora.enabled ? &trained : &model.weights();
  save.lora = &a.lora;
  save.base_model = a.model_name_or_path;
  save.weights_dtype = a.bf16 || be->weight_precision() == DType::BF16 ? DType::BF16 : DType::F32;
  save.exp_avg = exp_avg;  // null with ZeRO: each rank's shard goes in instead
  save.exp_avg_sq = exp_avg_sq;
  if (host_opt) save.master = &host_opt->master();
  else if (dev_opt && dev_opt->has_master()) save.master = &dev_opt->master();
  // ZeRO: every rank writes its optimizer shard into the checkpoint rank 0 is writing, before it is renamed into
  // place (rank 0 names the directory; the others call write_zero_shard at the same step).
  auto write_zero_shard = [&](const std::string& tmp_dir) {
    const std::string dir = dp.broadcast_string(tmp_dir);
    zero_opt->save_shard(dir, trained, *be);
    dp.barrier();
  };
  if (zero_opt) save.before_rename = write_zero_shard;
  save.progress = &progress;
  save.tokenizer_dir = setup.tokenizer_dir;
  save.tokenizer_overrides = setup.tokenizer_overrides;
  save.backend = be;
  // Never a checkpoint of non-finite weights (a good one must not be rotated out for it).
  auto weights_finite = [&]() {
    double sq = 0.0;
    trained.for_each([&](const ParamSpec&, const Tensor& w) { sq += be->sum_squares(w); });
    return std::isfinite(sq);
  };
  auto save_checkpoint_now = [&]() {
    save.dir = (fs::path(a.output_dir) / ("checkpoint-" + std::to_string(progress.global_step))).string();
    const auto t0 = std::chrono::steady_clock::now();
    save_checkpoint(save);
    if (!quiet) {
      std::printf("%ssaved %s in %.1f s\n", isatty(STDOUT_FILENO) ? "\n" : "", save.dir.c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      std::fflush(stdout);
    }
    prune_run_checkpoints(a.output_dir, progress.run_id, a.save_total_limit);
    write_file_atomic((fs::path(a.output_dir) / "training.svg").string(), training_svg(progress.log_history, result.planned.arena_bytes));
  };

  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  g_stop_signal.store(0);

  const bool tty = !quiet && isatty(STDOUT_FILENO);
  if (!quiet) {
    const int64_t T = B * a.model_max_length / SP;  // this rank's rows
    std::string ranks = D > 1 ? " x " + std::to_string(D) + " data-parallel ranks" : "";
    if (SP > 1)
      ranks += (D > 1 ? " of " : " x ") + std::to_string(SP) + " sequence-parallel ranks (" +
               std::to_string(a.model_max_length / SP) + " tokens of each sequence per rank)";
    std::printf("training %lld steps (%lld %s %lld tokens, batch %lld x %lld accumulation%s)%s\n"
                "memory: mini-sequence %s (MLP chunks of %lld rows, LM head in chunks of %lld rows), checkpointing "
                "%s; planned peak %s at %s\n",
                (long long)progress.total_steps, (long long)data.size(),
                data.examples() ? "examples (right-padded per batch) of at most" : "blocks of",
                (long long)a.model_max_length, (long long)B, (long long)GA,
                ranks.c_str(),
                resume_flag ? (" resumed from " + resume).c_str() : "",
                policy.mini_sequence ? "on" : "off", (long long)policy.mlp_chunk_rows(config, T),
                (long long)policy.lm_head_chunk_rows(config, T), policy.checkpointing ? "on" : "off",
                gib(static_cast<double>(result.planned.arena_bytes)).c_str(), result.planned.peak_moment.c_str());
    if (policy.s2_attn && data.examples())
      std::printf("attention: S2-Attn in training (--use_full_attn False), as LongLoRA's supervised-fine-tune: "
                  "groups of a quarter of a batch's padded length when 4096 divides it, else of %lld tokens; half "
                  "the heads shifted by half a group\n",
                  (long long)policy.s2_sft_group);
    else if (policy.s2_attn)
      std::printf("attention: S2-Attn in training (--use_full_attn False): groups of %lld tokens, half the heads "
                  "shifted by %lld\n",
                  (long long)policy.s2_group(a.model_max_length), (long long)(policy.s2_group(a.model_max_length) / 2));
    else
      std::printf("attention: full causal (--use_full_attn True)\n");
    if (a.lora.enabled) {
      const std::string targets = join_list(a.lora.target_modules), keys = join_list(a.lora.trainable_params);
      std::printf(
          "LoRA%s: r %lld, alpha %g on %s%s%s; %lld of %lld parameters trained, the rest frozen (checkpoints "
          "hold the adapter%s, not the base model)\n",
          keys.empty() ? "" : "+", (long long)a.lora.r, a.lora.alpha, targets.c_str(),
          keys.empty() ? "" : ", trained fully: ", keys.c_str(), (long long)param_count(trained_specs),
          (long long)param_count(model_param_specs(config, a.lora)),
          keys.empty() ? "" : " and the trainable params");
    } else {
      std::printf("full fine-tuning: every parameter trained (--low_rank_training False)\n");
    }
    if (cpu_bf16) std::printf("bf16 GEMMs: %s\n", cpu::bf16_gemm_description().c_str());
    if (!a.master_weights || a.grad_dtype != DType::F32)
      std::printf("precision: %s weights%s, %s gradients%s\n",
                  std::string(dtype_name(be->weight_precision())).c_str(),
                  a.master_weights ? "" : " without master (stochastic rounding)",
                  std::string(dtype_name(be->grad_precision())).c_str(),
                  device == Device::CPU ? " (emulated in fp32 buffers on the CPU)" : "");
    if (host_plan)
      std::printf("host memory (offload: %s%s): planned %s\n", a.offload_optimizer ? "optimizer state, master weights" : "",
                  a.offload_checkpoints != 0 ? (a.offload_optimizer ? ", layer inputs" : "layer inputs") : "",
                  gib(static_cast<double>(run_plan.host.arena_bytes)).c_str());
    std::fflush(stdout);
  }
  if (progress.global_step >= progress.total_steps && !quiet)
    std::printf("nothing to train: the run is at step %lld of %lld (raise --max_steps to continue it)\n",
                (long long)progress.global_step, (long long)progress.total_steps);
  std::vector<int64_t> order = data.order(progress.seed, progress.epoch);
  double window_loss = 0.0;
  int64_t window_steps = 0;
  const auto t_start = std::chrono::steady_clock::now();
  int64_t tokens_this_run = 0, steps_this_run = 0;
  bool first = true;
  // Without a terminal: a progress line on stderr after the first step and then every minute, between logging steps.
  auto last_note = t_start;
  bool noted_first = false, logged_any = false;

  while (progress.global_step < progress.total_steps) {
    // ---- one optimizer step: up to GA micro-batches of this epoch ----
    // This rank's share of up to GA global micro-batches of this epoch (none at an epoch's short end); the
    // loss is normalized by the target count of all ranks together.
    std::vector<TokenBatch> micro;
    int64_t n_global_micro = 0;
    for (int64_t k = 0; k < GA && progress.micro_in_epoch + k < micro_per_epoch; ++k, ++n_global_micro) {
      const std::vector<int64_t> blocks =
          DataParallel::micro_blocks(order, progress.micro_in_epoch + k, B, D, dp_rank);
      if (!blocks.empty()) {
        micro.push_back(data.batch(blocks));
      } else if (a.optimizer_in_backward || (zero_opt && zero_opt->shards_grads())) {
        // ZeRO-2 and the optimizer in backward sum each gradient group over the ranks as the backward
        // completes it, so every rank runs every micro-batch: one without a block of its own runs the epoch's
        // first block with every label ignored (no target, gradients exactly zero).
        micro.push_back(data.batch({order.front()}));
        std::fill(micro.back().labels.begin(), micro.back().labels.end(), kIgnoreIndex);
      }
    }
    double counts[2] = {0.0, 0.0};  // targets, tokens
    if (sp_rank == 0)  // a group's ranks share its micro-batches: counted once
      for (const auto& mb : micro)
        counts[0] += static_cast<double>(mb.count_targets()), counts[1] += static_cast<double>(mb.rows());
    dp.sum(counts, 2);
    if (SP > 1)  // an example batch (padded to its longest) gets a length that splits over the group
      for (auto& mb : micro) pad_to_multiple(mb, SP);
    const auto n_targets = static_cast<int64_t>(counts[0]);
    tokens_this_run += static_cast<int64_t>(counts[1]);
    progress.tokens_seen += static_cast<int64_t>(counts[1]);
    AdamWHyper h;
    h.lr = a.learning_rate * lr_multiplier(a.lr_scheduler_type, progress.global_step, warmup, progress.total_steps);
    h.beta1 = a.adam_beta1, h.beta2 = a.adam_beta2, h.eps = a.adam_epsilon, h.weight_decay = a.weight_decay;
    h.step = progress.global_step + 1;
    double loss_sum = 0.0, norm = 0.0;
    bool updated_nonfinite = false;  // a non-finite step whose update could not be held back
    if (a.optimizer_in_backward) {
      // Optimizer in backward (one micro-batch): clipping needs the global norm before the first update, so
      // with max_grad_norm > 0 a first pass computes only the norm; the second pass updates each parameter
      // group as soon as its gradient is complete. Both passes compute the same gradients bit for bit. With
      // data parallelism each group is first summed over the ranks (GroupSumSink; ZeRO-2: each piece on its
      // owner, ZeroPieceSink), so the norm and the updates are those of the summed gradient, the same on
      // every rank.
      const bool pieces = zero_opt && zero_opt->shards_grads();
      auto backward = [&](GradSink& sink) {
        GroupSumSink summed(dp, *be, sink);
        double l = model.forward_backward(micro[0], policy, n_targets, pieces ? &sink : &summed);
        dp.sum(&l, 1);
        return l;
      };
      bool first_pass_finite = true;
      if (a.max_grad_norm > 0) {
        if (pieces) {
          ZeroPieceSink norms(*zero_opt, nullptr, h, dp.comm(), *be);
          loss_sum = backward(norms);
          norm = zero_opt->piece_grad_norm(dp.comm());
        } else {
          GradNormSink norms(*be);
          loss_sum = backward(norms);
          norm = norms.norm(trained);
        }
        h.clip = AdamW::clip_factor(norm, a.max_grad_norm);
        first_pass_finite = std::isfinite(loss_sum) && std::isfinite(norm);
      }
      // With the optimizer on the host, the host updates layer l while the device runs the backward of layers
      // < l.
      UpdateSink update(*be, [&](const ParamSpec& s, const Tensor& g) {
        const Tensor& w = model.weights().get(s.name);
        if (zero_opt)
          zero_opt->update_param(*be, trained, s.name, g, h, dp.comm());
        else if (host_opt)
          return host_opt->update(s, w, g, h);
        else
          dev_opt->update(*be, s, w, g, h);
        return uint64_t{0};
      });
      std::optional<ZeroPieceSink> piece_update;
      if (pieces) piece_update.emplace(*zero_opt, &trained, h, dp.comm(), *be);
      if (n_targets > 0 && first_pass_finite) {
        loss_sum = pieces ? backward(*piece_update) : backward(update);
        if (host_opt) host_opt->wait();
        norm = pieces ? zero_opt->piece_grad_norm(dp.comm()) : update.norm(trained);
        updated_nonfinite = !(std::isfinite(loss_sum) && std::isfinite(norm));
      }
    } else if (zero_opt && zero_opt->shards_grads()) {
      // ZeRO-2: the gradients go to their owners' shards during the backward (train/zero_optimizer.h).
      be->fill_zero(zero_opt->grad_shard());
      ZeroGradSink sink(*zero_opt, dp.comm(), *be);
      for (const auto& mb : micro) loss_sum += model.forward_backward(mb, policy, n_targets, &sink);
      dp.sum(&loss_sum, 1);
      norm = zero_opt->grad_norm(*be, dp.comm());
      h.clip = AdamW::clip_factor(norm, a.max_grad_norm);
      if (n_targets > 0 && std::isfinite(loss_sum) && std::isfinite(norm))
        zero_opt->step_from_shard(*be, trained, h, dp.comm());
    } else {
      model.zero_grads();
      for (const auto& mb : micro) loss_sum += model.forward_backward(mb, policy, n_targets);
      dp.reduce_grads(*be, model.grads());
      dp.sum(&loss_sum, 1);
      norm = AdamW::grad_norm(*be, model.grads());
      h.clip = AdamW::clip_factor(norm, a.max_grad_norm);
      if (n_targets > 0 && std::isfinite(loss_sum) && std::isfinite(norm)) {
        if (host_opt)
          host_opt->step(trained, model.grads(), h);
        else if (zero_opt)
          zero_opt->step(*be, trained, model.grads(), h, dp.comm());
        else
          dev_opt->step(*be, trained, model.grads(), h);
      }
    }
    // ---- a non-finite loss or gradient norm: stop before the update (or skip the step) ----
    if (!(std::isfinite(loss_sum) && std::isfinite(norm))) {
      if (a.skip_nonfinite_steps && !updated_nonfinite) {
        ++result.skipped_steps;
        if (!quiet)
          std::printf("%sstep %lld: loss %g, gradient norm %g: skipped (no update; --skip_nonfinite_steps)\n",
                      tty ? "\n" : "", (long long)progress.global_step + 1, loss_sum, norm);
      } else {
        result.nonfinite_step = progress.global_step + 1;
        const auto mine = run_checkpoints(a.output_dir, progress.run_id);
        result.last_good_checkpoint = !mine.empty() ? mine.back().second : resume;
        if (!quiet)
          std::printf(
              "%sstep %lld: loss %g, gradient norm %g: stopped %s; nothing was saved from this step%s%s\n",
              tty ? "\n" : "", (long long)result.nonfinite_step, loss_sum, norm,
              updated_nonfinite ? "(the optimizer in backward had already updated the weights)"
                                : "before updating the weights",
              result.last_good_checkpoint.empty() ? "" : "; the last good checkpoint is ",
              result.last_good_checkpoint.c_str());
        std::fflush(stdout);
        break;
      }
    }
    const bool skipped = !(std::isfinite(loss_sum) && std::isfinite(norm));
    const double loss = n_targets > 0 ? loss_sum / static_cast<double>(n_targets) : 0.0;
    const double lr = h.lr;
    ++progress.global_step;
    ++steps_this_run;
    progress.micro_in_epoch += n_global_micro;
    bool epoch_end = false;
    if (progress.micro_in_epoch >= micro_per_epoch) {
      ++progress.epoch;
      progress.micro_in_epoch = 0;
      order = data.order(progress.seed, progress.epoch);
      epoch_end = true;
    }
    if (!skipped) {
      if (first) result.first_loss = loss, first = false;
      result.last_loss = loss;
      window_loss += loss;
      ++window_steps;
    }

    // ---- progress and logging ----
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    const double tok_s = static_cast<double>(tokens_this_run) / std::max(elapsed, 1e-9);
    const double epoch_f = static_cast<double>(progress.epoch) +
                           static_cast<double>(progress.micro_in_epoch) / static_cast<double>(micro_per_epoch);
    const size_t peak = peak_rss_bytes();
    if ((progress.global_step % a.logging_steps == 0 || progress.global_step == progress.total_steps) &&
        window_steps > 0) {
      nlohmann::json rec = {{"step", progress.global_step},
                            {"epoch", epoch_f},
                            {"loss", window_loss / static_cast<double>(window_steps)},
                            {"learning_rate", lr},
                            {"grad_norm", norm},
                            {"tokens_per_second", tok_s},
                            {"peak_memory_bytes", peak},
                            {"elapsed_seconds", elapsed}};
      progress.log_history.push_back(rec);
      if (!logged_any) result.first_logged_loss = rec["loss"].get<double>();
      logged_any = result.logged = true;
      result.last_logged_loss = rec["loss"].get<double>();
      if (dp.root())
        write_metrics_jsonl((fs::path(a.output_dir) / "metrics.jsonl").string(), progress.log_history);
      window_loss = 0.0;
      window_steps = 0;
      if (!quiet && !tty) {
        std::printf("step %lld/%lld loss %.4f lr %.3e grad_norm %.4f tokens/s %.1f peak %s epoch %.2f\n",
                    (long long)progress.global_step, (long long)progress.total_steps, rec["loss"].get<double>(), lr,
                    norm, tok_s, gib(static_cast<double>(peak)).c_str(), epoch_f);
        std::fflush(stdout);
      }
    }
    if (!tty && !quiet &&
        (!noted_first || std::chrono::steady_clock::now() - last_note > std::chrono::seconds(60))) {
      const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, steps_this_run));
      std::fprintf(stderr, "progress: step %lld/%lld, loss %.4f, %.0f tokens/s, ETA %s\n",
                   (long long)progress.global_step, (long long)progress.total_steps, loss, tok_s,
                   hms(per_step * static_cast<double>(progress.total_steps - progress.global_step)).c_str());
      noted_first = true;
      last_note = std::chrono::steady_clock::now();
    }
    if (tty) {
      const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, steps_this_run));
      std::printf("\r step %lld/%lld | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | peak %s | ETA %s   ",
                  (long long)progress.global_step, (long long)progress.total_steps, loss, lr, norm, tok_s,
                  gib(static_cast<double>(peak)).c_str(),
                  hms(per_step * static_cast<double>(progress.total_steps - progress.global_step)).c_str());
      std::fflush(stdout);
    }

    // ---- checkpoints and stop requests ----
    const bool stop = dp.any(g_stop_signal.load() != 0);  // every rank stops at the same step
    const bool save_now =
        (a.save_strategy == SaveStrategy::Steps && progress.global_step % a.save_steps == 0) ||
        (a.save_strategy == SaveStrategy::Epoch && epoch_end);
    if ((save_now || stop) && !weights_finite()) {
      result.nonfinite_step = progress.global_step;
      const auto mine = run_checkpoints(a.output_dir, progress.run_id);
      result.last_good_checkpoint = !mine.empty() ? mine.back().second : resume;
      if (!quiet)
        std::printf("%sstep %lld: the weights are no longer finite; no checkpoint saved%s%s\n",
                    tty ? "\n" : "", (long long)progress.global_step,
                    result.last_good_checkpoint.empty() ? "" : "; the last good one is ",
                    result.last_good_checkpoint.c_str());
      std::fflush(stdout);
      break;
    }
    if ((save_now || stop) && dp.root()) save_checkpoint_now();
    else if ((save_now || stop) && zero_opt) write_zero_shard("");
    if (stop) {
      result.interrupted = true;
      if (!quiet)
        std::printf(
            "%sinterrupted by signal %d after step %lld; checkpoint saved in %s\n", tty ? "\n" : "",
            g_stop_signal.load(), (long long)progress.global_step,
            (fs::path(a.output_dir) / ("checkpoint-" + std::to_string(progress.global_step))).c_str());
      break;
    }
  }
  if (tty) std::printf("\n");
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  result.steps = progress.global_step;
  result.steps_this_run = steps_this_run;
  result.used = plan.report();
  if (host_plan) result.used_host = host_plan->report();
  if (!result.interrupted && result.nonfinite_step == 0) {
    if (dp.root()) {
      SaveRequest final_save = save;
      final_save.dir = a.output_dir;
      save_model_files(final_save);
      write_file_atomic((fs::path(a.output_dir) / "training.svg").string(),
                        training_svg(progress.log_history, result.planned.arena_bytes));
    }
    result.final_dir = a.output_dir;
  }
  dp.barrier();  // every rank returns once rank 0's files are written
  return result;
}

}  // namespace miniseq
