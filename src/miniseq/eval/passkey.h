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

using PasskeyEncodeFn = std::function<std::vector<int32_t>(const std::string&)>;  // text -> ids, no BOS/EOS
using PasskeyDecodeFn = std::function<std::string(const std::vector<int32_t>&)>;

// What a model that answers correctly emits after the prompt. After "… The pass key is" the text goes on
// with " " + key, and how that splits into tokens depends on the vocabulary: byte-level ones (Llama-3,
// Qwen2/3, GPT-2) emit the space as a token of its own before the digits; SentencePiece ones (Llama-2,
// Mistral) fold it into "▁". So the expected tokens are those that " " + key adds to the prompt:
// encode(prompt + " " + key) past encode(prompt), both without special tokens. (LongLoRA compares with the
// key's own tokens minus the first, `[:, 1:]`, which is right only for SentencePiece vocabularies.)
struct PasskeyAnswer {
  std::string key;              // the digits
  std::vector<int32_t> tokens;  // the expected continuation; its length is the number of tokens generated
  // True when encode(prompt) is a prefix of encode(prompt + " " + key), the usual case: a trial then passes
  // when the generated tokens equal `tokens`. False when the tokenizer merges across the prompt's end:
  // `tokens` is then the tail that differs, and a trial passes when the decoded text, whitespace trimmed,
  // equals the key.
  bool by_tokens = true;
};

PasskeyAnswer passkey_answer(const std::string& prompt, const std::string& key,
                             const PasskeyEncodeFn& encode);

// Whether `generated` (the greedy continuation of the prompt) states the key (see PasskeyAnswer).
bool passkey_passed(const PasskeyAnswer& answer, const std::vector<int32_t>& generated,
                    const PasskeyDecodeFn& decode);

// LongLoRA's sweep: for every target length val = interval, 2·interval, … < max_tokens, the filler length
// int(r·val // 1024 · 1024) characters. LongLoRA fixes r = 3.75 (characters per token of its filler with the
// Llama tokenizer); miniseq measures r with the model's own tokenizer by default (passkey_chars_per_token), so that
// the prompts are about val tokens long with any vocabulary.
std::vector<int64_t> passkey_filler_lengths(int64_t max_tokens, int64_t interval, double chars_per_token = 3.75);

// The filler's characters per token under `count_tokens` (tokens of a text without BOS/EOS).
double passkey_chars_per_token(const std::function<int64_t(const std::string&)>& count_tokens);

}  // namespace miniseq
