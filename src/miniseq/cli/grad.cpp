// `miniseq grad --model DIR --data FILE.jsonl --out GRADS.safetensors`: one forward + backward over one batch,
// writing the loss and the fp32 gradient of every trained parameter under its Hugging Face name (with LoRA: the
// LoRA tensors under their adapter_model.safetensors names and the --trainable_params tensors; frozen ones get
// none). --peft_model DIR loads a PEFT adapter (its config, its A and B, and trainable_params.safetensors when
// present); LoRA without it starts from PEFT's initialization (B = 0). The step is planned
// first (a dry run of the same schedule), then run in an arena of exactly the planned size; the planned and the
// measured peak memory are printed per category.
#include <cmath>
#include <cstdio>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/cli/commands.h"
#include "miniseq/cli/flags.h"
#include "miniseq/cli/lora_flags.h"
#include "miniseq/core/rss.h"
#include "miniseq/dist/communicator.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/model/adapter.h"
#include "miniseq/model/decoder.h"
#include "miniseq/model/planner.h"
#include "miniseq/model/sequence_parallel.h"

namespace miniseq::cli {

namespace {
std::string format_loss(double loss) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", loss);
  return buf;
}
}  // namespace

int cmd_grad(const Args& args) {
  Flags f("grad",
          "miniseq grad --model DIR --data FILE.jsonl --out GRADS.safetensors [--mini_sequence True|False] "
          "[--mlp_chunk_tokens N] [--lm_head_chunks N] [--gradient_checkpointing True|False] [--use_full_attn True|False] "
          "[--bf16 True|False] "
          "[--low_rank_training True [--lora_r 8 --lora_alpha 16 --lora_target_modules LIST] | --peft_model DIR] "
          "[--trainable_params embed,norm] [--sequence_parallel P]",
          with_flags({
              {"model", FlagKind::String, "", "Hugging Face model directory (config.json + safetensors)"},
              {"data", FlagKind::String, "", "JSONL, one sequence per line: {\"input_ids\": [...], \"labels\": [...]}"},
              {"out", FlagKind::String, "", "safetensors file for the gradients (fp32, HF names, loss in metadata)"},
              {"mini_sequence", FlagKind::Bool, "True", "chunk the MLP and the LM head + loss (MsT)"},
              {"mlp_chunk_tokens", FlagKind::Int, "0", "rows per MLP chunk (0 = hidden_size)"},
              {"lm_head_chunks", FlagKind::Int, "0", "LM-head chunks (0 = ceil(vocab / hidden))"},
              {"gradient_checkpointing", FlagKind::Bool, "True", "keep layer inputs only, recompute in backward"},
              {"use_full_attn", FlagKind::Bool, "True",
               "True: full causal attention, as transformers; False: S2-Attn as `train --use_full_attn False` "
               "(docs/s2attn.md)"},
              {"device", FlagKind::String, "cpu", "cpu (fp32) or cuda (bf16 storage, fp32 accumulation)"},
              {"bf16", FlagKind::Bool, "False",
               "cpu: bf16 GEMM inputs with fp32 accumulation in the linear layers (as train --bf16 True)"},
              {"peft_model", FlagKind::String, "",
               "PEFT adapter directory (adapter_config.json, adapter_model.safetensors, optional "
               "trainable_params.safetensors): LoRA with its settings and values"},
              {"seed", FlagKind::Int, "42", "seed of the LoRA initialization (LoRA without --peft_model)"},
              {"sequence_parallel", FlagKind::Int, "1",
               "Ulysses sequence parallelism over P processes (mpirun -np P miniseq grad ...): each rank runs S/P "
               "tokens of every sequence, S divisible by P (docs/distributed.md)"},
          }, lora_flag_specs("False")));
  if (!f.parse(args)) return 0;
  for (const char* required : {"model", "data", "out"})
    MS_CHECK(f.has(required), "grad: --", required, " is required (see `miniseq grad --help`)");
  MS_CHECK(f.i64("mlp_chunk_tokens") >= 0 && f.i64("lm_head_chunks") >= 0,
           "grad: --mlp_chunk_tokens and --lm_head_chunks must be >= 0");

  const ModelConfig config = load_model_config(f.str("model"));
  LoraConfig lora;
  const std::string peft = f.str("peft_model");
  if (peft.empty()) {
    lora = lora_config_from(f);
  } else {  // the adapter's own settings; flags that would contradict them are refused
    for (const char* flag : {"lora_r", "lora_alpha", "lora_target_modules"})
      MS_CHECK(!f.given(flag), "grad: --", flag, " is read from ", peft, "/", kAdapterConfigFile,
               " with --peft_model; drop it");
    MS_CHECK(!f.given("low_rank_training") || f.boolean("low_rank_training"),
             "grad: --peft_model loads a LoRA adapter; it cannot go with --low_rank_training False");
    const std::vector<std::string> trainable = split_list(f.str("trainable_params"));
    lora = read_adapter_config(peft);
    lora.trainable_params = trainable;
  }
  const TokenBatch batch = read_token_batch_jsonl(f.str("data"), config.vocab_size);
  const int64_t n_targets = batch.count_targets();
  MS_CHECK(n_targets > 0, f.str("data"), ": every label is -100 after the shift by one; there is no loss to compute");
  StepPolicy policy;
  policy.mini_sequence = f.boolean("mini_sequence");
  policy.checkpointing = f.boolean("gradient_checkpointing");
  policy.mlp_chunk_tokens = f.i64("mlp_chunk_tokens");
  policy.lm_head_chunks = f.i64("lm_head_chunks");
  policy.s2_attn = !f.boolean("use_full_attn");

  const std::string dev_name = f.str("device");
  MS_CHECK(dev_name == "cpu" || dev_name == "cuda", "grad: --device must be cpu or cuda, got '", dev_name, "'");
  const Device device = dev_name == "cuda" ? Device::CUDA : Device::CPU;
  // Sequence parallelism: the world is the group (every rank reads the whole batch and runs its S/P tokens).
  const int64_t P = f.i64("sequence_parallel");
  MS_CHECK(P >= 1, "grad: --sequence_parallel must be >= 1, got ", P);
  dist::Communicator* comm = nullptr;
  if (P > 1 || dist::launched_by_mpi()) {
    MS_CHECK(dist::launched_by_mpi(), "grad: --sequence_parallel ", P, " needs ", P,
             " processes: launch it as `mpirun -np ", P, " miniseq grad ... --sequence_parallel ", P, "`");
    comm = &dist::world(device);
    MS_CHECK(comm->size() == P, "grad: --sequence_parallel ", P, " but ", comm->size(),
             " processes were started: launch exactly P processes (mpirun -np ", P, ")");
    MS_CHECK(batch.seq % P == 0, "grad: ", f.str("data"), " has sequences of ", batch.seq,
             " tokens, which do not split over --sequence_parallel ", P,
             ": every rank takes S/P consecutive tokens, so S must be divisible by P (shorten or pad the "
             "data)");
    const std::string heads =
        sequence_parallel_heads_problem(config.num_attention_heads, config.num_key_value_heads, P);
    MS_CHECK(heads.empty(), "grad: --sequence_parallel ", P, ": ", heads);
  }
  const bool root = !comm || comm->is_root();
  auto backend = make_backend(device);
  if (f.boolean("bf16") && device == Device::CPU) {
    set_cpu_math(*backend, cpu::Math::BF16);
    std::printf("bf16 GEMMs: %s\n", cpu::bf16_gemm_description().c_str());
  }

  // Plan: the same schedule on a dry plan with the dry backend, in the backend's dtypes.
  PlanTarget target = plan_target_for(*backend, false);
  target.lora = lora;
  if (comm) target.sequence_parallel = P;
  const MemReport planned = plan_step(config, batch.batch, batch.seq, policy, target);

  // Run in an arena of exactly the planned size.
  backend->warm_up();
  const size_t rss_baseline = current_rss_bytes();
  const size_t device_baseline = backend->device_bytes_in_use();
  MemoryPlan plan = MemoryPlan::real(device, planned.arena_bytes);
  Decoder model(config, *backend, plan, GradStorage::Persistent, lora);
  {
    SafetensorsModel files(f.str("model"));
    load_params(files, config, model.weights(), backend.get());
  }
  if (!peft.empty()) {
    load_adapter_weights(peft, model.weights(), backend.get());
    if (load_trainable_params(peft, model.weights(), backend.get()))
      std::printf("loaded %s/%s\n", peft.c_str(), kTrainableParamsFile);
  } else if (lora.enabled) {
    init_lora_weights(model.weights(), static_cast<uint64_t>(f.i64("seed")), backend.get());
  }
  if (lora.enabled)
    std::printf("LoRA r %lld, alpha %g, targets %zu module(s); %zu trained tensors, %lld trained parameters\n",
                (long long)lora.r, lora.alpha, lora.target_modules.size(), model.grads().size(),
                (long long)param_count(model.grads().specs()));
  model.zero_grads();
  if (comm) model.set_sequence_parallel({comm, comm->rank(), comm->size()});
  reset_peak_rss();
  double loss_sum = model.forward_backward(batch, policy, n_targets);
  const size_t rss_peak = peak_rss_bytes();
  const size_t device_used = backend->device_bytes_in_use();
  const MemReport measured = plan.report();
  if (comm) {  // each rank holds its tokens' part of the loss and of every gradient: sums in rank order
    comm->all_reduce_sum_f64(&loss_sum, 1);
    model.grads().for_each([&](const ParamSpec&, const Tensor& g) { comm->all_reduce_sum(g); });
  }
  const double loss = loss_sum / static_cast<double>(n_targets);
  MS_CHECK(std::isfinite(loss), "grad: the loss is not finite (", loss, "); check the weights");

  // Gradients in fp32 on the host, under their Hugging Face names.
  std::vector<std::vector<float>> host(model.grads().size());
  std::vector<TensorToWrite> out;
  size_t i = 0;
  model.grads().for_each([&](const ParamSpec& s, const Tensor& g) {
    host[i].resize(static_cast<size_t>(g.numel()));
    const Tensor h(host[i].data(), g.shape);
    backend->download(h, g);
    out.push_back({s.name, h, DType::F32});
    ++i;
  });
  if (!root) return 0;  // rank 0 writes and reports
  write_safetensors(f.str("out"), out, {{"loss", format_loss(loss)}});

  std::printf("loss %s\n", format_loss(loss).c_str());
  const std::string attention =
      policy.s2_attn ? "S2-Attn, groups of " + std::to_string(policy.s2_group(batch.seq)) : "full";
  std::printf("tokens %lld x %lld, %lld targets; attention %s; mini_sequence %s, checkpointing %s, MLP chunk %lld "
              "rows, LM-head chunk %lld rows\n",
              (long long)batch.batch, (long long)batch.seq, (long long)n_targets, attention.c_str(),
              policy.mini_sequence ? "on" : "off",
              policy.checkpointing ? "on" : "off", (long long)policy.mlp_chunk_rows(config, batch.rows()),
              (long long)policy.lm_head_chunk_rows(config, batch.rows()));
  if (comm)
    std::printf("sequence parallel: %lld ranks (%s), %lld tokens of each sequence per rank; the memory below is "
                "rank 0's\n",
                (long long)P, std::string(comm->name()).c_str(), (long long)(batch.seq / P));
  std::printf("planned memory: %s", planned.str().c_str());
  std::printf("measured memory (real arena): %s", measured.str().c_str());
  if (device == Device::CPU)
    std::printf("measured peak RSS above the process baseline: %.2f MiB (planned arena %.2f MiB)\n",
                static_cast<double>(rss_peak > rss_baseline ? rss_peak - rss_baseline : 0) / (1 << 20),
                static_cast<double>(planned.arena_bytes) / (1 << 20));
  else
    std::printf("measured device memory above the baseline: %.2f MiB (planned arena %.2f MiB; the rest is library "
                "workspace)\n",
                static_cast<double>(device_used > device_baseline ? device_used - device_baseline : 0) / (1 << 20),
                static_cast<double>(planned.arena_bytes) / (1 << 20));
  std::printf("wrote %s\n", f.str("out").c_str());
  return 0;
}

}  // namespace miniseq::cli
