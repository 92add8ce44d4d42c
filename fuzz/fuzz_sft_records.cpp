// Supervised fine-tuning data (train/sft_dataset.h): a JSON list or JSONL of {"instruction", "input",
// "output"} records, read, turned into LongLoRA's prompts, tokenized (the demo's byte tokenizer) and batched.
#include "fuzz_common.h"
#include "miniseq/train/demo_preset.h"
#include "miniseq/train/sft_dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static miniseq::fuzz::InputFile file;
  static const miniseq::tok::Tokenizer tokenizer = [] {
    auto files = miniseq::demo_tokenizer_files();
    return miniseq::tok::Tokenizer::from_json(files["tokenizer.json"], files["tokenizer_config.json"],
                                              "demo");
  }();
  const std::string& path = file.write(data, size);
  return miniseq::fuzz::expect_user_error_only([&] {
    miniseq::SftTokenization t;
    t.tokenizer = &tokenizer;
    t.eos_token = "</s>";
    t.pad_id = 0;
    t.max_len = 48;
    const miniseq::Dataset d = miniseq::sft_dataset(path, t, 259, nullptr);
    for (int64_t i = 0; i < d.size(); i += 2)
      (void)d.batch(i + 1 < d.size() ? std::vector<int64_t>{i, i + 1} : std::vector<int64_t>{i});
  });
}
