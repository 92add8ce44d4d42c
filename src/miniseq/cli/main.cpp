// Entry point: dispatches to the subcommands declared in cli/commands.h. User errors (miniseq::Error) are printed
// as a single line prefixed with "miniseq: error:" and exit with status 2.
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>

#include "miniseq/cli/commands.h"
#include "miniseq/core/check.h"
#include "miniseq/dist/communicator.h"
#ifdef MINISEQ_WITH_CUDA
#include "miniseq/backend/cuda/cuda_backend.h"
#endif

namespace {

using miniseq::cli::Command;

const Command kCommands[] = {
    {"train", miniseq::cli::cmd_train, "fine-tune a model (LongLoRA fine-tune.py flags); --preset demo"},
    {"supervised-fine-tune", miniseq::cli::cmd_sft,
     "instruction fine-tuning (LongLoRA supervised-fine-tune.py flags; alias: sft)"},
    {"sft", miniseq::cli::cmd_sft, "short for supervised-fine-tune"},
    {"memplan", miniseq::cli::cmd_memplan, "peak memory of a run before it runs; longest length that fits"},
    {"inspect", miniseq::cli::cmd_inspect, "show a model directory: architecture, parameters, mismatches"},
    {"tiny-model", miniseq::cli::cmd_tiny_model, "write a small random Hugging Face model directory"},
    {"tokenize", miniseq::cli::cmd_tokenize,
     "text lines -> JSON token id arrays (and back) with a tokenizer.json"},
    {"grad", miniseq::cli::cmd_grad, "loss and gradients of one batch, as safetensors"},
    {"eval", miniseq::cli::cmd_eval, "perplexity and accuracy over sliding windows of a token stream"},
    {"passkey", miniseq::cli::cmd_passkey, "LongLoRA passkey retrieval test per context length"},
    {"generate", miniseq::cli::cmd_generate, "continue a prompt (greedy or top-p) with a KV cache"},
    {"merge", miniseq::cli::cmd_merge, "merge a LoRA adapter into its base model (LongLoRA merge script)"},
};

void usage() {
  std::printf("miniseq: long-context fine-tuning of Llama/Mistral/Qwen2 models with Mini-Sequence Transformer\n\n"
              "usage: miniseq <command> [flags]    (miniseq <command> --help for its flags)\n\ncommands:\n");
  for (const auto& c : kCommands) std::printf("  %-21s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
#ifdef MINISEQ_WITH_CUDA
  miniseq::cuda::register_cuda_backend();
#endif
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("miniseq 0.1.0\n");
    return 0;
  }
  miniseq::cli::Args args(argv + 2, argv + argc);
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    // An error on one rank of a distributed run ends every rank (MPI_Abort): the others would wait for it.
    try {
      const int rc = c.run(args);
      miniseq::dist::finalize_world();
      return rc;
    } catch (const miniseq::Error& e) {
      std::fprintf(stderr, "miniseq: error: %s\n", e.what());
      miniseq::dist::abort_world(2);
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "miniseq: internal error: %s\n", e.what());
      miniseq::dist::abort_world(3);
      return 3;
    }
  }
  std::fprintf(stderr, "miniseq: unknown command '%s' (see `miniseq --help`)\n", argv[1]);
  return 2;
}
