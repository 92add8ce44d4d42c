// Shared pieces of the training tests (test_train.cpp, test_offload.cpp): flag parsing, random token blocks,
// a quiet run on the golden llama_basic model, and reading back what a run wrote.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "miniseq/train/trainer.h"

namespace miniseq::test {

// The golden tiny Llama used by the training tests.
std::filesystem::path train_test_model();
// TrainArgs from command-line flags, full fine-tuning (--low_rank_training False) unless they say otherwise.
TrainArgs parse_train_args(const std::vector<std::string>& args);
// `blocks` blocks of `seq` uniformly random ids in [0, vocab), seeded.
Dataset random_blocks(int64_t blocks, int64_t seq, int64_t vocab, uint64_t seed);
// A quiet run of `a` on train_test_model() over `data`.
TrainSetup tiny_setup(const TrainArgs& a, const Dataset& data);
// Every tensor of a model directory, as fp32, by name.
std::map<std::string, std::vector<float>> read_weights(const std::string& dir);
// A LoRA output or checkpoint directory: every tensor of adapter_model.safetensors and (when present)
// trainable_params.safetensors, as fp32, by name.
std::map<std::string, std::vector<float>> read_lora_dir(const std::string& dir);
// One field of every record of DIR/metrics.jsonl.
std::vector<double> logged(const std::string& dir, const char* field);

}  // namespace miniseq::test
