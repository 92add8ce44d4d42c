// Attention: gradient check of the double reference, then the tiled CPU kernel against it over shapes that
// hit every remainder path (S and D around the tile size 64 and the vector width 16, S = 1, GQA, sliding
// windows shorter than S, batch 2, non-causal, S²-Attn groups with kv heads serving shifted and unshifted
// query heads).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>

#include "miniseq/backend/cpu/attention_common.h"
#include "miniseq/ops/attention_mask.h"
#include "miniseq/ops/backend.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;

namespace {

struct Case {
  int64_t B, S, H, Hkv, D;
  bool causal;
  int64_t window;
  int64_t group = 0;  // S²-Attn group size (AttentionParams::s2_group)
};

std::string name(const Case& c) {
  std::ostringstream os;  // (not operator+ on strings: GCC 12 warns falsely with -Wrestrict there)
  os << "B" << c.B << " S" << c.S << " H" << c.H << " Hkv" << c.Hkv << " D" << c.D
     << (c.causal ? " causal" : " full") << " window" << c.window << " group" << c.group;
  return os.str();
}

struct Outputs {
  std::vector<float> out, lse, dq, dk, dv;
};

Outputs run_cpu(const Case& c, std::vector<float>& q, std::vector<float>& k, std::vector<float>& v,
                std::vector<float>& dout) {
  auto be = make_cpu_backend();
  Outputs o;
  o.out.assign(q.size(), NAN);
  o.lse.assign(static_cast<size_t>(c.B * c.H * c.S), NAN);
  o.dq.assign(q.size(), NAN);
  o.dk.assign(k.size(), NAN);
  o.dv.assign(v.size(), NAN);
  const Shape qs{c.B, c.S, c.H, c.D}, ks{c.B, c.S, c.Hkv, c.D};
  AttentionParams p;
  p.causal = c.causal;
  p.sliding_window = c.window;
  p.s2_group = c.group;
  be->attention_forward(tensor_of(q, qs), tensor_of(k, ks), tensor_of(v, ks), tensor_of(o.out, qs),
                        tensor_of(o.lse, Shape{c.B, c.H, c.S}), p);
  be->attention_backward(tensor_of(dout, qs), tensor_of(q, qs), tensor_of(k, ks), tensor_of(v, ks),
                         tensor_of(o.out, qs), tensor_of(o.lse, Shape{c.B, c.H, c.S}), tensor_of(o.dq, qs),
                         tensor_of(o.dk, ks), tensor_of(o.dv, ks), p);
  return o;
}

// Runs f once per CPU attention kernel this machine has (attention.cpp's dispatch: MINISEQ_CPU_ATTENTION), so
// that the AVX-512, AVX2 and OpenBLAS paths are all held to the same bounds.
template <typename F>
void for_each_kernel(F&& f) {
  for (const char* kernel : {"avx512", "avx2", "blas"}) {
    setenv("MINISEQ_CPU_ATTENTION", kernel, 1);
    if (std::string(cpu::attention_kernel_name()) == kernel) {
      SCOPED_TRACE(std::string("kernel ") + kernel);
      f();
    }
  }
  unsetenv("MINISEQ_CPU_ATTENTION");
}

ref::AttnShape shape_of(const Case& c) {
  return ref::AttnShape{c.B, c.S, c.H, c.Hkv, c.D, c.causal, c.window, 0.0, c.group};
}

}  // namespace

