// The CPU backend's bf16 GEMM (backend/cpu/gemm.h) against sgemm on pre-rounded inputs, for every
// transposition case the backend uses (y = x·Wᵀ: N,T; dx = dy·W: N,N; dW = dyᵀ·x: T,N; and T,T), odd sizes,
// sizes that span several tiles in each dimension, padded leading dimensions, beta 0 / 1 and a general alpha,
// beta; both implementations (the oneDNN one only when compiled in). Then the linear op in bf16 mode against
// the fp32 op on pre-rounded inputs.
//
// Tolerance: both sides multiply the same bf16 values, whose products are exact in fp32 (8 + 8 significand
// bits ≤ 24), and sum them in fp32 in different orders. Each sum of K terms errs by at most (K +
// 2)·u·Σ|terms| (u = 2^-24, alpha and beta add a rounding each), so two of them differ by at most 2(K +
// 2)·u·(|alpha|·Σ_k|a_ik·b_kj| + |beta·c_ij|). That worst case is what we allow: tight enough that skipping
// the rounding of either input (relative change up to 2^-9 per term) shows, which the last check of each case
// confirms.
#include <gtest/gtest.h>

#include <cblas.h>

#include <cmath>
#include <string>
#include <vector>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/backend/cpu/gemm.h"
#include "miniseq/core/dtype.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;

namespace {

struct Case {
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
};

std::string name(const Case& c) {
  return std::string(c.ta ? "T" : "N") + (c.tb ? "T" : "N") + " M " + std::to_string(c.M) + " N " +
         std::to_string(c.N) + " K " + std::to_string(c.K) + " alpha " + std::to_string(c.alpha) + " beta " +
         std::to_string(c.beta);
}

std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = cpu::round_to_bf16(x);
  return v;
}

void check_case(cpu::Bf16Gemm path, const Case& c) {
  SCOPED_TRACE(name(c));
  // Stored shapes: A [M, K] or [K, M]; B [K, N] or [N, K]; each row padded by 3 (leading dimension > width).
  const int64_t a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
  const int64_t b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
  const int64_t lda = a_cols + 3, ldb = b_cols + 3, ldc = c.N + 3;
  const auto A = random_floats(static_cast<size_t>(a_rows * lda), 11);
  const auto B = random_floats(static_cast<size_t>(b_rows * ldb), 12);
  const auto C0 = random_floats(static_cast<size_t>(c.M * ldc), 13);
  const auto Ar = rounded(A), Br = rounded(B);

  std::vector<float> got = C0, want = C0, plain = C0;
  cpu::gemm_bf16(path, c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, got.data(),
                 ldc);
  const auto ta = c.ta ? CblasTrans : CblasNoTrans, tb = c.tb ? CblasTrans : CblasNoTrans;
  const int M = static_cast<int>(c.M), N = static_cast<int>(c.N), K = static_cast<int>(c.K);
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, c.alpha, Ar.data(), static_cast<int>(lda), Br.data(),
              static_cast<int>(ldb), c.beta, want.data(), static_cast<int>(ldc));
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, c.alpha, A.data(), static_cast<int>(lda), B.data(),
              static_cast<int>(ldb), c.beta, plain.data(), static_cast<int>(ldc));

  int64_t bad = 0, rounding_visible = 0;
  double worst = 0;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double a = c.ta ? Ar[k * lda + i] : Ar[i * lda + k],
                     b = c.tb ? Br[j * ldb + k] : Br[k * ldb + j];
        mag += std::abs(a * b);
      }
      mag = std::abs(c.alpha) * mag + std::abs(c.beta * C0[i * ldc + j]);
      const double tol = 2.0 * static_cast<double>(c.K + 2) * kU * mag;
      const double err = std::abs(static_cast<double>(got[i * ldc + j]) - want[i * ldc + j]);
      worst = std::max(worst, err / (tol > 0 ? tol : 1));
      bad += err > tol;
      rounding_visible +=
          std::abs(static_cast<double>(got[i * ldc + j]) - plain[i * ldc + j]) > fp32_tol(c.K, mag);
    }
  EXPECT_EQ(bad, 0) << "worst error / tolerance " << worst;
  // The padding between rows is never written.
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = c.N; j < ldc; ++j) {
      ASSERT_EQ(got[i * ldc + j], C0[i * ldc + j]) << "padding written";
    }
  }
  // The inputs were rounded: somewhere the fp32 product differs by more than fp32 summation noise (the
  // random-walk bound fp32_tol; the worst-case bound above grows like K and hides rounding for K in the
  // 1000s).
  if (c.K >= 4 && c.alpha != 0) {
    EXPECT_GT(rounding_visible, 0) << "the result looks like an fp32 product";
  }
}

