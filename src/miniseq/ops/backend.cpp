#include "miniseq/ops/backend.h"
#include "miniseq/ops/labels.h"

#include <array>

namespace miniseq {

namespace {
std::array<BackendFactory, 2>& factories() {
  static std::array<BackendFactory, 2> f{make_cpu_backend, nullptr};
  return f;
}
}  // namespace

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