TEST(AttentionReference, GradientCheck) {
  for (const Case c :
       {Case{1, 5, 2, 1, 3, true, 0}, Case{2, 6, 4, 2, 2, true, 3}, Case{1, 4, 2, 2, 3, false, 0},
        Case{1, 7, 4, 1, 2, true, 0, 4}, Case{1, 7, 3, 1, 2, true, 2, 3}}) {
    SCOPED_TRACE(name(c));
    const ref::AttnShape a = shape_of(c);
    const size_t nq = static_cast<size_t>(c.B * c.S * c.H * c.D),
                 nk = static_cast<size_t>(c.B * c.S * c.Hkv * c.D);
    const Vec q = to_double(random_floats(nq, 1)), k = to_double(random_floats(nk, 2)),
              v = to_double(random_floats(nk, 3)), r = to_double(random_floats(nq, 4));
    Vec dq, dk, dv;
    ref::attention_backward(r, q, k, v, a, dq, dk, dv);
    auto loss = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
      Vec out, lse;
      ref::attention_forward(qq, kk, vv, a, out, lse);
      return dot(out, r);
    };
    EXPECT_TRUE(grad_check([&](const Vec& x) { return loss(x, k, v); }, q, dq));
    EXPECT_TRUE(grad_check([&](const Vec& x) { return loss(q, x, v); }, k, dk));
    EXPECT_TRUE(grad_check([&](const Vec& x) { return loss(q, k, x); }, v, dv));
  }
}

TEST(AttentionReference, LseIsTheLogOfTheSoftmaxDenominator) {
  // One query, two keys, D = 1, no mask: lse = log(e^{s0} + e^{s1}) with s = q·k/sqrt(1).
  const ref::AttnShape a{1, 2, 1, 1, 1, false, 0};
  Vec out, lse;
  ref::attention_forward({0.5, 1.0}, {2.0, -1.0}, {3.0, 5.0}, a, out, lse);
  EXPECT_NEAR(lse[0], std::log(std::exp(1.0) + std::exp(-0.5)), 1e-15);
  const double p0 = std::exp(1.0) / (std::exp(1.0) + std::exp(-0.5));
  EXPECT_NEAR(out[0], p0 * 3.0 + (1.0 - p0) * 5.0, 1e-15);
}

