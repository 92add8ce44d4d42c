// Every CUDA op against the CPU backend (the tested fp32 specification) over shapes that leave tile
// remainders (attention tiles of 64 queries / 64 keys / 32-query inner tiles, 256-thread blocks, odd GEMM
// sizes), plus the device mask against AttentionMask, and bitwise repeatability of the reductions. Runs only
// on a GPU machine (label `cuda`, scripts/gpu-check.sh).
//
// Inputs are rounded to bf16 first and the CPU runs on those exact values, so a difference is the CUDA op's
// own error. Tolerances (u = 2^-8, the unit roundoff of bf16's 8 significant bits; docs/cuda.md derives
// them):
//  - one bf16 rounding of an fp32 result y: |err| <= u·|y|; ops whose output is one such rounding of an fp32
//    computation (linear, swiglu, rope, embedding, residual add) get max-abs tol k·u·max|y|, k = 1 + a margin
//    for fp32 noise and for intermediates HF's bf16 semantics round (RMSNorm: n = bf16(x·r) then bf16(w·n): k
//    = 2).
//  - fp32 outputs (rstd, lse, dw, db, dtable, losses) of fp32 sums of bf16-exact inputs: fp32_tol
//  (op_check.h).
//  - attention: P is rounded to bf16 before P·V (relative u per weight), out is rounded once more: |err| <=
//    2u·max|v|. The backward rounds P, dS (and dq/dk/dv) to bf16 and dS is a difference (dP − Di) with
//    cancellation: checked in relative L2 norm, <= 4u (each of the ≈3 roundings in the chain contributes ≈
//    u/√3 RMS; a factor ≈ 3 covers the cancellation), plus max-abs <= 16u·max|ref|, which still catches a
//    wrong row.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/backend/cuda/attention_mask_device.h"
#include "miniseq/backend/cuda/cuda_backend.h"
#include "miniseq/model/rope_scaling.h"
#include "miniseq/ops/attention_mask.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;
using cuda::DeviceTensor;

