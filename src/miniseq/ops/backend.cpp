#include "miniseq/ops/backend.h"
#include "miniseq/ops/copy_columns_check.h"
#include "miniseq/ops/labels.h"

#include <array>

namespace miniseq {

namespace {
std::array<BackendFactory, 2>& factories() {
  static std::array<BackendFactory, 2> f{make_cpu_backend, nullptr};
  return f;
}
}  // namespace

void Backend::set_precision(DType weights, DType grads) {
  MS_CHECK(weights == param_dtype() && grads == grad_dtype(), "the ", device_name(device()),
           " backend keeps ", dtype_name(param_dtype()), " weights and ", dtype_name(grad_dtype()),
           " gradients; it cannot train with ", dtype_name(weights), " weights and ", dtype_name(grads),
           " gradients");
}

void Backend::round_to_precision(const Tensor& t, DType precision) {
  MS_CHECK(precision == DType::F32 || t.dtype == precision, "internal: the ", device_name(device()),
           " backend cannot round ", dtype_name(t.dtype), " values to ", dtype_name(precision));
}

void Backend::copy_columns(const Tensor& dst, int64_t dst_col, const Tensor& src, int64_t src_col,
                           int64_t cols) {
  check_copy_columns(dst, dst_col, src, src_col, cols);
  const size_t es = dtype_size(dst.dtype);
  for (int64_t r = 0; r < dst.size(0); ++r) {
    char* d = static_cast<char*>(dst.data) + static_cast<size_t>(r * dst.size(1) + dst_col) * es;
    char* s = static_cast<char*>(src.data) + static_cast<size_t>(r * src.size(1) + src_col) * es;
    copy(Tensor(d, {cols}, dst.dtype, dst.device), Tensor(s, {cols}, src.dtype, src.device));
  }
}

void register_backend_factory(Device device, BackendFactory factory) {
  factories()[static_cast<size_t>(device)] = factory;
}

std::unique_ptr<Backend> make_backend(Device device) {
  BackendFactory f = factories()[static_cast<size_t>(device)];
  MS_CHECK(
      f, "the ", device_name(device), " backend is not available in this build of miniseq",
      device == Device::CUDA ? " (rebuild on a machine with the CUDA toolkit: make MINISEQ_CUDA=ON)" : "");
  return f();
}

void check_labels(const int32_t* labels, int64_t rows, int64_t vocab) {
  for (int64_t r = 0; r < rows; ++r)
    MS_CHECK(labels[r] == kIgnoreLabel || (labels[r] >= 0 && labels[r] < vocab), "label ", labels[r],
             " at row ", r, " is outside the vocabulary [0, ", vocab,
             ") and is not the ignore index -100: check the data's labels");
}

}  // namespace miniseq