// Tolerances. Outputs are softmax-weighted sums of S values (|v| <= 1) with weights from D-length dot
// products; the scores carry absolute error ~ u·sqrt(D)·|q||k|·sqrt(D)·scale ≈ u·sqrt(D) that moves each
// weight relatively by the same amount. So out, lse: fp32_tol(S + D, sqrt(D)). Gradients are sums over up to
// G·S query rows (dk, dv) or S keys (dq) of products of such weights with D-length dot products: fp32_tol(G·S
// + D, sqrt(D)·max|grad|).
TEST(AttentionCpu, MatchesReference) {
  const Case cases[] = {
      {1, 1, 1, 1, 1, true, 0},
      {1, 1, 2, 1, 16, true, 0},
      {1, 17, 2, 1, 15, true, 0},
      {1, 63, 2, 2, 17, true, 0},
      {1, 64, 3, 1, 16, true, 0},
      {1, 65, 2, 1, 64, true, 0},
      {2, 130, 4, 2, 64, true, 0},
      {1, 129, 6, 2, 32, true, 37},
      {2, 100, 2, 1, 8, true, 64},
      {1, 200, 3, 3, 17, false, 0},
      {1, 150, 4, 1, 128, true, 65},
      {1, 70, 2, 1, 16, true, 1},
      {2, 90, 2, 2, 33, true, 200},
      {1, 128, 4, 2, 64, true, 63},
      {1, 67, 2, 1, 16, false, 10},
      // S²-Attn: H = 4, Hkv = 2 (each kv head serves one half), H = 4, Hkv = 1 and H = 6, Hkv = 3 (a kv head
      // serves shifted and unshifted heads), odd H (3 and 5: H/2 rounded down), windows smaller and larger
      // than the group, S not a multiple of the group, odd groups, group >= S (shifted heads: two groups, or
      // one), groups spanning several 64 × 128 tiles, batch 2, non-causal.
      {1, 100, 4, 2, 16, true, 0, 32},
      {1, 100, 4, 1, 16, true, 0, 32},
      {1, 300, 4, 1, 16, true, 0, 200},
      {2, 150, 6, 3, 32, true, 0, 48},
      {1, 130, 3, 1, 17, true, 0, 40},
      {1, 77, 5, 1, 8, true, 0, 33},
      {1, 140, 4, 1, 16, true, 10, 64},
      {1, 140, 4, 2, 16, true, 90, 64},
      {1, 100, 4, 1, 16, true, 0, 128},
      {1, 100, 4, 1, 16, true, 0, 256},
      {1, 97, 4, 1, 64, true, 0, 2},
      {1, 260, 4, 1, 16, true, 150, 256},
      {1, 90, 4, 1, 16, false, 0, 32},
      // the packed kernels' blocks: 8 stacked heads (32 query rows each), D = 128 over several key blocks, a
      // query block that ends mid vector
      {1, 100, 8, 1, 16, true, 0},
      {1, 300, 4, 2, 128, true, 0},
      {1, 270, 3, 1, 48, true, 100},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(name(c));
    const size_t nq = static_cast<size_t>(c.B * c.S * c.H * c.D),
                 nk = static_cast<size_t>(c.B * c.S * c.Hkv * c.D);
    auto q = random_floats(nq, 11), k = random_floats(nk, 12), v = random_floats(nk, 13),
         dout = random_floats(nq, 14);
    Vec out, lse, dq, dk, dv;
    const ref::AttnShape a = shape_of(c);
    ref::attention_forward(to_double(q), to_double(k), to_double(v), a, out, lse);
    ref::attention_backward(to_double(dout), to_double(q), to_double(k), to_double(v), a, dq, dk, dv);
    const double sd = std::sqrt(static_cast<double>(c.D));
    const int64_t G = c.H / c.Hkv;
    for_each_kernel([&] {
      const Outputs o = run_cpu(c, q, k, v, dout);
      EXPECT_TRUE(all_close(o.out, out, fp32_tol(c.S + c.D, sd))) << "out";
      EXPECT_TRUE(all_close(o.lse, lse, fp32_tol(c.S + c.D, sd * (1.0 + max_abs(lse))))) << "lse";
      EXPECT_TRUE(all_close(o.dq, dq, fp32_tol(c.S + c.D, sd * std::max(1.0, max_abs(dq))))) << "dq";
      EXPECT_TRUE(all_close(o.dk, dk, fp32_tol(G * c.S + c.D, sd * std::max(1.0, max_abs(dk))))) << "dk";
      EXPECT_TRUE(all_close(o.dv, dv, fp32_tol(G * c.S + c.D, sd * std::max(1.0, max_abs(dv))))) << "dv";
    });
  }
}

// The tolerance is tight enough to see the convention: a window one key longer changes the result measurably.
TEST(AttentionCpu, ToleranceDetectsAnOffByOneWindow) {
  const Case c{1, 96, 2, 1, 16, true, 20};
  const size_t nq = static_cast<size_t>(c.S * c.H * c.D), nk = static_cast<size_t>(c.S * c.Hkv * c.D);
  auto q = random_floats(nq, 21), k = random_floats(nk, 22), v = random_floats(nk, 23),
       dout = random_floats(nq, 24);
  Vec out, lse;
  ref::attention_forward(to_double(q), to_double(k), to_double(v), shape_of(Case{1, 96, 2, 1, 16, true, 21}),
                         out, lse);
  for_each_kernel([&] {
    const Outputs o = run_cpu(c, q, k, v, dout);
    EXPECT_FALSE(all_close(o.out, out, fp32_tol(c.S + c.D, 4.0)));
  });
}

