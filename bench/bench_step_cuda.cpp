// One training step (forward + backward, MsT + checkpointing) of a Mistral-7B-shaped stack on the CUDA
// backend: real dimensions (d 4096, I 14336, 32/8 heads of 128, V 32000, sliding window 4096), random bf16
// weights, L layers (default 4: the per-layer cost is what matters, the step time scales with L), at S = 4K,
// 16K, 32K. Reports tokens/s, model FLOP/s and MFU against 989 TFLOP/s (H100/H200 dense bf16) and against a
// measured cuBLASLt GEMM rate, planned vs measured device memory, and whether two identical steps give the
// same loss bits.
//   bench_step_cuda [--layers N] [--steps N] [--json FILE] [S ...]
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "miniseq/backend/cuda/cuda_backend.h"
#include "miniseq/model/decoder.h"
#include "miniseq/ops/dry_backend.h"

using namespace miniseq;

namespace {

constexpr double kPeakFlops = 989e12;  // H100/H200 SXM dense bf16

ModelConfig mistral_shaped(int64_t layers) {
  return parse_model_config(R"({"model_type":"mistral","hidden_size":4096,"intermediate_size":14336,
    "num_hidden_layers":)" + std::to_string(layers) +
                                R"(,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":32000,
    "max_position_embeddings":32768,"rms_norm_eps":1e-5,"rope_theta":10000.0,"sliding_window":4096,
    "torch_dtype":"bfloat16"})",
                            "bench Mistral-7B-shaped config");
}

// Deterministic pseudo-random bf16 values (splitmix64 of the element index, so the host threads fill in
// parallel: ~1.1 billion values per model in about a second on 16 cores), uniform in ±a.
void fill_random(const Tensor& dev, uint64_t seed, float a) {
  std::vector<uint16_t> h(static_cast<size_t>(dev.numel()));
  const uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  const auto n = static_cast<int64_t>(h.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = s + static_cast<uint64_t>(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) / static_cast<float>(1ull << 24);  // [0, 1)
    h[static_cast<size_t>(i)] = f32_to_bf16((2.0f * u - 1.0f) * a);
  }
  cuda::upload(dev, Tensor(h.data(), dev.shape, DType::BF16));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// bf16 GEMM rate of the backend's linear_forward on the MLP's largest shape: [8192, 4096] · [14336, 4096]ᵀ.
double measure_gemm_flops(Backend& be) {
  const int64_t T = 8192, in = 4096, out = 14336;
  cuda::DeviceTensor x({T, in}, DType::BF16), w({out, in}, DType::BF16), y({T, out}, DType::BF16);
  fill_random(x, 1, 1.0f), fill_random(w, 2, 0.02f);
  for (int i = 0; i < 3; ++i) be.linear_forward(x, w, nullptr, y);
  cudaDeviceSynchronize();
  const int reps = 20;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) be.linear_forward(x, w, nullptr, y);
  cudaDeviceSynchronize();
  return 2.0 * T * in * out * reps / seconds_since(t0);
}

