// CPU op throughput at the 125M-model size (d = 768, H = 12, Hkv = 4, D = 64, intermediate 2048), S = 1024
// and 4096: GFLOP/s of linear and of attention forward/backward. A plain main (no framework), run as
//   build/bench_ops_cpu [S ...]
// FLOP conventions: linear fwd 2·T·in·out, bwd 4·T·in·out (dx and dW). Attention (FlashAttention's
// convention) fwd 4·B·H·S²·D, bwd 10·B·H·S²·D (the QKᵀ recompute included), both halved for the causal mask.
// Before timing, the attention output is checked against a naive softmax(QKᵀ)V on a small case.
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

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

// Seconds per call: one warm-up call, then repeats until at least min_seconds have passed; the best of them.
template <typename F>
double time_it(F&& f, double min_seconds = 1.0) {
  f();
  double best = 1e30, total = 0.0;
  int reps = 0;
  while (total < min_seconds || reps < 3) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    total += s;
    ++reps;
  }
  return best;
}

bool check_attention(Backend& be) {
  const int64_t S = 100, H = 4, Hkv = 2, D = 32, G = H / Hkv;
  auto q = randv(S * H * D, 1), k = randv(S * Hkv * D, 2), v = randv(S * Hkv * D, 3);
  std::vector<float> out(q.size()), lse(H * S);
  be.attention_forward(Tensor(q.data(), {1, S, H, D}), Tensor(k.data(), {1, S, Hkv, D}),
                       Tensor(v.data(), {1, S, Hkv, D}), Tensor(out.data(), {1, S, H, D}),
                       Tensor(lse.data(), {1, H, S}), AttentionParams{});
  double worst = 0.0;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < S; ++i) {
      std::vector<double> p(static_cast<size_t>(i + 1));
      double mx = -1e300, sum = 0.0;
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0.0;
        for (int64_t c = 0; c < D; ++c) s += double(q[(i * H + h) * D + c]) * k[(j * Hkv + h / G) * D + c];
        p[j] = s / std::sqrt(double(D));
        mx = std::max(mx, p[j]);
      }
      for (auto& x : p) sum += (x = std::exp(x - mx));
      for (int64_t c = 0; c < D; ++c) {
        double o = 0.0;
        for (int64_t j = 0; j <= i; ++j) o += p[j] / sum * v[(j * Hkv + h / G) * D + c];
        worst = std::max(worst, std::abs(o - out[(i * H + h) * D + c]));
      }
    }
  std::printf("attention check (S=%ld, naive double): max |error| %.2e\n", long(S), worst);
  return worst < 1e-4;
}

void bench_linear(Backend& be, int64_t T, int64_t in, int64_t out) {
  auto x = randv(T * in, 4), w = randv(out * in, 5), dy = randv(T * out, 6);
  std::vector<float> y(T * out), dx(T * in), dw(out * in, 0.0f);
  Tensor tx(x.data(), {T, in}), tw(w.data(), {out, in}), ty(y.data(), {T, out}), tdy(dy.data(), {T, out}),
      tdx(dx.data(), {T, in}), tdw(dw.data(), {out, in});
  const double f = time_it([&] { be.linear_forward(tx, tw, nullptr, ty); });
  const double b = time_it([&] { be.linear_backward(tdy, tx, tw, tdx, &tdw, nullptr, false); });
  const double flops = 2.0 * T * in * out;
  std::printf("linear  T=%-6ld %4ld -> %-4ld  fwd %7.2f ms %6.1f GFLOP/s   bwd %7.2f ms %6.1f GFLOP/s\n",
              long(T), long(in), long(out), f * 1e3, flops / f * 1e-9, b * 1e3, 2 * flops / b * 1e-9);
}

void bench_attention(Backend& be, int64_t S, int64_t H, int64_t Hkv, int64_t D, int64_t window) {
  const int64_t B = 1;
  auto q = randv(B * S * H * D, 7), k = randv(B * S * Hkv * D, 8), v = randv(B * S * Hkv * D, 9),
       dout = randv(B * S * H * D, 10);
  std::vector<float> out(q.size()), lse(B * H * S), dq(q.size()), dk(k.size()), dv(v.size());
  const Shape qs{B, S, H, D}, ks{B, S, Hkv, D};
  Tensor tq(q.data(), qs), tk(k.data(), ks), tv(v.data(), ks), to(out.data(), qs), tl(lse.data(), {B, H, S}),
      tdo(dout.data(), qs), tdq(dq.data(), qs), tdk(dk.data(), ks), tdv(dv.data(), ks);
  AttentionParams p;
  p.sliding_window = window;
  const double f = time_it([&] { be.attention_forward(tq, tk, tv, to, tl, p); });
  const double b = time_it([&] { be.attention_backward(tdo, tq, tk, tv, to, tl, tdq, tdk, tdv, p); });
  // visible (query, key) pairs: S(S+1)/2 causal, fewer with a window
  double pairs = 0.0;
  for (int64_t i = 0; i < S; ++i) pairs += double(std::min<int64_t>(i + 1, window > 0 ? window : S));
  const double fwd = 4.0 * B * H * pairs * D, bwd = 10.0 * B * H * pairs * D;
  std::printf(
      "attn    S=%-6ld H=%ld Hkv=%ld D=%ld win=%-5ld fwd %8.2f ms %6.1f GFLOP/s   bwd %8.2f ms %6.1f "
      "GFLOP/s\n",
      long(S), long(H), long(Hkv), long(D), long(window), f * 1e3, fwd / f * 1e-9, b * 1e3, bwd / b * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> seqs;
  for (int i = 1; i < argc; ++i) seqs.push_back(std::atoll(argv[i]));
  if (seqs.empty()) seqs = {1024, 4096};
  auto be = make_cpu_backend();
  std::printf("threads: %d\n", omp_get_max_threads());
  if (!check_attention(*be)) {
    std::printf("attention check FAILED: not timing a wrong kernel\n");
    return 1;
  }
  for (int64_t S : seqs) {
    bench_linear(*be, S, 768, 768);
    bench_linear(*be, S, 768, 2048);
    bench_attention(*be, S, 12, 4, 64, 0);
  }
  bench_attention(*be, 4096, 12, 4, 128, 0);
  bench_attention(*be, 4096, 12, 4, 64, 1024);
  return 0;
}
