// A model.safetensors file: header and layout validation.
#include "fuzz_common.h"
#include "miniseq/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static miniseq::fuzz::InputFile file;
  return miniseq::fuzz::expect_user_error_only([&] {
    miniseq::SafetensorsFile f(file.write(data, size));
    for (const auto& t : f.tensors()) (void)t.numel();
  });
}
