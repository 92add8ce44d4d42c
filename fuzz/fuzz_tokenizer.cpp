// tokenizer.json: load, then encode and decode a little text with whatever was loaded.
#include "fuzz_common.h"
#include "miniseq/io/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return miniseq::fuzz::expect_user_error_only([&] {
    const auto t = miniseq::tok::Tokenizer::from_json(std::string(reinterpret_cast<const char*>(data), size),
                                                      "", "tokenizer.json");
    const std::vector<int32_t> ids = t.encode("Hello world, ab a b  123 \xE2\x96\x81x <s>\n\xFF");
    (void)t.decode(ids, /*skip_special_tokens=*/false);
  });
}
