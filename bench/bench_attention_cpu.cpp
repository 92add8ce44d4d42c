// CPU attention throughput against the machine's sgemm rate, paired in one run (issue 18):
//   build/bench_attention_cpu [--quick] [S ...]        (default S = 8192 16384 32768 65536)
// For every configuration it measures OpenBLAS sgemm right before the attention (so that both see the same
// load from other processes), then attention forward and backward, and prints GFLOP/s and the ratio to that
// sgemm rate, by wall time and by CPU time (process user + system seconds: the rate per core-second actually
// received, which other processes on the cores disturb less). The kernel is the one attention dispatches to
// (MINISEQ_CPU_ATTENTION=blas|avx2|avx512 picks another). --quick: no D = 128 beyond 16K.
//
// FLOP counting: P = number of visible (query, key) pairs summed over the query heads, counted exactly from
// the mask (causal: S(S+1)/2 per head; fewer with a sliding window or S²-Attn groups). Forward 4·D·P (QKᵀ and
// PV); backward 10·D·P (five products: the recomputed QKᵀ, dV, dP, dK, dQ; FlashAttention's convention, 2.5×
// forward). Masked-out work the kernel does anyway on boundary tiles is not counted. sgemm: 2·M·N·K for C =
// A·Bᵀ with M = N = 4096, K = 1024 (all threads).
#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>

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

double cpu_seconds() {  // user + system time of the process, all threads
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

struct Timing {
  double wall = 1e30, cpu = 0.0;  // seconds of the call with the best wall time, and its CPU seconds
};

// Repeats f until min_seconds have passed (a single call when it is long, else a warm-up call first) and
// keeps the call with the best wall time.
template <typename F>
Timing time_it(F&& f, double min_seconds) {
  Timing best;
  double total = 0.0;
  for (int rep = 0;; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds();
    f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double c = cpu_seconds() - c0;
    total += s;
    if (rep == 0 && s > min_seconds) return Timing{s, c};
    if (rep > 0 && s < best.wall) best = Timing{s, c};
    if (rep > 0 && total >= min_seconds) return best;
  }
}

struct Rate {
  double wall, cpu;  // GFLOP/s, GFLOP per CPU second
};

Rate rate(double gflop, const Timing& t) {
  return Rate{gflop / t.wall, gflop / t.cpu};
}

Rate sgemm_rate() {
  const int M = 4096, N = 4096, K = 1024;
  static const std::vector<float> a = randv(size_t(M) * K, 1), b = randv(size_t(N) * K, 2);
  static std::vector<float> c(size_t(M) * N);
  const Timing t = time_it(
      [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a.data(), K, b.data(), K, 0.0f,
                    c.data(), N);
      },
      1.0);
  return rate(2.0 * M * N * K * 1e-9, t);
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

void bench(Backend& be, const Config& c) {
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
  const Rate gemm = sgemm_rate();
  const Timing f = time_it([&] { be.attention_forward(tq, tk, tv, to, tl, p); }, 1.0);
  const Timing b = time_it([&] { be.attention_backward(tdo, tq, tk, tv, to, tl, tdq, tdk, tdv, p); }, 1.0);
  const double pairs = visible_pairs(c);
  const Rate rf = rate(4.0 * D * pairs * 1e-9, f), rb = rate(10.0 * D * pairs * 1e-9, b);
  std::string mask = "causal";
  if (c.window > 0) mask += ", window " + std::to_string(c.window);
  if (c.group > 0) mask += ", S² group " + std::to_string(c.group);
  std::printf(
      "| %ld | %ld | %s | %.0f / %.0f | %.2f | %.0f / %.0f | **%.2f** / %.2f | %.2f | %.0f / %.0f | **%.2f** "
      "/ %.2f |\n",
      long(S), long(D), mask.c_str(), gemm.wall, gemm.cpu, f.wall, rf.wall, rf.cpu, rf.wall / gemm.wall,
      rf.cpu / gemm.cpu, b.wall, rb.wall, rb.cpu, rb.wall / gemm.wall, rb.cpu / gemm.cpu);
  std::fflush(stdout);
}

std::string cpu_facts() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(in, line)) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = line + " ";
  }
  std::string isa;
  for (const char* f : {"avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_tile"})
    if (flags.find(std::string(" ") + f + " ") != std::string::npos)
      isa += std::string(isa.empty() ? "" : " ") + f;
  return model + "; " + isa;
}

double load_average() {
  double l = -1.0;
  std::ifstream("/proc/loadavg") >> l;
  return l;
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
  std::printf("cpu: %s; threads %d; %s (core %s); attention kernel %s; load average %.2f\n",
              cpu_facts().c_str(), omp_get_max_threads(), openblas_get_config(), openblas_get_corename(),
              cpu::attention_kernel_name(), load_average());
  std::printf(
      "H = 12, Hkv = 4, batch 1. Rates: wall / CPU time; ratios to the sgemm rate measured right before.\n\n"
      "| S | D | mask | sgemm GFLOP/s | fwd s | fwd GFLOP/s | fwd / sgemm | bwd s | bwd GFLOP/s | bwd / "
      "sgemm |\n"
      "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const int64_t S : seqs)
    for (const int64_t D : {int64_t{64}, int64_t{128}}) {
      if (quick && S > 16384 && D == 128) continue;
      bench(*be, Config{S, 12, 4, D, 0, 0});
      if (D == 64) {
        bench(*be, Config{S, 12, 4, D, 4096, 0});
        bench(*be, Config{S, 12, 4, D, 0, S / 4});
      }
    }
  std::printf("\nload average at the end %.2f\n", load_average());
  return 0;
}
