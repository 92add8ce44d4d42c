#include "miniseq/ops/backend.h"

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
  MS_CHECK(f, "the ", device_name(device), " backend is not available in this build of miniseq",
           device == Device::CUDA ? " (rebuild on a machine with the CUDA toolkit: make MINISEQ_CUDA=ON)" : "");
  return f();
}

}  // namespace miniseq
