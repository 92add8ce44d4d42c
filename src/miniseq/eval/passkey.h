// LongLoRA's passkey retrieval test (passkey_retrivial.py): a task description, filler text, a pass key stated at
// a random depth, more filler, and the question; the model must continue with the key. Prompt template and the
// filler-length rule are LongLoRA's; the random draws use miniseq's generator (so a seed gives the same prompts on
// every machine, though not Python's), and the key is a 5-digit number.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace miniseq {

struct PasskeyPrompt {
  std::string text;    // the whole prompt
  std::string answer;  // the pass key, as digits
  int64_t depth = 0;   // characters of filler before the key
};

// n_garbage characters of filler split at a random point around the key line.
PasskeyPrompt passkey_prompt(int64_t n_garbage, uint64_t seed);

// LongLoRA's sweep: for every target length val = interval, 2·interval, … < max_tokens, the filler length
// int(3.75·val // 1024 · 1024) characters (about val tokens with a Llama tokenizer).
std::vector<int64_t> passkey_filler_lengths(int64_t max_tokens, int64_t interval);

}  // namespace miniseq
