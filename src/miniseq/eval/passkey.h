// LongLoRA's passkey retrieval test (passkey_retrivial.py): a task description, filler text, a pass key stated at
// a random depth, more filler, and the question; the model must continue with the key. Prompt template and the
// filler-length rule are LongLoRA's; the random draws use miniseq's generator (so a seed gives the same prompts on
// every machine, though not Python's), and the key is a 5-digit number.
#pragma once

#include <cstdint>
#include <functional>
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
// int(r·val // 1024 · 1024) characters. LongLoRA fixes r = 3.75 (characters per token of its filler with the
// Llama tokenizer); miniseq measures r with the model's own tokenizer by default (passkey_chars_per_token), so that
// the prompts are about val tokens long with any vocabulary.
std::vector<int64_t> passkey_filler_lengths(int64_t max_tokens, int64_t interval, double chars_per_token = 3.75);

// The filler's characters per token under `count_tokens` (tokens of a text without BOS/EOS).
double passkey_chars_per_token(const std::function<int64_t(const std::string&)>& count_tokens);

}  // namespace miniseq
