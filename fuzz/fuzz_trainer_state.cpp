// trainer_state.json of a checkpoint (step, epoch, data position, seed, log history), as --resume_from_checkpoint
// reads it.
#include "fuzz_common.h"
#include "miniseq/train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return miniseq::fuzz::expect_user_error_only([&] {
    (void)miniseq::parse_trainer_state(std::string(reinterpret_cast<const char*>(data), size), "trainer_state.json");
  });
}
