// model.safetensors.index.json in a model directory that holds no shards.
#include <filesystem>
#include <fstream>

#include "fuzz_common.h"
#include "miniseq/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/miniseq-fuzz-index-XXXXXX";
    if (!mkdtemp(tmpl)) std::abort();
    return std::string(tmpl);
  }();
  {
    std::ofstream out(dir + "/model.safetensors.index.json", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  return miniseq::fuzz::expect_user_error_only([&] { miniseq::SafetensorsModel m(dir); });
}
