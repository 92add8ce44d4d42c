// The LoRA linear (ops/backend.h, LoraBranch): y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ and its backward, on the CPU
// backend's fused implementation and on the default implementation composed of the other ops (what a backend
// without its own gets), both against a double reference written here from the definition, with the scale,
// bias, dx accumulation, frozen W (no dW) and r > in.
#include <gtest/gtest.h>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/ops/backend.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;

namespace {

// Row-major double GEMM: C [M, N] = A [M, K] · B [K, N] with A or B transposed in storage.
Vec mm(const Vec& a, bool ta, const Vec& b, bool tb, int64_t M, int64_t N, int64_t K) {
  Vec c(static_cast<size_t>(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += a[static_cast<size_t>(ta ? k * M + i : i * K + k)] *
             b[static_cast<size_t>(tb ? j * K + k : k * N + j)];
      c[static_cast<size_t>(i * N + j)] = s;
    }
  return c;
}

struct Shapes {
  int64_t T, in, out, r;
  float scale;
};

// composed: the base class's implementation (a qualified call skips the override; its op calls still dispatch
// to the CPU backend's ops).
void check(CpuBackend& be, const Shapes& c, bool composed) {
  const int64_t T = c.T, in = c.in, out = c.out, r = c.r;
  SCOPED_TRACE("T=" + std::to_string(T) + " in=" + std::to_string(in) + " out=" + std::to_string(out) +
               " r=" + std::to_string(r));
  auto x = random_floats(T * in, 1), w = random_floats(out * in, 2), bias = random_floats(out, 3),
       a = random_floats(r * in, 4), b = random_floats(out * r, 5), dy = random_floats(T * out, 6);
  std::vector<float> y(T * out), xa(T * r), dxa(T * r), dx(T * in, 0.5f), dw(out * in, 0.25f), db(out, 0.25f),
      da(r * in, 0.25f), dbl(out * r, 0.25f),
      work(static_cast<size_t>(composed ? be.Backend::lora_workspace_elems(r, out) : 0) + 1);
  LoraBranch l;
  const Tensor A = tensor_of(a, {r, in}), B = tensor_of(b, {out, r}), Bias = tensor_of(bias, {out});
  const Tensor DW = tensor_of(dw, {out, in}), DB = tensor_of(db, {out}), DA = tensor_of(da, {r, in}),
               DBL = tensor_of(dbl, {out, r});
  l.a = &A, l.b = &B, l.scale = c.scale;
  l.xa = tensor_of(xa, {T, r}), l.dxa = tensor_of(dxa, {T, r});
  l.work = Tensor(work.data(), {static_cast<int64_t>(work.size()) - 1});
  l.da = &DA, l.db = &DBL;
  auto forward = [&](const Tensor& xx, const Tensor& ww, const Tensor* bb, const Tensor& yy) {
    if (composed)
      be.Backend::lora_linear_forward(xx, ww, bb, l, yy);
    else
      be.lora_linear_forward(xx, ww, bb, l, yy);
  };
  auto backward = [&](const Tensor& ddy, const Tensor& xx, const Tensor& ww, const Tensor& ddx,
                      const Tensor* ddw, const Tensor* ddb, bool accum) {
    if (composed)
      be.Backend::lora_linear_backward(ddy, xx, ww, ddx, ddw, ddb, l, accum);
    else
      be.lora_linear_backward(ddy, xx, ww, ddx, ddw, ddb, l, accum);
  };
  forward(tensor_of(x, {T, in}), tensor_of(w, {out, in}), &Bias, tensor_of(y, {T, out}));
  backward(tensor_of(dy, {T, out}), tensor_of(x, {T, in}), tensor_of(w, {out, in}), tensor_of(dx, {T, in}),
           &DW, &DB, /*dx_accum=*/true);

  const Vec X = to_double(x), W = to_double(w), AA = to_double(a), BB = to_double(b), DY = to_double(dy);
  const double s = c.scale;
  Vec u = mm(X, false, AA, true, T, r, in);  // x·Aᵀ [T, r]
  for (double& v : u) v *= s;
  Vec ry = mm(X, false, W, true, T, out, in);
  const Vec ub = mm(u, false, BB, true, T, out, r);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) ry[t * out + o] += bias[o] + ub[t * out + o];
  Vec g = mm(DY, false, BB, false, T, r, out);  // dy·B [T, r]
  for (double& v : g) v *= s;
  Vec rdx = mm(DY, false, W, false, T, in, out);
  const Vec ga = mm(g, false, AA, false, T, in, r);
  for (size_t i = 0; i < rdx.size(); ++i) rdx[i] += ga[i] + 0.5;
  Vec rdw = mm(DY, true, X, false, out, in, T), rda = mm(g, true, X, false, r, in, T),
      rdb = mm(DY, true, u, false, out, r, T), rdbias(static_cast<size_t>(out), 0.25);
  for (double& v : rdw) v += 0.25;
  for (double& v : rda) v += 0.25;
  for (double& v : rdb) v += 0.25;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) rdbias[o] += DY[t * out + o];
  // Each result is a sum of at most two dot products of ≤ max(in, out, T) + r terms of size ≤ |s| + 1.
  const int64_t n = std::max({in, out, T}) + r;
  const double mag = 2.0 * (1.0 + s);
  EXPECT_TRUE(all_close(y, ry, fp32_tol(n, max_abs(ry) + mag))) << "y";
  EXPECT_TRUE(all_close(dx, rdx, fp32_tol(n, max_abs(rdx) + mag))) << "dx";
  EXPECT_TRUE(all_close(dw, rdw, fp32_tol(n, max_abs(rdw) + mag))) << "dW";
  EXPECT_TRUE(all_close(db, rdbias, fp32_tol(n, max_abs(rdbias) + mag))) << "db";
  EXPECT_TRUE(all_close(da, rda, fp32_tol(n, max_abs(rda) + mag))) << "dA";
  EXPECT_TRUE(all_close(dbl, rdb, fp32_tol(n, max_abs(rdb) + mag))) << "dB";

  // A frozen base (no dW, no db) and no input gradient wanted: the LoRA gradients are the same.
  std::vector<float> da2(r * in, 0.25f), db2(out * r, 0.25f);
  const Tensor DA2 = tensor_of(da2, {r, in}), DB2 = tensor_of(db2, {out, r});
  l.da = &DA2, l.db = &DB2;
  backward(tensor_of(dy, {T, out}), tensor_of(x, {T, in}), tensor_of(w, {out, in}), Tensor(), nullptr,
           nullptr,
           /*dx_accum=*/false);
  EXPECT_EQ(da2, da);
  EXPECT_EQ(db2, dbl);
}

const Shapes kShapes[] = {
    {1, 5, 7, 2, 2.0f}, {37, 64, 32, 8, 2.0f}, {90, 56, 64, 4, 3.0f}, {17, 3, 9, 8, 0.5f}};

}  // namespace

TEST(LoraLinearCpu, MatchesReference) {
  CpuBackend be;
  for (const auto& c : kShapes) check(be, c, /*composed=*/false);
}

TEST(LoraLinearComposed, MatchesReference) {
  CpuBackend be;
  for (const auto& c : kShapes) check(be, c, /*composed=*/true);
}