namespace {

constexpr double kUb = 0x1p-8;  // bf16 unit roundoff

std::vector<float> bf16_round(std::vector<float> v) {
  for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

std::unique_ptr<DeviceTensor> dev(const std::vector<float>& host, Shape s, DType t = DType::BF16) {
  auto d = std::make_unique<DeviceTensor>(s, t);
  cuda::upload(*d, Tensor(const_cast<float*>(host.data()), s));
  return d;
}

std::vector<float> host(const Tensor& d) {
  std::vector<float> v(static_cast<size_t>(d.numel()));
  cuda::download(Tensor(v.data(), d.shape), d);
  return v;
}


// Max-abs check against the CPU result, with the observed error printed (gpu-check collects these lines).
::testing::AssertionResult close(const char* what, const std::vector<float>& got,
                                 const std::vector<float>& want, double tol) {
  std::printf(
      "[err] %-28s max-abs %.3e (tol %.3e) rel-L2 %.3e\n", what,
      [&] {
        double m = 0;
        for (size_t i = 0; i < got.size(); ++i) m = std::max(m, std::abs(double(got[i]) - want[i]));
        return m;
      }(),
      tol, rel_l2(got, want));
  return all_close(got, to_double(want), tol);
}

struct Env {
  std::unique_ptr<Backend> cpu = make_cpu_backend();
  std::unique_ptr<Backend> gpu = cuda::make_cuda_backend();
};

}  // namespace

TEST(CudaDevice, IsUsable) {
  const std::string d = cuda::describe_device();
  std::printf("device: %s\n", d.c_str());
  ASSERT_EQ(d.find("no CUDA device"), std::string::npos) << d;
}

TEST(CudaAttentionMask, MirrorsAttentionMask) {
  // S²-Attn groups: none, 1 (no shift), odd, even, one tile, larger than the sequence; every head of H = 1, 3, 4
  // (H / 2 rounded down: heads [H/2, H) shifted). for_head on the device mask mirrors for_head on AttentionMask.
  for (bool causal : {true, false})
    for (int64_t window : {0, 1, 3, 64, 65})
      for (int64_t q_offset : {0, 17})  // 17: decoding, query row i is key position i + 17
        for (int64_t group : {0, 1, 7, 10, 64, 200})
          for (int64_t H : {1, 3, 4})
            for (int64_t h = 0; h < H; ++h) {
              if (group == 0 && h > 0) break;  // without groups every head has the same mask
              SCOPED_TRACE(testing::Message() << "causal " << causal << " window " << window << " q_offset "
                                              << q_offset << " group " << group << " head " << h << "/" << H);
              const AttentionMask base{130, causal, window, q_offset, group};
              const AttentionMask m = base.for_head(h, H);
              const int64_t nq = 130 - q_offset;
              const auto dm = cuda::attn::DeviceMask::from(m, nq);
              const auto dm_h = cuda::attn::DeviceMask::from(base, nq).for_head(h, H);
              ASSERT_EQ(dm.group, m.group);
              ASSERT_EQ(dm.shift, m.shift);
              ASSERT_EQ(dm_h.shift, m.shift);
              for (int64_t p = 0; p < 130; ++p) {
                ASSERT_EQ(dm.group_start(p), m.group_start(p)) << p;
                ASSERT_EQ(dm.group_end(p), m.group_end(p)) << p;
              }
              for (int64_t i = 0; i < nq; ++i) {
                ASSERT_EQ(dm.first_key(i), m.first_key(i));
                ASSERT_EQ(dm.last_key(i), m.last_key(i));
                ASSERT_EQ(dm_h.first_key(i), m.first_key(i));
                ASSERT_EQ(dm_h.last_key(i), m.last_key(i));
                for (int64_t j = 0; j < 130; ++j) ASSERT_EQ(dm.allowed(i, j), m.allowed(i, j)) << i << "," << j;
              }
              for (int64_t i0 = 0; i0 < nq; i0 += 7)
                for (int64_t j0 = 0; j0 < 130; j0 += 11) {
                  const int64_t i1 = std::min<int64_t>(i0 + 7, nq), j1 = std::min<int64_t>(j0 + 11, 130);
                  ASSERT_EQ(dm.tile_any(i0, i1, j0, j1), m.tile_any(i0, i1, j0, j1));
                  ASSERT_EQ(dm.tile_all(i0, i1, j0, j1), m.tile_all(i0, i1, j0, j1));
                }
            }
}

TEST(CudaOps, Linear) {
  Env e;
  struct C {
    int64_t T, in, out;
    bool bias;
  };
  for (const C c : {C{1, 16, 8, false}, C{17, 33, 17, true}, C{130, 64, 56, false}, C{257, 256, 384, true}}) {
    SCOPED_TRACE(testing::Message() << "T" << c.T << " in" << c.in << " out" << c.out);
    auto x = bf16_round(random_floats(static_cast<size_t>(c.T * c.in), 1)),
         w = bf16_round(random_floats(static_cast<size_t>(c.out * c.in), 2));
    auto b = bf16_round(random_floats(static_cast<size_t>(c.out), 3)),
         dy = bf16_round(random_floats(static_cast<size_t>(c.T * c.out), 4));
    auto dx0 = bf16_round(random_floats(static_cast<size_t>(c.T * c.in), 5));
    std::vector<float> y(static_cast<size_t>(c.T * c.out)),
        dx = dx0, dw(static_cast<size_t>(c.out * c.in), 0.5f), db(static_cast<size_t>(c.out), 0.25f);
    const Shape xs{c.T, c.in}, ws{c.out, c.in}, ys{c.T, c.out}, bs{c.out};
    Tensor tb = tensor_of(b, bs), tdw = tensor_of(dw, ws), tdb = tensor_of(db, bs);
    e.cpu->linear_forward(tensor_of(x, xs), tensor_of(w, ws), c.bias ? &tb : nullptr, tensor_of(y, ys));
    e.cpu->linear_backward(tensor_of(dy, ys), tensor_of(x, xs), tensor_of(w, ws), tensor_of(dx, xs), &tdw,
                           c.bias ? &tdb : nullptr, /*dx_accum=*/true);
    auto gx = dev(x, xs), gw = dev(w, ws), gb = dev(b, bs), gy = dev(y, ys), gdy = dev(dy, ys),
         gdx = dev(dx0, xs);
    auto gdw = dev(std::vector<float>(dw.size(), 0.5f), ws, DType::F32);
    auto gdb = dev(std::vector<float>(db.size(), 0.25f), bs, DType::F32);
    e.gpu->linear_forward(*gx, *gw, c.bias ? &gb->tensor() : nullptr, *gy);
    e.gpu->linear_backward(*gdy, *gx, *gw, *gdx, &gdw->tensor(), c.bias ? &gdb->tensor() : nullptr, true);
    EXPECT_TRUE(close("linear y", host(*gy), y, 1.05 * kUb * max_abs(y) + fp32_tol(c.in, c.in)));
    EXPECT_TRUE(
        close("linear dx (accum)", host(*gdx), dx, 2.05 * kUb * max_abs(dx) + fp32_tol(c.out, c.out)));
    EXPECT_TRUE(close("linear dW", host(*gdw), dw, fp32_tol(c.T, double(c.T))));
    if (c.bias) {
      EXPECT_TRUE(close("linear db", host(*gdb), db, fp32_tol(c.T, double(c.T))));
    }
  }
}

// The LoRA linear (ops/backend.h LoraBranch) against the CPU's fp32 result on the same bf16 inputs. The GPU
// rounds the branch's intermediates s·x·Aᵀ and s·dy·B to bf16 (activation dtype) and every output once, so
// each result is within a few bf16 roundings of its magnitude: 4·u_bf16·max|result| (a wrong term or
// transpose is off by O(1)).
TEST(CudaOps, LoraLinear) {
  Env e;
  struct C {
    int64_t T, in, out, r;
    bool bias;
  };
  for (const C c : {C{1, 16, 8, 8, false}, C{17, 64, 48, 8, true}, C{257, 256, 128, 16, false}}) {
    SCOPED_TRACE(testing::Message() << "T" << c.T << " in" << c.in << " out" << c.out << " r" << c.r);
    auto x = bf16_round(random_floats(static_cast<size_t>(c.T * c.in), 1)),
         w = bf16_round(random_floats(static_cast<size_t>(c.out * c.in), 2)),
         b = bf16_round(random_floats(static_cast<size_t>(c.out), 3)),
         dy = bf16_round(random_floats(static_cast<size_t>(c.T * c.out), 4)),
         a = bf16_round(random_floats(static_cast<size_t>(c.r * c.in), 5)),
         bl = bf16_round(random_floats(static_cast<size_t>(c.out * c.r), 6));
    const Shape xs{c.T, c.in}, ws{c.out, c.in}, ys{c.T, c.out}, bs{c.out}, as{c.r, c.in}, bls{c.out, c.r},
        us{c.T, c.r};
    std::vector<float> y(static_cast<size_t>(c.T * c.out)), dx(static_cast<size_t>(c.T * c.in), 0.0f),
        da(a.size(), 0.5f), dbl(bl.size(), 0.5f), xa(static_cast<size_t>(c.T * c.r)), dxa(xa.size());
    Tensor tb = tensor_of(b, bs), ta = tensor_of(a, as), tbl = tensor_of(bl, bls), tda = tensor_of(da, as),
           tdbl = tensor_of(dbl, bls);
    LoraBranch l;
    l.a = &ta, l.b = &tbl, l.scale = 2.0f, l.xa = tensor_of(xa, us), l.dxa = tensor_of(dxa, us), l.da = &tda,
    l.db = &tdbl;
    e.cpu->lora_linear_forward(tensor_of(x, xs), tensor_of(w, ws), c.bias ? &tb : nullptr, l,
                               tensor_of(y, ys));
    e.cpu->lora_linear_backward(tensor_of(dy, ys), tensor_of(x, xs), tensor_of(w, ws), tensor_of(dx, xs),
                                nullptr, nullptr, l, /*dx_accum=*/false);
    auto gx = dev(x, xs), gw = dev(w, ws), gb = dev(b, bs), gy = dev(y, ys), gdy = dev(dy, ys),
         gdx = dev(dx, xs);
    auto ga = dev(a, as), gbl = dev(bl, bls), gxa = dev(xa, us), gdxa = dev(dxa, us);
    auto gda = dev(std::vector<float>(da.size(), 0.5f), as, DType::F32),
         gdbl = dev(std::vector<float>(dbl.size(), 0.5f), bls, DType::F32);
    LoraBranch gl;
    gl.a = &ga->tensor(), gl.b = &gbl->tensor(), gl.scale = 2.0f, gl.xa = *gxa, gl.dxa = *gdxa,
    gl.da = &gda->tensor(), gl.db = &gdbl->tensor();
    EXPECT_EQ(e.gpu->lora_workspace_elems(c.r, c.out), 0);
    e.gpu->lora_linear_forward(*gx, *gw, c.bias ? &gb->tensor() : nullptr, gl, *gy);
    e.gpu->lora_linear_backward(*gdy, *gx, *gw, *gdx, nullptr, nullptr, gl, false);
    EXPECT_TRUE(close("lora y", host(*gy), y, 4 * kUb * max_abs(y)));
    EXPECT_TRUE(close("lora dx", host(*gdx), dx, 4 * kUb * max_abs(dx)));
    EXPECT_TRUE(close("lora dA", host(*gda), da, 4 * kUb * max_abs(da)));
    EXPECT_TRUE(close("lora dB", host(*gdbl), dbl, 4 * kUb * max_abs(dbl)));
  }
}

TEST(CudaOps, RmsNorm) {
  Env e;
  for (const auto& [T, d] : {std::pair<int64_t, int64_t>{1, 64}, {7, 100}, {600, 256}, {33, 4096}}) {
    SCOPED_TRACE(testing::Message() << "T" << T << " d" << d);
    auto x = bf16_round(random_floats(static_cast<size_t>(T * d), 1, -2, 2)),
         w = bf16_round(random_floats(static_cast<size_t>(d), 2, 0.5, 1.5));
    auto dy = bf16_round(random_floats(static_cast<size_t>(T * d), 3)),
         dx0 = bf16_round(random_floats(static_cast<size_t>(T * d), 4));
    std::vector<float> y(x.size()), r(static_cast<size_t>(T)), dx = dx0, dw(static_cast<size_t>(d), 0.5f);
    const Shape xs{T, d}, ws{d};
    const Tensor dwt = tensor_of(dw, ws);
    e.cpu->rmsnorm_forward(tensor_of(x, xs), tensor_of(w, ws), 1e-5f, tensor_of(y, xs),
                           tensor_of(r, Shape{T}));
    e.cpu->rmsnorm_backward(tensor_of(dy, xs), tensor_of(x, xs), tensor_of(w, ws), tensor_of(r, Shape{T}),
                            tensor_of(dx, xs), &dwt, /*dx_accum=*/true);
    auto gx = dev(x, xs), gw = dev(w, ws), gy = dev(y, xs), gr = dev(r, Shape{T}, DType::F32);
    auto gdy = dev(dy, xs), gdx = dev(dx0, xs),
         gdw = dev(std::vector<float>(static_cast<size_t>(d), 0.5f), ws, DType::F32);
    e.gpu->rmsnorm_forward(*gx, *gw, 1e-5f, *gy, *gr);
    e.gpu->rmsnorm_backward(*gdy, *gx, *gw, *gr, *gdx, &gdw->tensor(), true);
    EXPECT_TRUE(close("rmsnorm y", host(*gy), y, 2.05 * kUb * max_abs(y)));
    EXPECT_TRUE(close("rmsnorm rstd", host(*gr), r, fp32_tol(d, max_abs(r))));
    // dx = r·g·w − k·x: two terms of size ~|dy|·r·|w| each, one rounding of the (accumulated) sum.
    EXPECT_TRUE(close("rmsnorm dx (accum)", host(*gdx), dx,
                      2.05 * kUb * max_abs(dx) + fp32_tol(d, 4.0 * max_abs(r))));
    EXPECT_TRUE(close("rmsnorm dw", host(*gdw), dw, fp32_tol(T, double(T) * 2.0 * max_abs(r))));
  }
}

TEST(CudaOps, RopeSwigluEmbeddingElementwise) {
  Env e;
  // RoPE, Llama-3-like theta and a linear factor, positions with an offset.
  for (const auto& [S, D] : {std::pair<int64_t, int64_t>{1, 16}, {67, 128}, {300, 64}}) {
    const int64_t B = 2, Hx = 3;
    auto x = bf16_round(random_floats(static_cast<size_t>(B * S * Hx * D), 1));
    std::vector<int32_t> pos(static_cast<size_t>(S));
    for (int64_t s = 0; s < S; ++s) pos[static_cast<size_t>(s)] = int32_t(s + 5);
    RopeParams p = rope_params_plain(500000.0, D, 2.0);
    p.attention_scaling = S == 67 ? 1.0693147f : 1.0f;  // yarn's cos/sin scale (factor 2) on one shape
    const Shape xs{B, S, Hx, D};
    auto gx = dev(x, xs);
    std::vector<float> y = x;
    e.cpu->rope_forward(tensor_of(y, xs), pos.data(), p);
    e.gpu->rope_forward(*gx, pos.data(), p);
    EXPECT_TRUE(close("rope forward", host(*gx), y, 2.05 * kUb * max_abs(x)));
    auto y_gpu =
        host(*gx);  // backward of the GPU's own output: the inverse rotation gives x back within 2 roundings
    e.gpu->rope_backward(*gx, pos.data(), p);
    std::vector<float> back = bf16_round(y_gpu);
    e.cpu->rope_backward(tensor_of(back, xs), pos.data(), p);
    EXPECT_TRUE(close("rope backward", host(*gx), back, 2.05 * kUb * max_abs(x)));
  }
  // SwiGLU (gradients in place, as the decoder calls it).
  {
    const int64_t n = 3 * 1027;
    auto g = bf16_round(random_floats(static_cast<size_t>(n), 1, -6, 6)),
         u = bf16_round(random_floats(static_cast<size_t>(n), 2));
    auto da = bf16_round(random_floats(static_cast<size_t>(n), 3));
    std::vector<float> a(static_cast<size_t>(n)), dg = g, du = u;
    const Shape s{3, 1027};
    e.cpu->swiglu_forward(tensor_of(g, s), tensor_of(u, s), tensor_of(a, s));
    e.cpu->swiglu_backward(tensor_of(da, s), tensor_of(g, s), tensor_of(u, s), tensor_of(dg, s),
                           tensor_of(du, s));
    auto gg = dev(g, s), gu = dev(u, s), ga = dev(a, s), gda = dev(da, s);
    e.gpu->swiglu_forward(*gg, *gu, *ga);
    e.gpu->swiglu_backward(*gda, *gg, *gu, *gg, *gu);
    EXPECT_TRUE(close("swiglu act", host(*ga), a, 1.1 * kUb * max_abs(a)));
    EXPECT_TRUE(close("swiglu dgate", host(*gg), dg, 1.1 * kUb * max_abs(dg)));
    EXPECT_TRUE(close("swiglu dup", host(*gu), du, 1.1 * kUb * max_abs(du)));
  }
  // Embedding, with repeated ids (the grouped backward sums them) and a V that is not a multiple of anything;
  // backward without and with a padding_idx (id 7: its positions add nothing, its row keeps the prior 0.125),
  // and with every position the padding id (nothing launched).
  for (const int64_t padding_idx : {int64_t{-1}, int64_t{7}, int64_t{40}}) {
    SCOPED_TRACE("padding_idx " + std::to_string(padding_idx));
    const int64_t V = 131, d = 300, T = 517;
    auto table = bf16_round(random_floats(static_cast<size_t>(V * d), 1)),
         dout = bf16_round(random_floats(static_cast<size_t>(T * d), 2));
    auto ids = padding_idx == 40 ? std::vector<int32_t>(static_cast<size_t>(T), 40)
                                 : random_ints(static_cast<size_t>(T), 3, 0, 40);  // many repeats
    std::vector<float> out(static_cast<size_t>(T * d)), dtab(static_cast<size_t>(V * d), 0.125f);
    e.cpu->embedding_forward(ids.data(), tensor_of(table, Shape{V, d}), tensor_of(out, Shape{T, d}));
    e.cpu->embedding_backward(ids.data(), tensor_of(dout, Shape{T, d}), tensor_of(dtab, Shape{V, d}),
                              padding_idx);
    auto gt = dev(table, Shape{V, d}), go = dev(out, Shape{T, d}), gdo = dev(dout, Shape{T, d});
    auto gdt = dev(std::vector<float>(dtab.size(), 0.125f), Shape{V, d}, DType::F32);
    e.gpu->embedding_forward(ids.data(), *gt, *go);
    e.gpu->embedding_backward(ids.data(), *gdo, *gdt, padding_idx);
    EXPECT_TRUE(close("embedding forward", host(*go), out, 0.0));
    const std::vector<float> got = host(*gdt);
    EXPECT_TRUE(close("embedding backward", got, dtab, fp32_tol(T, double(T))));
    if (padding_idx >= 0) {
      for (int64_t c = 0; c < d; ++c) {
        ASSERT_EQ(got[static_cast<size_t>(padding_idx * d + c)], 0.125f);
      }
    }
  }
  // add / scale / copy / fill / sum_squares
  {
    const int64_t n = 100003;
    auto a = bf16_round(random_floats(static_cast<size_t>(n), 1)),
         b = bf16_round(random_floats(static_cast<size_t>(n), 2));
    auto ga = dev(a, Shape{n}), gb = dev(b, Shape{n}), gf = dev(a, Shape{n}, DType::F32);
    e.gpu->add_inplace(*ga, *gb);
    std::vector<float> sum(static_cast<size_t>(n));
    for (size_t i = 0; i < sum.size(); ++i) sum[i] = a[i] + b[i];
    EXPECT_TRUE(close("add_inplace", host(*ga), sum, 1.01 * kUb * max_abs(sum)));
    e.gpu->scale_inplace(*gf, 0.5f);
    std::vector<float> half = a;
    for (float& v : half) v *= 0.5f;
    EXPECT_TRUE(close("scale_inplace", host(*gf), half, 0.0));
    e.gpu->copy(*gb, *gf);  // f32 -> bf16 (exact here: halves of bf16 values)
    EXPECT_TRUE(close("copy f32->bf16", host(*gb), half, 0.0));
    double want = 0;
    for (float v : half) want += double(v) * v;
    const double got = e.gpu->sum_squares(*gf);
    EXPECT_NEAR(got, want, 1e-12 * want);
    EXPECT_EQ(got, e.gpu->sum_squares(*gf)) << "sum_squares is not bitwise repeatable";
    e.gpu->fill_zero(*gf);
    EXPECT_EQ(e.gpu->sum_squares(*gf), 0.0);
  }
}

TEST(CudaOps, CrossEntropy) {
  Env e;
  for (const auto& [C, V] : {std::pair<int64_t, int64_t>{1, 131}, {37, 32000}, {9, 1000}}) {
    SCOPED_TRACE(testing::Message() << "C" << C << " V" << V);
    auto x = bf16_round(random_floats(static_cast<size_t>(C * V), 1, -8, 8));
    auto labels = random_ints(static_cast<size_t>(C), 2, 0, int32_t(V - 1));
    labels[0] = -100;
    if (C > 3) labels[3] = -100;
    const float scale = 1.0f / 29.0f;
    std::vector<float> dl = x;
    const double loss =
        e.cpu->cross_entropy_forward_backward(tensor_of(dl, Shape{C, V}), labels.data(), scale);
    auto gx = dev(x, Shape{C, V});
    const double gloss = e.gpu->cross_entropy_forward_backward(*gx, labels.data(), scale);
    // Per row: m + log Z − x[label] in fp32 pieces (exp of ≤ 2 ulp, Z a sum of V terms): fp32_tol(V, |row
    // loss|).
    EXPECT_NEAR(gloss, loss, double(C) * fp32_tol(V, 20.0) + 1e-9);
    // dlogits: one rounding to bf16 of (p − onehot)·scale.
    EXPECT_TRUE(close("cross-entropy dlogits", host(*gx), dl, 1.1 * kUb * max_abs(dl)));
    auto gx2 = dev(x, Shape{C, V});
    EXPECT_EQ(gloss, e.gpu->cross_entropy_forward_backward(*gx2, labels.data(), scale)) << "not repeatable";
  }
}

// Evaluation's loss-only cross-entropy: same loss as the fused op, argmax hits equal to the CPU's on the same bf16
// logits (ties are exact: both take the first maximum), logits untouched.
TEST(CudaOps, CrossEntropyForwardOnly) {
  Env e;
  for (const auto& [C, V] : {std::pair<int64_t, int64_t>{1, 131}, {37, 32000}, {9, 1000}}) {
    SCOPED_TRACE(testing::Message() << "C" << C << " V" << V);
    auto x = bf16_round(random_floats(static_cast<size_t>(C * V), 5, -8, 8));
    auto labels = random_ints(static_cast<size_t>(C), 6, 0, int32_t(V - 1));
    labels[0] = -100;
    for (int64_t r = 1; r < C; r += 2) {  // make every other label the row's argmax, with a tie after it
      float* row = x.data() + r * V;
      const int64_t a = std::max_element(row, row + V) - row;
      labels[static_cast<size_t>(r)] = static_cast<int32_t>(a);
      if (a + 1 < V) row[a + 1] = row[a];
    }
    const CrossEntropyStats want = e.cpu->cross_entropy_forward(tensor_of(x, Shape{C, V}), labels.data());
    auto gx = dev(x, Shape{C, V});
    const CrossEntropyStats got = e.gpu->cross_entropy_forward(*gx, labels.data());
    EXPECT_NEAR(got.loss_sum, want.loss_sum, double(C) * fp32_tol(V, 20.0) + 1e-9);
    EXPECT_EQ(got.counted, want.counted);
    EXPECT_EQ(got.correct, want.correct);
    EXPECT_GE(want.correct, (C - 1) / 2);
    EXPECT_EQ(host(*gx), x) << "the logits must stay as they are";
  }
}

// KV-cache decoding: the newest Sq queries against Sk cached keys (q_offset = Sk − Sq), against the CPU.
TEST(CudaOps, AttentionWithQueryOffset) {
  Env e;
  struct OffsetCase {
    int64_t Sq, Sk, H, Hkv, D, window;
  };
  for (const OffsetCase& c : {OffsetCase{1, 1, 2, 1, 16, 0}, OffsetCase{1, 130, 4, 2, 64, 0},
                              OffsetCase{5, 77, 4, 1, 128, 0}, OffsetCase{1, 40, 2, 2, 32, 16},
                              OffsetCase{70, 200, 8, 2, 128, 100}}) {
    SCOPED_TRACE(testing::Message() << "Sq" << c.Sq << " Sk" << c.Sk << " H" << c.H << " D" << c.D << " w" << c.window);
    const size_t nq = static_cast<size_t>(c.Sq * c.H * c.D), nk = static_cast<size_t>(c.Sk * c.Hkv * c.D);
    auto q = bf16_round(random_floats(nq, 21)), k = bf16_round(random_floats(nk, 22));
    auto v = bf16_round(random_floats(nk, 23));
    const Shape qs{1, c.Sq, c.H, c.D}, ks{1, c.Sk, c.Hkv, c.D}, ls{1, c.H, c.Sq};
    AttentionParams p;
    p.sliding_window = c.window;
    p.q_offset = c.Sk - c.Sq;
    std::vector<float> out(nq), lse(static_cast<size_t>(c.H * c.Sq));
    e.cpu->attention_forward(tensor_of(q, qs), tensor_of(k, ks), tensor_of(v, ks), tensor_of(out, qs),
                             tensor_of(lse, ls), p);
    auto gq = dev(q, qs), gk = dev(k, ks), gv = dev(v, ks);
    auto go = dev(std::vector<float>(nq), qs), gl = dev(std::vector<float>(lse.size()), ls, DType::F32);
    e.gpu->attention_forward(*gq, *gk, *gv, *go, *gl, p);
    EXPECT_TRUE(close("attention out", host(*go), out, 2.05 * kUb * max_abs(v)));
    EXPECT_TRUE(close("attention lse", host(*gl), lse,
                      4.0 * fp32_tol(c.Sk + c.D, std::sqrt(double(c.D)) * (1.0 + max_abs(lse)))));
  }
}

TEST(CudaOps, AdamW) {
  Env e;
  const int64_t n = 5003;
  auto p = random_floats(static_cast<size_t>(n), 1), g = random_floats(static_cast<size_t>(n), 2),
       m = random_floats(static_cast<size_t>(n), 3, -0.1f, 0.1f);
  auto v = random_floats(static_cast<size_t>(n), 4, 0.0f, 0.01f);
  AdamWParams ap;
  ap.lr = 1e-3, ap.weight_decay = 0.1, ap.step = 3, ap.grad_scale = 0.5f;
  auto gp = dev(p, Shape{n}, DType::F32), gg = dev(g, Shape{n}, DType::F32),
       gm = dev(m, Shape{n}, DType::F32);
  auto gv = dev(v, Shape{n}, DType::F32);
  std::vector<float> cp = p, cm = m, cv = v;
  e.cpu->adamw_step(tensor_of(cp, Shape{n}), tensor_of(g, Shape{n}), tensor_of(cm, Shape{n}),
                    tensor_of(cv, Shape{n}), ap);
  e.gpu->adamw_step(*gp, *gg, *gm, *gv, ap);
  // Same fp32 formula, IEEE sqrt and division on both: only FMA contraction may differ (a few ulp).
  EXPECT_TRUE(close("adamw param (f32)", host(*gp), cp, 4e-7 * max_abs(cp)));
  EXPECT_TRUE(close("adamw m", host(*gm), cm, 4e-7 * max_abs(cm)));
  EXPECT_TRUE(close("adamw v", host(*gv), cv, 4e-7 * max_abs(cv)));
  // bf16 parameter: its fp32 master copy (the optimizer's, in the plan) takes the update, the parameter gets it
  // rounded.
  auto pb = bf16_round(p);
  auto gpb = dev(pb, Shape{n}), gm2 = dev(m, Shape{n}, DType::F32), gv2 = dev(v, Shape{n}, DType::F32);
  auto gmaster = dev(pb, Shape{n}, DType::F32);
  std::vector<float> cpb = pb, cm2 = m, cv2 = v;
  e.cpu->adamw_step(tensor_of(cpb, Shape{n}), tensor_of(g, Shape{n}), tensor_of(cm2, Shape{n}),
                    tensor_of(cv2, Shape{n}), ap);
  const Tensor& tmaster = *gmaster;
  e.gpu->adamw_step(*gpb, *gg, *gm2, *gv2, ap, &tmaster);
  EXPECT_TRUE(close("adamw master (fp32)", host(*gmaster), cpb, 4e-7 * max_abs(cpb)));
  EXPECT_TRUE(close("adamw param (bf16)", host(*gpb), cpb, 1.01 * kUb * max_abs(cpb)));
  // Without the master (--master_weights False) the bf16 parameter takes the update with stochastic rounding, with
  // the same counter-based bits as the CPU's emulation (core/stochastic_rounding.h): equal bits, except where FMA
  // contraction moved the fp32 result across the random threshold (then one bf16 ulp, <= 2^-7 relative, apart).
  {
    CpuBackend sr_cpu;
    sr_cpu.set_precision(DType::BF16, DType::F32);
    AdamWParams sp = ap;
    sp.rounding_stream = 0x5eed;
    auto gps = dev(pb, Shape{n}), gm3 = dev(m, Shape{n}, DType::F32), gv3 = dev(v, Shape{n}, DType::F32);
    std::vector<float> cps = pb, cm3 = m, cv3 = v;
    sr_cpu.adamw_step(tensor_of(cps, Shape{n}), tensor_of(g, Shape{n}), tensor_of(cm3, Shape{n}),
                      tensor_of(cv3, Shape{n}), sp, /*master=*/nullptr);
    e.gpu->adamw_step(*gps, *gg, *gm3, *gv3, sp);
    const std::vector<float> got = host(*gps);
    int64_t same = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float a = got[static_cast<size_t>(i)], b = cps[static_cast<size_t>(i)];
      if (a == b) ++same;
      else EXPECT_LE(std::abs(a - b), 0x1p-7 * std::max(std::abs(a), std::abs(b))) << i;
    }
    EXPECT_GE(same, n * 99 / 100);
  }
  // bf16 moments (memory policy): widened, updated, used in fp32, stored rounded, as on the CPU.
  auto mb = bf16_round(m), vb = bf16_round(v);
  std::vector<uint16_t> cmb(static_cast<size_t>(n)), cvb(static_cast<size_t>(n));
  convert(mb.data(), DType::F32, cmb.data(), DType::BF16, cmb.size());
  convert(vb.data(), DType::F32, cvb.data(), DType::BF16, cvb.size());
  std::vector<float> cp3 = p;
  e.cpu->adamw_step(tensor_of(cp3, Shape{n}), tensor_of(g, Shape{n}), Tensor(cmb.data(), Shape{n}, DType::BF16),
                    Tensor(cvb.data(), Shape{n}, DType::BF16), ap);
  auto gp3 = dev(p, Shape{n}, DType::F32), gmb = dev(mb, Shape{n}), gvb = dev(vb, Shape{n});
  e.gpu->adamw_step(*gp3, *gg, *gmb, *gvb, ap);
  std::vector<float> want_m(static_cast<size_t>(n)), want_v(static_cast<size_t>(n));
  convert(cmb.data(), DType::BF16, want_m.data(), DType::F32, want_m.size());
  convert(cvb.data(), DType::BF16, want_v.data(), DType::F32, want_v.size());
  EXPECT_TRUE(close("adamw param (bf16 moments)", host(*gp3), cp3, 4e-7 * max_abs(cp3)));
  EXPECT_TRUE(close("adamw m (bf16)", host(*gmb), want_m, 1.01 * kUb * max_abs(want_m)));
  EXPECT_TRUE(close("adamw v (bf16)", host(*gvb), want_v, 1.01 * kUb * max_abs(want_v)));
}

