// Elementwise ops and reductions on fp32 CPU tensors (copy converts dtypes).
#include <cstring>

#include "miniseq/backend/cpu/cpu_backend.h"

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

double CpuBackend::sum_squares(const Tensor& x) {
  const float* p = x.f32();
  const int64_t n = x.numel();
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(p[i]) * p[i];
  return s;
}

}  // namespace miniseq
