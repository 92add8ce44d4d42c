// One training step (forward + backward) of a 125M-parameter Llama on the CPU backend, fp32, batch 1, for
//   (a) no MsT, no checkpointing   (b) checkpointing   (c) checkpointing + MsT
// at several sequence lengths: seconds, tokens/s, planned arena and measured peak RSS above the process
// baseline.
//   build/bench_step_cpu [--write FILE] [--json FILE] [--reps N] [--bf16] [--adamw] [--policies abc]
//   [--sgemm] [--ops] [--warm N] [--low_rank_training True [--lora_r 8 --lora_alpha 16 --lora_target_modules
//   LIST
//   --trainable_params LIST]]  [S ...]                                     (default S = 512 … 16384)
// --adamw: the timed step includes the AdamW update of every trained parameter (as PyTorch's training step
// does);
// --policies: which of (a) (b) (c) to run; --sgemm: first measures this machine's fp32 sgemm rate (OpenBLAS,
// all threads) on the model's GEMM shapes and prints it (the reference for "fraction of the GEMM limit");
// --ops: prints each timed step's wall time per op family (bench/op_timer.h, timers around the backend's
// calls; "(between ops)" is the decoder's own time); without it the backend runs unwrapped.
// --warm N: N untimed steps before the timed one (default 0: the timed step is the first, on arena pages it
// touches for the first time; a training run's later steps, like PyTorch's timed steps after its warm-up,
// find them touched). The loss checked is the first step's.
// --json: the rows (and the sgemm rate) as one JSON object, for bench/paired_step.py.
// --low_rank_training True (LoRA flags as `miniseq grad` takes them, cli/lora_flags.h; LongLoRA's LoRA+ by
// default: r 8, alpha 16, q/k/v/o, embed and norms trained): every policy runs twice per repetition, full
// fine-tuning and LoRA, interleaved, and a second table gives LoRA's time over full fine-tuning's (issue 16's
// target: <= 0.75). The adapters start as PEFT's (B = 0), so both give the same loss, which is checked. That
// table also gives the ratio of the process's CPU time (all threads), which load from other processes does
// not change.
// --bf16: the CPU backend's bf16 math mode (bf16 GEMM inputs, fp32 accumulation in the linear layers;
// gemm.h); MINISEQ_CPU_BF16_GEMM=onednn|fallback picks its implementation. Each policy runs --reps times
// (default 2 up to S = 8192, then 1), interleaved with the others so that load from other processes hits
// every policy alike; the table keeps the fastest run of each. Before timing, each length checks that the
// three policies give the same loss (they are exact up to summation order) and that it is close to ln(V) for
// random weights.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/cli/lora_flags.h"
#include "miniseq/core/random.h"
#include "miniseq/core/rss.h"
#include "miniseq/model/adapter.h"
#include "miniseq/model/decoder.h"
#include "miniseq/model/lora.h"
#include "miniseq/model/planner.h"
#include "miniseq/train/optimizer.h"
#include "op_timer.h"

using namespace miniseq;

namespace {

ModelConfig model_125m() {
  return parse_model_config(R"({"model_type":"llama","hidden_size":768,"intermediate_size":2048,
    "num_hidden_layers":12,"num_attention_heads":12,"num_key_value_heads":4,"vocab_size":32000,
    "max_position_embeddings":16384,"rms_norm_eps":1e-5,"torch_dtype":"float32"})",
                            "bench 125M config");
}

struct Row {
  int64_t S;
  std::string policy;
  bool lora;
  double seconds, loss;
  size_t planned, measured;
  double cpu_seconds;  // the process's CPU time over the step (all threads): what other processes' load hides
};

// CPU time of the whole process (every thread) in seconds.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

bool g_bf16 = false;
bool g_adamw = false;
bool g_ops = false;
int g_warm = 0;