namespace {
struct AttnCase {
  int64_t B, S, H, Hkv, D;
  bool causal;
  int64_t window;
  int64_t s2_group = 0;  // S²-Attn group (training, --use_full_attn False)
};
}  // namespace

TEST(CudaOps, Attention) {
  Env e;
  const AttnCase cases[] = {
      {1, 1, 1, 1, 16, true, 0},     {1, 17, 2, 1, 16, true, 0},    {1, 63, 2, 2, 32, true, 0},
      {1, 64, 4, 1, 64, true, 0},    {1, 65, 2, 1, 64, true, 0},    {2, 130, 4, 2, 64, true, 0},
      {1, 129, 6, 2, 32, true, 37},  {2, 100, 2, 1, 16, true, 64},  {1, 200, 3, 3, 96, false, 0},
      {1, 150, 4, 1, 128, true, 65}, {1, 70, 2, 1, 16, true, 1},    {1, 300, 8, 2, 128, true, 100},
      {1, 67, 2, 1, 16, false, 10},  {1, 1000, 4, 1, 128, true, 0},
      // S²-Attn: groups aligned with the 64-row tiles and not; GQA with a kv head serving shifted and unshifted
      // query heads (Hkv = 1; H 6 / Hkv 3: kv head 1 reads heads 2 and 3); odd H (heads 1-2 of 3 shifted); a
      // window smaller than the group; groups of 1 (no shift); a partial last group (S not a multiple of G).
      {1, 256, 4, 2, 64, true, 0, 64},  {2, 300, 4, 1, 32, true, 0, 75},  {1, 200, 6, 3, 16, true, 20, 50},
      {1, 37, 3, 3, 16, true, 0, 9},    {1, 67, 2, 1, 16, true, 0, 1},    {1, 1000, 4, 1, 128, true, 0, 250},
      {1, 333, 8, 2, 64, true, 0, 83},  {2, 130, 4, 1, 96, true, 40, 32},
  };
  for (const AttnCase& c : cases) {
    std::ostringstream nm;
    nm << "B" << c.B << " S" << c.S << " H" << c.H << " Hkv" << c.Hkv << " D" << c.D
       << (c.causal ? " causal" : " full") << " w" << c.window << " s2 " << c.s2_group;
    SCOPED_TRACE(nm.str());
    const size_t nq = static_cast<size_t>(c.B * c.S * c.H * c.D),
                 nk = static_cast<size_t>(c.B * c.S * c.Hkv * c.D);
    auto q = bf16_round(random_floats(nq, 11)), k = bf16_round(random_floats(nk, 12));
    auto v = bf16_round(random_floats(nk, 13)), dout = bf16_round(random_floats(nq, 14));
    const Shape qs{c.B, c.S, c.H, c.D}, ks{c.B, c.S, c.Hkv, c.D}, ls{c.B, c.H, c.S};
    AttentionParams p;
    p.causal = c.causal;
    p.sliding_window = c.window;
    p.s2_group = c.s2_group;
    std::vector<float> out(nq), lse(static_cast<size_t>(c.B * c.H * c.S));
    e.cpu->attention_forward(tensor_of(q, qs), tensor_of(k, ks), tensor_of(v, ks), tensor_of(out, qs),
                             tensor_of(lse, ls), p);
    auto gq = dev(q, qs), gk = dev(k, ks), gv = dev(v, ks), gdo = dev(dout, qs);
    auto go = dev(std::vector<float>(nq), qs), gl = dev(std::vector<float>(lse.size()), ls, DType::F32);
    e.gpu->attention_forward(*gq, *gk, *gv, *go, *gl, p);
    EXPECT_TRUE(close("attention out", host(*go), out, 2.05 * kUb * max_abs(v)));
    EXPECT_TRUE(close("attention lse", host(*gl), lse,
                      4.0 * fp32_tol(c.S + c.D, std::sqrt(double(c.D)) * (1.0 + max_abs(lse)))));
    // Backward from the same forward results on both sides (the GPU's bf16 out and its lse), so Di agrees.
    std::vector<float> gout = host(*go), glse = host(*gl);
    std::vector<float> dq(nq), dk(nk), dv(nk);
    e.cpu->attention_backward(tensor_of(dout, qs), tensor_of(q, qs), tensor_of(k, ks), tensor_of(v, ks),
                              tensor_of(gout, qs), tensor_of(glse, ls), tensor_of(dq, qs), tensor_of(dk, ks),
                              tensor_of(dv, ks), p);
    auto gdq = dev(std::vector<float>(nq, 7.0f), qs), gdk = dev(std::vector<float>(nk, 7.0f), ks);
    auto gdv = dev(std::vector<float>(nk, 7.0f), ks);  // stale values: the op must write every element
    e.gpu->attention_backward(*gdo, *gq, *gk, *gv, *go, *gl, *gdq, *gdk, *gdv, p);
    for (auto [what, got, want] :
         {std::tuple{"attention dq", host(*gdq), dq}, std::tuple{"attention dk", host(*gdk), dk},
          std::tuple{"attention dv", host(*gdv), dv}}) {
      EXPECT_LE(rel_l2(got, want), 4.0 * kUb) << what;
      EXPECT_TRUE(close(what, got, want, 16.0 * kUb * max_abs(want)));
    }
    // Determinism: a second backward gives the same bits.
    auto gdq2 = dev(std::vector<float>(nq), qs), gdk2 = dev(std::vector<float>(nk), ks),
         gdv2 = dev(std::vector<float>(nk), ks);
    e.gpu->attention_backward(*gdo, *gq, *gk, *gv, *go, *gl, *gdq2, *gdk2, *gdv2, p);
    EXPECT_EQ(host(*gdq2), host(*gdq));
    EXPECT_EQ(host(*gdk2), host(*gdk));
    EXPECT_EQ(host(*gdv2), host(*gdv));
  }
}