// The kernel's scale parameter overrides 1/sqrt(D).
TEST(AttentionCpu, ExplicitScale) {
  const Case c{1, 33, 2, 1, 8, true, 0};
  const size_t nq = static_cast<size_t>(c.S * c.H * c.D), nk = static_cast<size_t>(c.S * c.Hkv * c.D);
  auto q = random_floats(nq, 31), k = random_floats(nk, 32), v = random_floats(nk, 33);
  std::vector<float> out(nq), lse(static_cast<size_t>(c.H * c.S));
  AttentionParams p;
  p.scale = 0.7f;
  const Shape qs{1, c.S, c.H, c.D}, ks{1, c.S, c.Hkv, c.D};
  ref::AttnShape a = shape_of(c);
  a.scale = 0.7;
  Vec rout, rlse;
  ref::attention_forward(to_double(q), to_double(k), to_double(v), a, rout, rlse);
  for_each_kernel([&] {
    make_cpu_backend()->attention_forward(tensor_of(q, qs), tensor_of(k, ks), tensor_of(v, ks),
                                          tensor_of(out, qs), tensor_of(lse, Shape{1, c.H, c.S}), p);
    EXPECT_TRUE(all_close(out, rout, fp32_tol(c.S + c.D, 3.0)));
  });
}

// The convention itself, pinned to docs/goldens.md (Hugging Face Mistral, transformers 5.24.0): query i sees
// key j iff j <= i and i − j < W. Kernel and reference share AttentionMask, so only this test guards the
// convention.
TEST(AttentionMask, MatchesHuggingFaceMistralConvention) {
  const AttentionMask m{/*seq=*/10, /*causal=*/true, /*window=*/3};
  for (int64_t i = 0; i < 10; ++i)
    for (int64_t j = 0; j < 10; ++j) EXPECT_EQ(m.allowed(i, j), j <= i && i - j < 3) << i << "," << j;
  EXPECT_EQ(m.first_key(5), 3);
  EXPECT_EQ(m.last_key(5), 5);
  const AttentionMask causal{10, true, 0};
  EXPECT_TRUE(causal.allowed(9, 0));
  EXPECT_FALSE(causal.allowed(3, 4));
  const AttentionMask full{10, false, 0};
  EXPECT_TRUE(full.allowed(3, 9));
  // Decoding: query row i is position i + q_offset of the keys.
  const AttentionMask dec{10, true, 3, /*q_offset=*/4};
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 10; ++j)
      EXPECT_EQ(dec.allowed(i, j), j <= i + 4 && i + 4 - j < 3) << i << "," << j;
  // tile classification agrees with the element rule
  for (int64_t i0 = 0; i0 < 10; i0 += 3)
    for (int64_t j0 = 0; j0 < 10; j0 += 4) {
      const int64_t i1 = std::min<int64_t>(i0 + 3, 10), j1 = std::min<int64_t>(j0 + 4, 10);
      bool any = false, all = true;
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) {
          any |= m.allowed(i, j);
          all &= m.allowed(i, j);
        }
      EXPECT_EQ(m.tile_any(i0, i1, j0, j1), any) << i0 << "," << j0;
      EXPECT_EQ(m.tile_all(i0, i1, j0, j1), all) << i0 << "," << j0;
    }
}

// S²-Attn groups against their definition (ops/attention_mask.h): heads h < H/2 attend within [nG, (n+1)G),
// heads h >= H/2 within [0, G/2), [G/2, 3G/2), …; with the causal rule and the window on top. The tile
// classification agrees with the element rule for every head.
TEST(AttentionMask, S2GroupsMatchTheirDefinition) {
  for (const int64_t S : {int64_t{1}, int64_t{10}, int64_t{23}})
    for (const int64_t G : {int64_t{2}, int64_t{3}, int64_t{4}, int64_t{7}, int64_t{16}, int64_t{40}})
      for (const int64_t W : {int64_t{0}, int64_t{3}, int64_t{9}})
        for (const int64_t H : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}}) {
          const AttentionMask base{S, true, W, 0, G};
          for (int64_t h = 0; h < H; ++h) {
            const AttentionMask m = base.for_head(h, H);
            const int64_t shift = h >= H / 2 ? G / 2 : 0;
            auto gid = [&](int64_t p) { return p < shift ? int64_t{-1} : (p - shift) / G; };
            for (int64_t i = 0; i < S; ++i)
              for (int64_t j = 0; j < S; ++j)
                EXPECT_EQ(m.allowed(i, j), j <= i && (W == 0 || i - j < W) && gid(i) == gid(j))
                    << "S" << S << " G" << G << " W" << W << " H" << H << " h" << h << " " << i << "," << j;
            for (int64_t i0 = 0; i0 < S; i0 += 5)
              for (int64_t j0 = 0; j0 < S; j0 += 4) {
                const int64_t i1 = std::min<int64_t>(i0 + 5, S), j1 = std::min<int64_t>(j0 + 4, S);
                bool any = false, all = true;
                for (int64_t i = i0; i < i1; ++i)
                  for (int64_t j = j0; j < j1; ++j) {
                    any |= m.allowed(i, j);
                    all &= m.allowed(i, j);
                  }
                EXPECT_EQ(m.tile_any(i0, i1, j0, j1), any);
                EXPECT_EQ(m.tile_all(i0, i1, j0, j1), all);
              }
          }
        }
}

