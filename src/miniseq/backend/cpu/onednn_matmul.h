// The one oneDNN call of the CPU backend (onednn_matmul.cpp), present in every build: without oneDNN
// (MINISEQ_ONEDNN undefined) onednn_available() is false and the matmul is never called.
#pragma once

#include <cstdint>

namespace miniseq::cpu::detail {

bool onednn_available();

// C [M, N] = alpha · op(A) · op(B) + beta · C with packed bf16 operands (bits) and fp32 accumulation into
// fp32 C: A is [M, K], or [K, M] when ta; B is [K, N], or [N, K] when tb; C has leading dimension ldc.
// Primitives are cached per (shape, transposes, ldc, alpha, beta): creating one costs milliseconds.
void onednn_matmul_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                        const uint16_t* B, float beta, float* C, int64_t ldc);

}  // namespace miniseq::cpu::detail