// The copy stream: an upload, a kernel on the compute stream after wait_copy, a download read on the host
// after sync_copy, and a second upload issued while the kernel may still run, from pinned host memory, bf16
// both sides.
TEST(CudaTransfer, AsyncCopiesOrderedByTickets) {
  Env env;
  Backend& be = *env.gpu;
  constexpr int64_t n = 1 << 20;
  const Shape s{n};
  std::vector<uint16_t> a(n), b(n), out(n);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = f32_to_bf16(static_cast<float>(i % 61));
    b[i] = f32_to_bf16(static_cast<float>(i % 7));
  }
  be.pin_host_memory(a.data(), a.size() * 2);
  be.pin_host_memory(b.data(), b.size() * 2);
  be.pin_host_memory(out.data(), out.size() * 2);
  DeviceTensor x(s, DType::BF16), y(s, DType::BF16);
  const Tensor ha(a.data(), s, DType::BF16, Device::CPU), hb(b.data(), s, DType::BF16, Device::CPU),
      ho(out.data(), s, DType::BF16, Device::CPU);
  be.wait_copy(be.upload_async(x, ha));
  be.scale_inplace(x, 2.0f);  // x = 2a on the compute stream, after the upload (values stay bf16-exact)
  const uint64_t up = be.upload_async(y, hb);  // waits for the work issued so far, then runs beside it
  be.wait_copy(up);
  be.add_inplace(x, y);  // x = 2a + b
  const uint64_t down = be.download_async(ho, x);
  be.sync_copy(down);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(bf16_to_f32(out[i]), 2.0f * static_cast<float>(i % 61) + static_cast<float>(i % 7)) << i;
  be.unpin_host_memory(out.data());
  be.unpin_host_memory(b.data());
  be.unpin_host_memory(a.data());
}
