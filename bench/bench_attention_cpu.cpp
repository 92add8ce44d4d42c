// CPU attention throughput against the machine's sgemm rate, paired in one run (issue 18):
//   build/bench_attention_cpu [--quick] [S ...]        (default S = 8192 16384 32768 65536)
// For every configuration it measures OpenBLAS sgemm right before the attention (so both see the same load),
// then attention forward and backward, and prints GFLOP/s and the ratio to that sgemm rate. The kernel is the
// one attention dispatches to (MINISEQ_CPU_ATTENTION=blas|avx2|avx512 picks another).
//
// FLOP counting: P = number of visible (query, key) pairs summed over the query heads, counted exactly from
// the mask (causal: S(S+1)/2 per head; fewer with a sliding window or S²-Attn groups). Forward 4·D·P (QKᵀ and
// PV); backward 10·D·P (five products: the recomputed QKᵀ, dV, dP, dK, dQ; FlashAttention's convention, 2.5×
// forward). Masked-out work the kernel does anyway on boundary tiles is not counted. sgemm: 2·M·N·K for C =
// A·Bᵀ with M = N = 4096, K = 1024 (all threads), the best of a few calls.
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "miniseq/backend/cpu/attention_common.h"
#include "miniseq/ops/attention_mask.h"
#include "miniseq/ops/backend.h"

using namespace miniseq;

namespace {

std::vector<float> randv(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best seconds per call: repeats until min_seconds have passed (at least once after a warm-up call when a
// call is short; a single call when it is long).
template <typename F>
double time_it(F&& f, double min_seconds) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  double best = seconds_since(t0), total = best;
  if (best > min_seconds) return best;
  while (total < min_seconds) {
    t0 = std::chrono::steady_clock::now();
    f();
    const double s = seconds_since(t0);
    best = std::min(best, s);
    total += s;
  }
  return best;
}

double sgemm_gflops() {
  const int M = 4096, N = 4096, K = 1024;
  static const std::vector<float> a = randv(size_t(M) * K, 1), b = randv(size_t(N) * K, 2);
  static std::vector<float> c(size_t(M) * N);
  const double s = time_it(
      [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a.data(), K, b.data(), K, 0.0f,
                    c.data(), N);
      },
      1.0);
  return 2.0 * M * N * K / s * 1e-9;
}

struct Config {
  int64_t S, H, Hkv, D, window, group;
};

double visible_pairs(const Config& c) {
  const AttentionMask base{c.S, true, c.window, 0, c.group};
  double pairs = 0.0;
  for (int64_t h = 0; h < c.H; ++h) {
    const AttentionMask m = base.for_head(h, c.H);
    for (int64_t i = 0; i < c.S; ++i) pairs += double(m.last_key(i) - m.first_key(i) + 1);
  }
  return pairs;
}

void bench(Backend& be, const Config& c, bool backward) {
  const int64_t B = 1, S = c.S, H = c.H, Hkv = c.Hkv, D = c.D;
  auto q = randv(size_t(B * S * H * D), 7), k = randv(size_t(B * S * Hkv * D), 8),
       v = randv(size_t(B * S * Hkv * D), 9), dout = randv(size_t(B * S * H * D), 10);
  std::vector<float> out(q.size()), lse(size_t(B * H * S)), dq(q.size()), dk(k.size()), dv(v.size());
  const Shape qs{B, S, H, D}, ks{B, S, Hkv, D};
  Tensor tq(q.data(), qs), tk(k.data(), ks), tv(v.data(), ks), to(out.data(), qs), tl(lse.data(), {B, H, S}),
      tdo(dout.data(), qs), tdq(dq.data(), qs), tdk(dk.data(), ks), tdv(dv.data(), ks);
  AttentionParams p;
  p.sliding_window = c.window;
  p.s2_group = c.group;
  const double gemm = sgemm_gflops();
  const double f = time_it([&] { be.attention_forward(tq, tk, tv, to, tl, p); }, 1.0);
  const double b =
      backward ? time_it([&] { be.attention_backward(tdo, tq, tk, tv, to, tl, tdq, tdk, tdv, p); }, 1.0)
               : 0.0;
  const double pairs = visible_pairs(c), ff = 4.0 * D * pairs / f * 1e-9,
               fb = backward ? 10.0 * D * pairs / b * 1e-9 : 0;
  std::string mask = "causal";
  if (c.window > 0) mask += " window " + std::to_string(c.window);
  if (c.group > 0) mask += " S2 group " + std::to_string(c.group);
  char bwd[96] = "| — | — | —";
  if (backward) std::snprintf(bwd, sizeof bwd, "| %.2f | %.1f | %.2f", b, fb, fb / gemm);
  std::printf("| %ld | %ld | %ld/%ld | %s | %.1f | %.2f | %.1f | %.2f %s |\n", long(S), long(D), long(H),
              long(Hkv), mask.c_str(), gemm, f, ff, ff / gemm, bwd);
  std::fflush(stdout);
}

std::string cpu_facts() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(in, line)) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = line;
  }
  std::string isa;
  for (const char* f : {"avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_tile"})
    if (flags.find(std::string(" ") + f + " ") != std::string::npos)
      isa += std::string(isa.empty() ? "" : " ") + f;
  return model + "; " + isa;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> seqs;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0)
      quick = true;
    else
      seqs.push_back(std::atoll(argv[i]));
  }
  if (seqs.empty()) seqs = {8192, 16384, 32768, 65536};
  auto be = make_cpu_backend();
  std::printf("cpu: %s; threads %d; OpenBLAS %s (%s); attention kernel %s\n", cpu_facts().c_str(),
              omp_get_max_threads(), openblas_get_config(), openblas_get_corename(),
              cpu::attention_kernel_name());
  std::printf(
      "| S | D | H/Hkv | mask | sgemm GFLOP/s | fwd s | fwd GFLOP/s | fwd/sgemm | bwd s | bwd GFLOP/s | "
      "bwd/sgemm |\n|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const int64_t S : seqs)
    for (const int64_t D : {int64_t{64}, int64_t{128}}) {
      if (quick && S > 16384 && D == 128) continue;
      bench(*be, Config{S, 12, 4, D, 0, 0}, true);
      if (D == 64) {
        bench(*be, Config{S, 12, 4, D, 4096, 0}, true);
        bench(*be, Config{S, 12, 4, D, 0, S / 4}, true);
      }
    }
  return 0;
}
