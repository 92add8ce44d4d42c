// config.json: parse, validate, and write back (the trainer saves it with every checkpoint).
#include "fuzz_common.h"
#include "miniseq/io/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return miniseq::fuzz::expect_user_error_only([&] {
    const miniseq::ModelConfig c =
        miniseq::parse_model_config(std::string(reinterpret_cast<const char*>(data), size), "config.json");
    (void)c.to_json().dump();
    (void)c.native_context();
  });
}
