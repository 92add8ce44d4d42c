// Subcommands of the `miniseq` program. Each lives in its own file under cli/ and takes the arguments after its
// name; it returns the process exit code and throws miniseq::Error for user errors (printed as one line).
#pragma once

#include <string>
#include <vector>

namespace miniseq::cli {

using Args = std::vector<std::string>;

int cmd_inspect(const Args& args);     // inspect.cpp: architecture, parameter counts, file/config mismatches
int cmd_tiny_model(const Args& args);  // tiny_model.cpp: write a small random model directory (demo, tests)
int cmd_tokenize(const Args& args);    // tokenize.cpp: text lines -> JSON id arrays (and back), HF tokenizer.json
int cmd_train(const Args& args);       // train.cpp: LongLoRA fine-tune.py workflow (train/)
int cmd_sft(const Args& args);         // train.cpp: LongLoRA supervised-fine-tune.py (train/sft_dataset.h)
int cmd_memplan(const Args& args);     // memplan.cpp: planned peak memory of a run, longest length that fits
int cmd_grad(const Args& args);        // grad.cpp: loss and gradients of one batch (checked against PyTorch)
int cmd_eval(const Args& args);        // eval.cpp: perplexity and accuracy of a token stream over sliding windows
int cmd_passkey(const Args& args);     // passkey.cpp: LongLoRA passkey retrieval accuracy per context length
int cmd_generate(const Args& args);    // generate.cpp: greedy / top-p decoding with a KV cache
int cmd_merge(const Args& args);       // merge.cpp: a PEFT adapter merged into its base model (LongLoRA)

struct Command {
  const char* name;
  int (*run)(const Args&);
  const char* summary;
};

}  // namespace miniseq::cli