// KV-cache decoding: the last Sq queries against keys [j0, S) (older keys dropped, as a sliding-window cache
// does) with q_offset = S − Sq − j0 give the rows of full attention, for every query that sees no dropped
// key.
TEST(AttentionForward, QueryOffsetMatchesFullAttention) {
  for (const Case c : {Case{1, 70, 4, 2, 16, true, 0}, Case{1, 70, 4, 2, 16, true, 9},
                       Case{1, 130, 2, 1, 32, true, 64}, Case{1, 33, 4, 4, 16, true, 0}}) {
    const size_t nq = static_cast<size_t>(c.S * c.H * c.D), nk = static_cast<size_t>(c.S * c.Hkv * c.D);
    const auto q = random_floats(nq, 11), k = random_floats(nk, 12), v = random_floats(nk, 13);
    Vec rout, rlse;
    ref::attention_forward(to_double(q), to_double(k), to_double(v), shape_of(c), rout, rlse);
    for (int64_t Sq : {int64_t{1}, int64_t{5}, c.S}) {
      // Keys the last Sq queries still see: from first_key of the first of them (all of them without a
      // window).
      const int64_t j0 = c.window > 0 ? std::max<int64_t>(0, c.S - Sq - c.window + 1) : 0, Sk = c.S - j0;
      std::ostringstream nm;
      nm << name(c) << " Sq" << Sq << " keys from " << j0;
      SCOPED_TRACE(nm.str());
      std::vector<float> qs(q.end() - Sq * c.H * c.D, q.end()), ks(k.begin() + j0 * c.Hkv * c.D, k.end()),
          vs(v.begin() + j0 * c.Hkv * c.D, v.end());
      std::vector<float> out(static_cast<size_t>(Sq * c.H * c.D), NAN),
          lse(static_cast<size_t>(c.H * Sq), NAN);
      AttentionParams p;
      p.sliding_window = c.window;
      p.q_offset = Sk - Sq;
      const Vec want(rout.end() - Sq * c.H * c.D, rout.end());
      for_each_kernel([&] {
        make_cpu_backend()->attention_forward(
            tensor_of(qs, Shape{1, Sq, c.H, c.D}), tensor_of(ks, Shape{1, Sk, c.Hkv, c.D}),
            tensor_of(vs, Shape{1, Sk, c.Hkv, c.D}), tensor_of(out, Shape{1, Sq, c.H, c.D}),
            tensor_of(lse, Shape{1, c.H, Sq}), p);
        EXPECT_TRUE(all_close(out, want, fp32_tol(c.S + c.D, 3.0)));
        for (int64_t h = 0; h < c.H; ++h)
          for (int64_t i = 0; i < Sq; ++i)
            EXPECT_NEAR(lse[static_cast<size_t>(h * Sq + i)],
                        rlse[static_cast<size_t>(h * c.S + c.S - Sq + i)], 1e-5);
      });
    }
  }
}
