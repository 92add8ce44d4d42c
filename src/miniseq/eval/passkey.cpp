#include "miniseq/eval/passkey.h"

#include <cmath>
#include <cstddef>

#include "miniseq/core/check.h"
#include "miniseq/core/random.h"

namespace miniseq {

namespace {
constexpr const char* kTask =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you "
    "about the important information there.";
constexpr const char* kFiller = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
constexpr const char* kQuestion = "What is the pass key? The pass key is";

// The first n characters of the filler sentence repeated, joined by spaces.
std::string filler(int64_t n) {
  std::string s;
  while (static_cast<int64_t>(s.size()) < n) {
    if (!s.empty()) s += ' ';
    s += kFiller;
  }
  s.resize(static_cast<size_t>(n));
  return s;
}
}  // namespace

PasskeyPrompt passkey_prompt(int64_t n_garbage, uint64_t seed) {
  MS_CHECK(n_garbage >= 0, "internal: negative filler length");
  Rng rng(seed);
  PasskeyPrompt p;
  p.depth = static_cast<int64_t>(rng.below(static_cast<uint64_t>(n_garbage) + 1));
  p.answer = std::to_string(10000 + rng.below(90000));
  const std::string info = "The pass key is " + p.answer + ". Remember it. " + p.answer + " is the pass key.";
  p.text = std::string(kTask) + "\n" + filler(p.depth) + "\n" + info + "\n" + filler(n_garbage - p.depth) + "\n" +
           kQuestion;
  return p;
}

PasskeyAnswer passkey_answer(const std::string& prompt, const std::string& key,
                             const PasskeyEncodeFn& encode) {
  MS_CHECK(!key.empty(), "internal: empty pass key");
  const std::vector<int32_t> head = encode(prompt), full = encode(prompt + " " + key);
  size_t common = 0;
  while (common < head.size() && common < full.size() && head[common] == full[common]) ++common;
  PasskeyAnswer a;
  a.key = key;
  a.by_tokens = common == head.size();
  a.tokens.assign(full.begin() + static_cast<std::ptrdiff_t>(common), full.end());
  MS_CHECK(!a.tokens.empty(), "internal: the pass key \"", key, "\" adds no tokens to the prompt");
  return a;
}

bool passkey_passed(const PasskeyAnswer& answer, const std::vector<int32_t>& generated,
                    const PasskeyDecodeFn& decode) {
  if (answer.by_tokens) return generated == answer.tokens;
  const std::string text = decode(generated);
  const char* space = " \t\n\r\f\v";
  const size_t a = text.find_first_not_of(space);
  if (a == std::string::npos) return false;
  return text.substr(a, text.find_last_not_of(space) - a + 1) == answer.key;
}

std::vector<int64_t> passkey_filler_lengths(int64_t max_tokens, int64_t interval, double chars_per_token) {
  MS_CHECK(chars_per_token > 0.0, "--chars_per_token must be > 0, got ", chars_per_token);
  MS_CHECK(interval >= 1, "--interval must be >= 1, got ", interval);
  MS_CHECK(max_tokens > interval, "--max_tokens (", max_tokens, ") must exceed --interval (", interval,
           "): LongLoRA tests the lengths interval, 2·interval, … below max_tokens");
  std::vector<int64_t> out;
  for (int64_t val = interval; val < max_tokens; val += interval)
    out.push_back(static_cast<int64_t>(std::floor(chars_per_token * static_cast<double>(val) / 1024.0)) * 1024);
  return out;
}

double passkey_chars_per_token(const std::function<int64_t(const std::string&)>& count_tokens) {
  const std::string text = filler(1 << 16);
  const int64_t n = count_tokens(text);
  MS_CHECK(n > 0, "internal: the passkey filler has no tokens");
  return static_cast<double>(text.size()) / static_cast<double>(n);
}

}  // namespace miniseq