std::vector<Case> cases() {
  std::vector<Case> v;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      v.push_back({ta, tb, 1, 1, 1, 1.0f, 0.0f});
      v.push_back({ta, tb, 2, 5, 3, 1.0f, 1.0f});
      v.push_back({ta, tb, 37, 29, 53, 1.0f, 0.0f});
      v.push_back({ta, tb, 65, 63, 64, 1.0f, 1.0f});
      v.push_back({ta, tb, 13, 11, 1100, 1.0f, 1.0f});  // three K panels: beta on the first only
      v.push_back({ta, tb, 17, 9, 31, 0.75f, 0.5f});
    }
  // Several row tiles (M > 2048), several column tiles (N > 2048), in the backend's three layouts.
  v.push_back({false, true, 2050, 7, 9, 1.0f, 1.0f});
  v.push_back({false, false, 5, 2051, 3, 1.0f, 0.0f});
  v.push_back({true, false, 3, 2049, 2060, 1.0f, 1.0f});
  return v;
}

}  // namespace

TEST(GemmBf16, RoundToNearestEven) {
  EXPECT_EQ(cpu::round_to_bf16(1.0f), 1.0f);
  EXPECT_EQ(cpu::round_to_bf16(1.0f + 0x1p-8f), 1.0f);                // tie: to the even 1
  EXPECT_EQ(cpu::round_to_bf16(1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f);  // tie: to the even 1 + 2^-6
  EXPECT_EQ(cpu::round_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 1.0f + 0x1p-7f);
  EXPECT_EQ(cpu::round_to_bf16(-3.0f), -3.0f);
  EXPECT_TRUE(std::isnan(cpu::round_to_bf16(NAN)));
  // The same bits as the library's f32_to_bf16 (core/dtype.h) over a sweep of bit patterns, NaNs and infs
  // included.
  for (uint64_t b = 0; b < (1ull << 32); b += 0x10001ull * 7 + 3) {
    const float x = bits_to_f32(static_cast<uint32_t>(b));
    ASSERT_EQ(f32_to_bits(cpu::round_to_bf16(x)), static_cast<uint32_t>(f32_to_bf16(x)) << 16)
        << std::hex << b;
  }
  for (uint32_t b :
       {0x7f800000u, 0xff800000u, 0x7f7fffffu, 0x7fc00001u, 0x7f800001u, 0x00000001u, 0x3f808000u})
    ASSERT_EQ(f32_to_bits(cpu::round_to_bf16(bits_to_f32(b))),
              static_cast<uint32_t>(f32_to_bf16(bits_to_f32(b))) << 16)
        << std::hex << b;
}

TEST(GemmBf16, FallbackEqualsSgemmOnRoundedInputs) {
  for (const Case& c : cases()) check_case(cpu::Bf16Gemm::Fallback, c);
}

TEST(GemmBf16, OneDnnEqualsSgemmOnRoundedInputs) {
  if (!cpu::onednn_compiled()) GTEST_SKIP() << "built without oneDNN";
  for (const Case& c : cases()) check_case(cpu::Bf16Gemm::OneDnn, c);
}

TEST(GemmBf16, PathIsDescribed) {
  const std::string d = cpu::bf16_gemm_description();
  EXPECT_NE(d.find(cpu::bf16_gemm_path() == cpu::Bf16Gemm::OneDnn ? "oneDNN" : "fallback"), std::string::npos)
      << d;
}

// The linear op in bf16 mode equals the fp32 op on pre-rounded x, W, dy (same tolerance argument as above;
// fp32_tol's random-walk bound is used for brevity, with the magnitude Σ|terms| ≤ n). T = 1, 2 take the same
// rounding as larger T in bf16 mode (no fp32 matrix-vector shortcut).
TEST(GemmBf16, LinearOpInBf16Mode) {
  CpuBackend bf(cpu::Math::BF16), fp;
  for (int64_t T : {1, 2, 7, 130}) {
    const int64_t in = 40, out = 33;
    SCOPED_TRACE("T " + std::to_string(T));
    auto x = random_floats(T * in, 1), w = random_floats(out * in, 2), b = random_floats(out, 3),
         dy = random_floats(T * out, 4);
    auto xr = rounded(x), wr = rounded(w), dyr = rounded(dy);
    std::vector<float> y(T * out), yr(T * out), dx(T * in), dxr(T * in), dw(out * in, 0.5f),
        dwr(out * in, 0.5f);
    Tensor tb = tensor_of(b, {out}), tdw = tensor_of(dw, {out, in}), tdwr = tensor_of(dwr, {out, in});
    bf.linear_forward(tensor_of(x, {T, in}), tensor_of(w, {out, in}), &tb, tensor_of(y, {T, out}));
    fp.linear_forward(tensor_of(xr, {T, in}), tensor_of(wr, {out, in}), &tb, tensor_of(yr, {T, out}));
    bf.linear_backward(tensor_of(dy, {T, out}), tensor_of(x, {T, in}), tensor_of(w, {out, in}),
                       tensor_of(dx, {T, in}), &tdw, nullptr, false);
    fp.linear_backward(tensor_of(dyr, {T, out}), tensor_of(xr, {T, in}), tensor_of(wr, {out, in}),
                       tensor_of(dxr, {T, in}), &tdwr, nullptr, false);
    EXPECT_TRUE(all_close(y, to_double(yr), fp32_tol(in, in + 1.0))) << "y";
    EXPECT_TRUE(all_close(dx, to_double(dxr), fp32_tol(out, out))) << "dx";
    EXPECT_TRUE(all_close(dw, to_double(dwr), fp32_tol(T, T + 0.5))) << "dW";
  }
}