// fp32 sgemm GFLOP/s (best of 3) for y [M, N] = x [M, K] · W [N, K]ᵀ, as the linear layers call it.
double sgemm_gflops(int M, int N, int K) {
  std::vector<float> x(static_cast<size_t>(M) * K, 0.5f), w(static_cast<size_t>(N) * K, 0.25f),
      y(static_cast<size_t>(M) * N);
  double best = 0.0;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x.data(), K, w.data(), K, 0.0f,
                y.data(), N);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep > 0) best = std::max(best, 2.0 * M * N * K / s / 1e9);  // the first call warms up
  }
  return best;
}

Row run(const ModelConfig& c, int64_t S, const char* label, const StepPolicy& p, const LoraConfig& lora) {
  TokenBatch b;
  b.batch = 1, b.seq = S;
  Rng rng(42);
  for (int64_t i = 0; i < S; ++i) b.input_ids.push_back(static_cast<int32_t>(rng.below(c.vocab_size)));
  b.labels = b.input_ids;
  const int64_t n = b.count_targets();

  PlanTarget target = plan_target_for(*make_cpu_backend(), g_adamw);
  target.lora = lora;
  const MemReport planned = plan_step(c, 1, S, p, target);
  const size_t baseline = current_rss_bytes();
  double seconds = 0.0, loss = 0.0, cpu_seconds = 0.0;
  size_t peak = 0;
  {
    MemoryPlan plan = MemoryPlan::real(Device::CPU, planned.arena_bytes);
    auto cpu_be = make_cpu_backend();
    if (g_bf16) set_cpu_math(*cpu_be, cpu::Math::BF16);
    std::optional<bench::OpTimer> timer;
    if (g_ops) timer.emplace(*cpu_be, c.vocab_size);
    Backend* be = timer ? static_cast<Backend*>(&*timer) : cpu_be.get();
    Decoder model(c, *be, plan, GradStorage::Persistent, lora);
    std::optional<AdamW> opt;  // laid out after the model, as the planner does
    if (g_adamw) opt.emplace(plan, trainable_specs(c, lora));
    Rng wr(7);
    model.weights().for_each([&](const ParamSpec& s, const Tensor& t) {
      const bool norm = param_kind(s.role) == "norm";
      float* w = t.f32();
      for (int64_t i = 0; i < t.numel(); ++i) w[i] = norm ? 1.0f : static_cast<float>(0.02 * wr.normal());
    });
    if (lora.enabled) init_lora_weights(model.weights(), 7, be);  // as PEFT: A Kaiming-uniform, B = 0
    if (opt) opt->reset(*be, model.trained_weights());
    for (int k = 0; k <= g_warm; ++k) {  // --warm: untimed steps first; the last one is timed
      const bool timed = k == g_warm;
      model.zero_grads();
      if (timed) {
        reset_peak_rss();
        if (timer) timer->clear();
      }
      const double c0 = process_cpu_seconds();
      const auto t0 = std::chrono::steady_clock::now();
      const double step_loss = model.forward_backward(b, p, n) / static_cast<double>(n);
      if (opt) {
        AdamWHyper h;
        h.lr = 1e-5;
        h.step = k + 1;
        opt->step(*be, model.trained_weights(), model.grads(), h);
      }
      if (k == 0) loss = step_loss;  // the first step's loss: the same weights for every policy
      if (!timed) continue;
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      cpu_seconds = process_cpu_seconds() - c0;
      peak = peak_rss_bytes();
      if (timer) timer->print(seconds);
    }
  }
  Row r{S,
        label,
        lora.enabled,
        seconds,
        loss,
        planned.arena_bytes,
        peak > baseline ? peak - baseline : 0,
        cpu_seconds};
  std::fprintf(
      stderr,
      "S=%-6lld %-26s %-5s %8.2f s (CPU %8.2f s) %9.1f tok/s  loss %.6f  planned %8.1f MiB  measured "
      "%8.1f MiB\n",
      (long long)S, label, lora.enabled ? "LoRA" : "full", seconds, cpu_seconds, S / seconds, loss,
      r.planned / 1048576.0, r.measured / 1048576.0);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string write_path, json_path, which = "abc";
  bool sgemm = false;
  std::vector<int64_t> lengths;
  int reps_arg = 0;
  std::vector<std::string> lora_args;  // the LoRA flags, parsed as `miniseq grad` parses them
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--write") && i + 1 < argc)
      write_path = argv[++i];
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc)
      reps_arg = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc)
      json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--policies") && i + 1 < argc)
      which = argv[++i];
    else if (!std::strcmp(argv[i], "--bf16"))
      g_bf16 = true;
    else if (!std::strcmp(argv[i], "--adamw"))
      g_adamw = true;
    else if (!std::strcmp(argv[i], "--sgemm"))
      sgemm = true;
    else if (!std::strcmp(argv[i], "--ops"))
      g_ops = true;
    else if (!std::strcmp(argv[i], "--warm") && i + 1 < argc)
      g_warm = std::max(0, std::atoi(argv[++i]));
    else if (!std::strncmp(argv[i], "--", 2) && i + 1 < argc)
      lora_args.insert(lora_args.end(), {argv[i], argv[i + 1]}), ++i;
    else
      lengths.push_back(std::atoll(argv[i]));
  }
  if (lengths.empty()) lengths = {512, 1024, 2048, 4096, 8192, 16384};
  cli::Flags lf("bench_step_cpu", "bench_step_cpu ... --low_rank_training True [LoRA flags]",
                cli::lora_flag_specs("False"));
  LoraConfig lora;
  try {
    if (!lf.parse(lora_args)) return 0;
    lora = cli::lora_config_from(lf);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_step_cpu: %s\n", e.what());
    return 2;
  }
  std::vector<LoraConfig> trainings = {LoraConfig{}};  // full fine-tuning, then LoRA when asked for
  if (lora.enabled) trainings.push_back(lora);
  const ModelConfig c = model_125m();
  if (g_bf16) std::fprintf(stderr, "bf16 GEMMs: %s\n", cpu::bf16_gemm_description().c_str());
  {
    auto warm = make_cpu_backend();  // BLAS workspaces become part of the baseline
    if (g_bf16) set_cpu_math(*warm, cpu::Math::BF16);
    warm->warm_up();
  }
  double sgemm_rate = 0.0;
  if (sgemm) {  // the model's linear shapes at 4096 rows: q/o (768 → 768), gate/up (768 → 2048), down (2048 →
                // 768)
    sgemm_rate = std::max(
        {sgemm_gflops(4096, 768, 768), sgemm_gflops(4096, 2048, 768), sgemm_gflops(4096, 768, 2048)});
    std::fprintf(stderr,
                 "sgemm: %.1f GFLOP/s (OpenBLAS, %d threads, best of the model's shapes at 4096 rows)\n",
                 sgemm_rate, omp_get_max_threads());
  }
  std::vector<Row> rows;
  for (int64_t S : lengths) {
    StepPolicy a, bpol, cpol;
    a.mini_sequence = false, a.checkpointing = false;
    bpol.mini_sequence = false, bpol.checkpointing = true;
    cpol.mini_sequence = true, cpol.checkpointing = true;
    const size_t before = rows.size();
    const int reps = reps_arg > 0 ? reps_arg : (S <= 8192 ? 2 : 1);
    const std::pair<const char*, StepPolicy> policies[] = {
        {g_bf16 ? "(a) no MsT, no ckpt, bf16" : "(a) no MsT, no ckpt", a},
        {g_bf16 ? "(b) ckpt, bf16" : "(b) ckpt", bpol},
        {g_bf16 ? "(c) ckpt + MsT, bf16" : "(c) ckpt + MsT", cpol}};
    std::vector<std::pair<size_t, size_t>> chosen;  // (policy, training)
    for (size_t k = 0; k < 3; ++k)
      if (which.find(static_cast<char>('a' + k)) != std::string::npos)
        for (size_t t = 0; t < trainings.size(); ++t) chosen.emplace_back(k, t);
    for (int rep = 0; rep < reps; ++rep) {
      for (size_t j = 0; j < chosen.size(); ++j) {
        const auto [k, t] = chosen[j];
        Row r = run(c, S, policies[k].first, policies[k].second, trainings[t]);
        if (rep == 0)
          rows.push_back(r);
        else if (r.seconds < rows[before + j].seconds)
          rows[before + j].seconds = r.seconds;
        if (rep > 0) rows[before + j].cpu_seconds = std::min(rows[before + j].cpu_seconds, r.cpu_seconds);
        if (rep > 0) rows[before + j].measured = std::max(rows[before + j].measured, r.measured);
      }
    }
    for (size_t i = before + 1; i < rows.size(); ++i) {
      if (std::abs(rows[i].loss - rows[before].loss) > 1e-5 * std::abs(rows[before].loss) ||
          std::abs(rows[before].loss - std::log(32000.0)) > 0.5) {
        std::fprintf(stderr, "validation failed at S=%lld: losses %.7f vs %.7f (ln V = %.4f)\n", (long long)S,
                     rows[i].loss, rows[before].loss, std::log(32000.0));
        return 1;
      }
    }
  }
  std::ostringstream md;
  md << "| S | policy | " << (lora.enabled ? "training | " : "")
     << "seconds | tokens/s | planned arena (MiB) | measured peak RSS (MiB) | measured/planned |\n"
     << (lora.enabled ? "|---:|---|---|" : "|---:|---|") << "---:|---:|---:|---:|---:|\n";
  for (const auto& r : rows) {
    char line[256];
    std::snprintf(line, sizeof line, "| %lld | %s | %s%.2f | %.1f | %.1f | %.1f | %.3f |\n", (long long)r.S,
                  r.policy.c_str(),
                  !lora.enabled ? ""
                  : r.lora      ? "LoRA | "
                                : "full | ",
                  r.seconds, r.S / r.seconds, r.planned / 1048576.0, r.measured / 1048576.0,
                  static_cast<double>(r.measured) / static_cast<double>(r.planned));
    md << line;
  }
  if (lora.enabled) {  // LoRA's step over full fine-tuning's, per length and policy
    md << "\n| S | policy | full fine-tuning (s) | LoRA (s) | LoRA / full | full, CPU time (s) | LoRA, CPU "
          "time (s) | "
          "LoRA / full, CPU time |\n|---:|---|---:|---:|---:|---:|---:|---:|\n";
    for (size_t i = 0; i + 1 < rows.size(); ++i) {
      const Row &f = rows[i], &l = rows[i + 1];
      if (f.lora || !l.lora || f.S != l.S || f.policy != l.policy) continue;
      char line[256];
      std::snprintf(line, sizeof line, "| %lld | %s | %.2f | %.2f | %.3f | %.2f | %.2f | %.3f |\n",
                    (long long)f.S, f.policy.c_str(), f.seconds, l.seconds, l.seconds / f.seconds,
                    f.cpu_seconds, l.cpu_seconds, l.cpu_seconds / f.cpu_seconds);
      md << line;
    }
  }
  std::printf("%s", md.str().c_str());
  if (!json_path.empty()) {
    std::ofstream js(json_path);
    js << "{\"sgemm_gflops\": " << sgemm_rate << ", \"threads\": " << omp_get_max_threads()
       << ", \"adamw\": " << (g_adamw ? "true" : "false") << ", \"rows\": [";
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      js << (i ? ", " : "") << "{\"seq\": " << r.S << ", \"policy\": \"" << r.policy
         << "\", \"lora\": " << (r.lora ? "true" : "false") << ", \"seconds\": " << r.seconds
         << ", \"cpu_seconds\": " << r.cpu_seconds << ", \"loss\": " << r.loss
         << ", \"planned_bytes\": " << r.planned << ", \"measured_bytes\": " << r.measured << "}";
    }
    js << "]}\n";
  }
  if (!write_path.empty()) {
    std::ofstream(write_path) << md.str();
    std::fprintf(stderr, "wrote %s\n", write_path.c_str());
  }
  return 0;
}
