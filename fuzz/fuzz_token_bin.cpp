// A flat token file (LongLoRA's .bin), read as uint16 and as uint32 ids.
#include "fuzz_common.h"
#include "miniseq/eval/token_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static miniseq::fuzz::InputFile file;
  const std::string& path = file.write(data, size);
  for (int width : {2, 4})
    miniseq::fuzz::expect_user_error_only([&] { (void)miniseq::read_token_binary(path, width, 32000); });
  return 0;
}