// Model FLOPs of one step (forward + backward, recomputation not counted) and the hardware FLOPs actually run
// (plus the recomputed layer forwards, and the 7 instead of 5 attention tile products of our backward).
struct Flops {
  double model = 0, hardware = 0;
};
Flops step_flops(const ModelConfig& c, int64_t S) {
  const double d = double(c.hidden_size), I = double(c.intermediate_size), V = double(c.vocab_size);
  const double qd = double(c.q_dim()), kvd = double(c.kv_dim()), L = double(c.num_hidden_layers);
  const double W = double(c.sliding_window.empty() ? 0 : c.sliding_window[0]);
  double keys = 0;  // Σ over queries of visible keys
  for (int64_t i = 0; i < S; ++i) keys += W > 0 ? std::min<double>(double(i + 1), W) : double(i + 1);
  const double layer_mm = 2.0 * S * (d * qd + 2 * d * kvd + qd * d + 3 * d * I);
  const double attn_fwd = 4.0 * keys * qd;  // Q·Kᵀ and P·V
  const double head = 2.0 * S * d * V;
  Flops f;
  f.model = L * (3 * layer_mm + 3.5 * attn_fwd) + 3 * head;
  f.hardware = L * (4 * layer_mm + attn_fwd * (1 + 1 + 3.5)) + 3 * head;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t layers = 4, steps = 3;
  std::string json_path;
  std::vector<int64_t> seqs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--layers" && i + 1 < argc)
      layers = std::stoll(argv[++i]);
    else if (a == "--steps" && i + 1 < argc)
      steps = std::stoll(argv[++i]);
    else if (a == "--json" && i + 1 < argc)
      json_path = argv[++i];
    else
      seqs.push_back(std::stoll(a));
  }
  if (seqs.empty()) seqs = {4096, 16384, 32768};
  try {
    cuda::register_cuda_backend();
    std::printf("device: %s\n", cuda::describe_device().c_str());
    const ModelConfig config = mistral_shaped(layers);
    auto be = make_backend(Device::CUDA);
    const double gemm = measure_gemm_flops(*be);
    std::printf("cuBLASLt bf16 GEMM [8192x4096]·[14336x4096]ᵀ: %.1f TFLOP/s (%.0f%% of 989)\n", gemm / 1e12,
                100 * gemm / kPeakFlops);
    nlohmann::json out = {{"device", cuda::describe_device()},
                          {"layers", layers},
                          {"gemm_tflops", gemm / 1e12},
                          {"peak_tflops", kPeakFlops / 1e12},
                          {"runs", nlohmann::json::array()}};
    std::printf("\n%7s %9s %10s %9s %8s %8s %10s %12s %12s %8s %s\n", "S", "step s", "tokens/s", "TFLOP/s",
                "MFU", "MFU/gemm", "hw TFLOP/s", "planned GiB", "measured GiB", "ratio", "repeatable");
    bool all_repeatable = true;
    for (const int64_t S : seqs) {
      TokenBatch batch;
      batch.batch = 1, batch.seq = S;
      batch.input_ids.resize(static_cast<size_t>(S));
      uint64_t r = 12345;
      for (auto& id : batch.input_ids) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        id = static_cast<int32_t>((r >> 33) % static_cast<uint64_t>(config.vocab_size));
      }
      batch.labels = batch.input_ids;
      const int64_t n = batch.count_targets();
      StepPolicy policy;  // MsT + checkpointing, the paper's chunk sizes
      MemReport planned;
      {
        MemoryPlan dry = MemoryPlan::dry(Device::CUDA);
        DryBackend dbe(Device::CUDA, be->param_dtype(), be->grad_dtype(), be->activation_dtype());
        Decoder m(config, dbe, dry);
        m.forward_backward(batch, policy, n);
        planned = dry.report();
      }
      cudaDeviceSynchronize();
      const size_t used0 = cuda::device_used_bytes();
      double loss1 = 0, loss2 = 0, secs = 0;
      size_t used_peak = 0;
      {
        MemoryPlan plan = MemoryPlan::real(Device::CUDA, planned.arena_bytes);
        Decoder model(config, *be, plan);
        uint64_t seed = 100;
        model.weights().for_each([&](const ParamSpec& s, const Tensor& t) {
          const bool norm = s.name.find("norm") != std::string::npos;
          if (norm) {
            std::vector<uint16_t> ones(static_cast<size_t>(t.numel()), f32_to_bf16(1.0f));
            cuda::upload(t, Tensor(ones.data(), t.shape, DType::BF16));
          } else {
            fill_random(t, seed++, 0.02f * std::sqrt(3.0f));
          }
        });
        model.zero_grads();
        loss1 = model.forward_backward(batch, policy, n) / double(n);  // warm-up (cuBLASLt picks its kernels)
        cudaDeviceSynchronize();
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t s = 0; s < steps; ++s) loss2 = model.forward_backward(batch, policy, n) / double(n);
        cudaDeviceSynchronize();
        secs = seconds_since(t0) / double(steps);
        used_peak = cuda::device_used_bytes() - used0;  // every allocation is grow-only: now = peak
      }
      const bool repeatable = std::memcmp(&loss1, &loss2, sizeof loss1) == 0;
      all_repeatable &= repeatable;
      const Flops f = step_flops(config, S);
      const double tflops = f.model / secs / 1e12;
      const double ratio = double(used_peak) / double(planned.arena_bytes);
      std::printf("%7lld %9.3f %10.0f %9.1f %7.1f%% %7.1f%% %10.1f %12.2f %12.2f %8.3f %s (loss %.6f)\n",
                  (long long)S, secs, double(S) / secs, tflops, 100 * f.model / secs / kPeakFlops,
                  100 * f.model / secs / gemm, f.hardware / secs / 1e12,
                  double(planned.arena_bytes) / (1ull << 30), double(used_peak) / (1ull << 30), ratio,
                  repeatable ? "yes" : "NO", loss1);
      out["runs"].push_back({{"S", S},
                             {"step_seconds", secs},
                             {"tokens_per_second", double(S) / secs},
                             {"model_tflops", tflops},
                             {"mfu_vs_989", f.model / secs / kPeakFlops},
                             {"mfu_vs_gemm", f.model / secs / gemm},
                             {"hardware_tflops", f.hardware / secs / 1e12},
                             {"planned_arena_bytes", planned.arena_bytes},
                             {"measured_device_bytes", used_peak},
                             {"measured_over_planned", ratio},
                             {"loss_first", loss1},
                             {"loss_repeat", loss2},
                             {"bitwise_repeatable", repeatable},
                             {"peak_moment", planned.peak_moment}});
    }
    std::printf(
        "\nmeasured = device memory in use after the steps minus before the arena: the arena, the backend's\n"
        "grow-only scratch (ids, reduction partials, attention row terms, RoPE table) and library memory;\n"
        "the cuBLASLt workspace (64 MiB) was allocated before and is not in it.\n");
    if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
    return all_repeatable ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_step_cuda: error: %s\n", e.what());
    return 2;
  }
}
