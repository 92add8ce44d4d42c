// Elementwise ops and reductions on fp32 CPU tensors (copy converts dtypes).
#include <cstring>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/ops/copy_columns_check.h"

namespace miniseq {

std::unique_ptr<Backend> make_cpu_backend() {
  return std::make_unique<CpuBackend>();
}

void set_cpu_math(Backend& backend, cpu::Math math) {
  auto* cpu = dynamic_cast<CpuBackend*>(&backend);
  MS_CHECK(cpu != nullptr, "the bf16 CPU math mode applies to the CPU backend only");
  cpu->set_math(math);
}

void CpuBackend::add_inplace(const Tensor& y, const Tensor& x) {
  MS_DASSERT(y.numel() == x.numel());
  float* py = y.f32();
  const float* px = x.f32();
  const int64_t n = y.numel();
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) py[i] += px[i];
}

void CpuBackend::scale_inplace(const Tensor& y, float s) {
  float* py = y.f32();
  const int64_t n = y.numel();
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) py[i] *= s;
}

void CpuBackend::fill_zero(const Tensor& y) {
  std::memset(y.data, 0, y.bytes());
}

void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  MS_DASSERT(dst.numel() == src.numel());
  convert(src.data, src.dtype, dst.data, dst.dtype, static_cast<size_t>(src.numel()));
}

void CpuBackend::copy_columns(const Tensor& dst, int64_t dst_col, const Tensor& src, int64_t src_col,
                              int64_t cols) {
  check_copy_columns(dst, dst_col, src, src_col, cols);
  const size_t es = dtype_size(dst.dtype);
  const int64_t R = dst.size(0), nd = dst.size(1), ns = src.size(1);
  char* d = static_cast<char*>(dst.data);
  const char* s = static_cast<const char*>(src.data);
#pragma omp parallel for schedule(static) if (R * cols > (1 << 15))
  for (int64_t r = 0; r < R; ++r)
    std::memcpy(d + static_cast<size_t>(r * nd + dst_col) * es,
                s + static_cast<size_t>(r * ns + src_col) * es, static_cast<size_t>(cols) * es);
}

double CpuBackend::sum_squares(const Tensor& x) {
  const float* p = x.f32();
  const int64_t n = x.numel();
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(p[i]) * p[i];
  return s;
}

}  // namespace miniseq
