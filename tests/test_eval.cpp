// Evaluation and generation: strided perplexity and accuracy against transformers (tests/data/eval/reference.json,
// written by tools/eval_reference.py from the golden models), KV-cache generation against generation without a cache
// and against transformers' generate, LongLoRA's passkey prompts, and the commands on a checkpoint of
// `miniseq train`, with their errors for bad data.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "miniseq/eval/generate.h"
#include "miniseq/eval/inference_model.h"
#include "miniseq/eval/passkey.h"
#include "miniseq/eval/perplexity.h"
#include "miniseq/eval/token_stream.h"
#include "miniseq/io/tokenizer/tokenizer.h"
#include "miniseq/train/demo_preset.h"
#include "support/goldens.h"
#include "support/tmpdir.h"

using namespace miniseq;
namespace fs = std::filesystem;

namespace {

const fs::path kGolden = test::golden_dir();
const fs::path kEval = test::test_data_dir() / "eval";

const nlohmann::json& reference() {
  static const nlohmann::json j = nlohmann::json::parse(test::read_text((kEval / "reference.json").string()));
  return j;
}

std::string model_dir(const std::string& name) {
  return (kGolden / name / "model").string();
}

std::vector<int32_t> stream() {
  return read_token_binary((kEval / "stream.bin").string(), 2, 131);
}

struct EvalRun {
  EvalResult result;
  size_t planned_peak = 0, measured_peak = 0;
};

EvalRun run_eval(const nlohmann::json& c, const std::vector<int32_t>& ids, const StepPolicy& policy = {}) {
  const std::string dir = model_dir(c["model"]);
  const ModelConfig config = load_inference_config(dir, c["rope_scaling_factor"].get<double>());
  const int64_t seq = c["seq_len"], stride = c["stride"], batch = c["batch"];
  auto be = make_cpu_backend();
  const MemReport planned = plan_evaluation(config, static_cast<int64_t>(ids.size()), seq, stride, batch, policy,
                                            Device::CPU, DType::F32, DType::F32);
  InferenceModel m(dir, config, *be, planned.arena_bytes);
  EvalRun r;
  r.result = evaluate_stream(m.decoder(), ids, seq, stride, batch, policy);
  r.planned_peak = planned.peak_bytes;
  r.measured_peak = m.plan().report().peak_bytes;
  return r;
}

void expect_matches_reference(const EvalResult& r, const nlohmann::json& c) {
  EXPECT_EQ(r.windows, c["windows"].get<int64_t>());
  EXPECT_EQ(r.scored, c["scored"].get<int64_t>());
  EXPECT_EQ(r.correct, c["correct"].get<int64_t>());
  // fp32 forward vs transformers' fp32 forward: the summed loss agrees to summation order (measured ~1e-8).
  EXPECT_NEAR(r.loss_sum / c["loss_sum"].get<double>(), 1.0, 1e-6);
  EXPECT_NEAR(r.perplexity() / c["perplexity"].get<double>(), 1.0, 1e-6);
}

std::vector<int32_t> ids_of(const nlohmann::json& j) {
  return j.get<std::vector<int32_t>>();
}

std::vector<int32_t> run_generate(const std::string& name, const std::vector<int32_t>& prompt,
                                  const GenerateOptions& opt) {
  const std::string dir = model_dir(name);
  const ModelConfig config = load_inference_config(dir, 0.0);
  auto be = make_cpu_backend();
  const MemReport planned =
      plan_generation(config, static_cast<int64_t>(prompt.size()), opt, {}, Device::CPU, DType::F32, DType::F32);
  InferenceModel m(dir, config, *be, planned.arena_bytes);
  auto out = generate(m.decoder(), m.plan(), DType::F32, prompt, opt, {});
  EXPECT_EQ(m.plan().report().peak_bytes, planned.peak_bytes);
  return out;
}

void write_bytes(const std::string& path, const void* data, size_t n) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
}

}  // namespace

TEST(EvalWindows, ScoreEveryTokenAtMostOnceWithItsContext) {
  for (int64_t n : {2, 10, 203})
    for (int64_t seq : {2, 7, 48, 300})
      for (int64_t stride : {int64_t{1}, seq / 2 + 1, seq}) {
        if (stride > seq) continue;
        SCOPED_TRACE(testing::Message() << "n " << n << " seq " << seq << " stride " << stride);
        std::vector<int> times(static_cast<size_t>(n), 0);
        for (const auto& w : eval_windows(n, seq, stride)) {
          ASSERT_LE(w.end - w.begin, seq);
          ASSERT_GT(w.first_scored, w.begin);  // a scored token has context inside its window
          for (int64_t t = w.first_scored; t < w.end; ++t) ++times[static_cast<size_t>(t)];
          if (stride < seq && w.begin > 0) {
            EXPECT_GE(w.first_scored - w.begin, seq - stride);
          }
        }
        for (int64_t t = 0; t < n; ++t) {
          ASSERT_LE(times[static_cast<size_t>(t)], 1) << "token " << t;
          // With overlapping windows every token but the first is scored.
          if (stride < seq && t > 0) {
            ASSERT_EQ(times[static_cast<size_t>(t)], 1) << "token " << t;
          }
        }
      }
  EXPECT_THROW(eval_windows(100, 10, 11), Error);
  EXPECT_THROW(eval_windows(1, 10, 10), Error);
}

TEST(EvalGolden, PerplexityAndAccuracyEqualTransformers) {
  const auto ids = stream();
  ASSERT_EQ(static_cast<int64_t>(ids.size()), reference()["stream_tokens"].get<int64_t>());
  for (const auto& c : reference()["eval"]) {
    SCOPED_TRACE(c.dump());
    const EvalRun r = run_eval(c, ids);
    expect_matches_reference(r.result, c);
    EXPECT_EQ(r.measured_peak, r.planned_peak);  // the real run follows the dry run's plan exactly
  }
}

TEST(EvalGolden, PoliciesAndChunkingDoNotChangeTheResult) {
  const auto ids = stream();
  const auto& c = reference()["eval"][1];  // overlapping windows, batch 3
  StepPolicy whole;
  whole.mini_sequence = false;
  StepPolicy small;
  small.mlp_chunk_tokens = 7;
  small.lm_head_chunks = 5;
  for (const StepPolicy& p : {whole, small}) expect_matches_reference(run_eval(c, ids, p).result, c);
  // Without MsT the logits of a whole batch exist at once; with it, one chunk: the plan shows it.
  EXPECT_GT(run_eval(c, ids, whole).planned_peak, run_eval(c, ids, small).planned_peak);
}

TEST(EvalGolden, StreamFormatsGiveTheSameTokens) {
  const auto ids = stream();
  test::TempDir tmp;
  std::vector<uint32_t> wide(ids.begin(), ids.end());
  write_bytes(tmp.file("stream.u32"), wide.data(), wide.size() * 4);
  EXPECT_EQ(read_token_binary(tmp.file("stream.u32"), 4, 131), ids);
  nlohmann::json doc1 = {{"input_ids", std::vector<int32_t>(ids.begin(), ids.begin() + 100)}};
  nlohmann::json doc2 = {{"input_ids", std::vector<int32_t>(ids.begin() + 100, ids.end())}};
  test::write_text(tmp.file("ids.jsonl"), doc1.dump() + "\n\n" + doc2.dump() + "\n");
  EXPECT_EQ(read_token_text(tmp.file("ids.jsonl"), StreamFormat::Jsonl, 131, {}), ids);
  EXPECT_EQ(stream_format_for("a/b.jsonl"), StreamFormat::Jsonl);
  EXPECT_EQ(stream_format_for("pg19_validation.bin"), StreamFormat::Binary);
  EXPECT_EQ(stream_format_for("book.txt"), StreamFormat::Text);
}

TEST(EvalCli, JsonResultAndClearErrorsForBadData) {
  test::TempDir tmp;
  const auto& c = reference()["eval"][0];
  const std::string base = "eval --model " + model_dir("llama_basic") + " --seq_len 48 --progress False";
  auto r = test::run_miniseq(base + " --json --data " + (kEval / "stream.bin").string());
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  EXPECT_NEAR(j["perplexity"].get<double>() / c["perplexity"].get<double>(), 1.0, 1e-6);
  EXPECT_EQ(j["scored_tokens"].get<int64_t>(), c["scored"].get<int64_t>());

  const uint8_t odd[5] = {1, 0, 2, 0, 3};
  write_bytes(tmp.file("odd.bin"), odd, sizeof odd);
  r = test::run_miniseq(base + " --data " + tmp.file("odd.bin"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("odd.bin: 5 bytes is not a whole number of uint16 token ids"), std::string::npos) << r.out;

  const uint16_t big[4] = {5, 6, 500, 7};
  write_bytes(tmp.file("big.bin"), big, sizeof big);
  r = test::run_miniseq(base + " --data " + tmp.file("big.bin"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("token 2 (byte offset 4) is 500, outside the model's vocabulary [0, 131)"),
            std::string::npos) << r.out;

  r = test::run_miniseq(base + " --stride 49 --data " + (kEval / "stream.bin").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--stride must lie in [1, seq_len = 48]"), std::string::npos) << r.out;

  // A tokenizer with more ids (259) than the model's vocabulary (131).
  fs::copy(model_dir("llama_basic"), tmp.file("model"));
  for (const auto& [name, text] : demo_tokenizer_files()) test::write_text(tmp.file("model/" + name), text);
  test::write_text(tmp.file("doc.txt"), "hello");
  r = test::run_miniseq("eval --model " + tmp.file("model") + " --seq_len 4 --data " + tmp.file("doc.txt"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("tokenizer.json has 259 ids but the model's vocab_size is 131"), std::string::npos) << r.out;
}

TEST(Generate, KvCacheEqualsNoCacheAndTransformers) {
  for (const auto& g : reference()["generation"]) {
    SCOPED_TRACE(g["model"].get<std::string>());
    GenerateOptions opt;
    opt.max_new_tokens = g["max_new_tokens"];
    const auto with_cache = run_generate(g["model"], ids_of(g["prompt_ids"]), opt);
    opt.use_cache = false;
    const auto without = run_generate(g["model"], ids_of(g["prompt_ids"]), opt);
    EXPECT_EQ(with_cache, ids_of(g["new_ids"]));
    // transformers' own no-cache run; it differs from the cached one only for dynamic NTK (cached keys keep the
    // frequencies they were rotated with, docs/rope.md).
    EXPECT_EQ(without, ids_of(g.value("new_ids_no_cache", g["new_ids"])));
    if (g.value("new_ids_no_cache", g["new_ids"]) == g["new_ids"]) {
      EXPECT_EQ(without, with_cache);
    }
  }
}

TEST(Generate, SamplingIsSeededAndCacheIndependent) {
  GenerateOptions opt;
  opt.max_new_tokens = 30;
  opt.sampling.sample = true;
  opt.sampling.temperature = 0.7;
  opt.sampling.top_p = 0.9;
  opt.sampling.seed = 3;
  const std::vector<int32_t> prompt = {5, 6, 7};
  const auto a = run_generate("mistral_window", prompt, opt);
  opt.use_cache = false;
  EXPECT_EQ(run_generate("mistral_window", prompt, opt), a);
  opt.sampling.seed = 4;
  EXPECT_NE(run_generate("mistral_window", prompt, opt), a);
  // top_p → 0 keeps only the most likely token: greedy.
  opt.sampling.top_p = 1e-9;
  opt.max_new_tokens = 20;
  GenerateOptions greedy;
  greedy.max_new_tokens = 20;
  EXPECT_EQ(run_generate("llama_basic", prompt, opt), run_generate("llama_basic", prompt, greedy));
}

TEST(Generate, SlidingWindowCacheHoldsTwoWindowsPlusTheFirstChunk) {
  const ModelConfig config = load_model_config(model_dir("mistral_window"));  // window 8, 2 layers
  ASSERT_EQ(config.sliding_window[0], 8);
  MemoryPlan plan = MemoryPlan::dry();
  const KvCache cache(config, plan, DType::F32, /*total=*/100000, /*first_chunk=*/5);
  EXPECT_EQ(cache.bytes(), static_cast<size_t>(2 * 2 * (2 * 8 + 5) * config.kv_dim() * 4));
  const KvCache full(load_model_config(model_dir("llama_basic")), plan, DType::F32, 1000, 5);
  EXPECT_EQ(full.bytes(), static_cast<size_t>(2 * 2 * 1000 * config.kv_dim() * 4));
}

TEST(Passkey, PromptsFollowLongLoRA) {
  // int(3.75 * val // 1024 * 1024) characters of filler for val = 1000, 2000, 3000.
  EXPECT_EQ(passkey_filler_lengths(4000, 1000), (std::vector<int64_t>{3072, 7168, 10240}));
  EXPECT_THROW(passkey_filler_lengths(1000, 1000), Error);
  const PasskeyPrompt p = passkey_prompt(3072, 7);
  EXPECT_EQ(p.answer.size(), 5u);
  EXPECT_GE(p.depth, 0);
  EXPECT_LE(p.depth, 3072);
  const std::string info = "The pass key is " + p.answer + ". Remember it. " + p.answer + " is the pass key.";
  const size_t at = p.text.find(info);
  ASSERT_NE(at, std::string::npos);
  EXPECT_EQ(p.text.rfind("There is an important info hidden inside a lot of irrelevant text.", 0), 0u);
  EXPECT_EQ(p.text.substr(p.text.size() - 37), "What is the pass key? The pass key is");
  // task \n prefix \n info \n suffix \n question: the filler around the key totals n_garbage characters.
  const size_t task = p.text.find('\n');
  EXPECT_EQ(at - task - 2, static_cast<size_t>(p.depth));
  EXPECT_EQ(p.text.size() - (task + 1) - info.size() - 3 - 37, 3072u);
  EXPECT_EQ(passkey_prompt(3072, 7).text, p.text);
  EXPECT_NE(passkey_prompt(3072, 8).text, p.text);
}

// The expected answer with the real vocabularies ($MINISEQ_TEST_DATA or ../shared/data/tokenizers; skipped
// without them). A model that states the key continues the prompt's text with " " + key, so the tokens it
// emits are those that the tokenizer gives prompt + " " + key beyond the prompt's own: passkey_answer must be
// exactly those, and the prompt's ids followed by them must be the ids of the whole text. Byte-level
// vocabularies (Llama-3, Qwen3) emit the space as a token of its own before the digits, so the digits-only
// answer LongLoRA compares with would fail a model that answers correctly; with SentencePiece's "▁" (Mistral)
// the two agree.
class PasskeyAnswerTokens : public ::testing::TestWithParam<std::string> {};

TEST_P(PasskeyAnswerTokens, AreWhatAModelStatingTheKeyEmits) {
  fs::path root = fs::path(MINISEQ_SOURCE_DIR) / "../shared/data/tokenizers";
  if (const char* env = std::getenv("MINISEQ_TEST_DATA")) root = fs::path(env) / "tokenizers";
  if (!fs::exists(root / GetParam() / "tokenizer.json"))
    GTEST_SKIP() << "no tokenizer at " << root / GetParam();
  const auto tok = tok::Tokenizer::load((root / GetParam()).string());
  const bool byte_level = GetParam() != "mistral";
  const PasskeyEncodeFn encode = [&](const std::string& s) {
    return tok.encode(s, /*add_special_tokens=*/false);
  };
  const PasskeyDecodeFn decode = [&](const std::vector<int32_t>& ids) { return tok.decode(ids); };
  const std::vector<int32_t> space = encode(" ");
  ASSERT_EQ(space.size(), 1u);
  for (uint64_t seed = 0; seed < 6; ++seed) {
    const PasskeyPrompt p = passkey_prompt(1024 + 97 * static_cast<int64_t>(seed), seed);
    SCOPED_TRACE("key " + p.answer);
    const PasskeyAnswer a = passkey_answer(p.text, p.answer, encode);
    EXPECT_TRUE(a.by_tokens);
    EXPECT_EQ(a.key, p.answer);
    // The prompt as fed to the model (BOS where the tokenizer adds it), then the answer: the whole text's ids.
    std::vector<int32_t> prompt_then_answer = tok.encode(p.text);
    prompt_then_answer.insert(prompt_then_answer.end(), a.tokens.begin(), a.tokens.end());
    EXPECT_EQ(prompt_then_answer, tok.encode(p.text + " " + p.answer));
    std::string text = decode(a.tokens);
    text.erase(0, text.find_first_not_of(' '));
    EXPECT_EQ(text, p.answer);
    EXPECT_TRUE(passkey_passed(a, a.tokens, decode));
    const std::vector<int32_t> digits = encode(p.answer);  // LongLoRA's expected answer, BOS dropped
    if (byte_level) {
      std::vector<int32_t> with_space = space;
      with_space.insert(with_space.end(), digits.begin(), digits.end());
      EXPECT_EQ(a.tokens, with_space);  // the space token, then the digits
      EXPECT_FALSE(passkey_passed(a, digits, decode));
      // A correct answer cut to the digits' count (what the old rule compared) fails too.
      EXPECT_FALSE(passkey_passed(a, std::vector<int32_t>(a.tokens.begin(), a.tokens.begin() + digits.size()),
                                  decode));
    } else {
      EXPECT_EQ(a.tokens, digits);
    }
    std::vector<int32_t> wrong = a.tokens;
    wrong.back() = encode(p.answer.back() == '7' ? "8" : "7").back();
    EXPECT_FALSE(passkey_passed(a, wrong, decode));
  }
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, PasskeyAnswerTokens, ::testing::Values("mistral", "llama3", "qwen3"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// A tokenizer whose tokens cross the prompt's end (here "s " is one token): the prompt's ids are then not a
// prefix of the whole text's, and the trial is scored on the decoded text, whitespace trimmed.
TEST(Passkey, ScoresTheDecodedTextWhenTokensCrossThePromptEnd) {
  const PasskeyEncodeFn encode = [](const std::string& s) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == 's' && i + 1 < s.size() && s[i + 1] == ' ') {
        ids.push_back(1000);
        ++i;
      } else {
        ids.push_back(static_cast<unsigned char>(s[i]));
      }
    }
    return ids;
  };
  const PasskeyDecodeFn decode = [](const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += id == 1000 ? std::string("s ") : std::string(1, static_cast<char>(id));
    return s;
  };
  const PasskeyAnswer a = passkey_answer("The pass key is", "75700", encode);
  EXPECT_FALSE(a.by_tokens);
  // From the first token that differs: its length is the number of tokens generated.
  EXPECT_EQ(a.tokens, encode("s 75700"));
  EXPECT_TRUE(passkey_passed(a, encode(" 75700\n"), decode));
  EXPECT_TRUE(passkey_passed(a, encode("75700"), decode));
  EXPECT_FALSE(passkey_passed(a, encode(" 75701"), decode));
  EXPECT_FALSE(passkey_passed(a, encode(" 75700."), decode));
  EXPECT_FALSE(passkey_passed(a, encode("   "), decode));
  // Without the crossing token the same prompt is scored on tokens.
  const PasskeyAnswer b = passkey_answer("The pass key was", "75700", [&](const std::string& s) {
    std::vector<int32_t> ids;
    for (char c : s) ids.push_back(static_cast<unsigned char>(c));
    return ids;
  });
  EXPECT_TRUE(b.by_tokens);
  EXPECT_EQ(b.tokens.size(), 6u);
}

// The commands on a checkpoint written by `miniseq train` (the demo preset saves its byte-level tokenizer).
TEST(EvalCli, CommandsRunOnATrainedCheckpoint) {
  test::TempDir tmp;
  const std::string out = tmp.file("run");
  auto r = test::run_miniseq("train --preset demo --output_dir " + out + " --max_steps 2 --model_max_length 256");
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_TRUE(fs::exists(out + "/tokenizer.json"));

  // Every prompt (and its answer) stays within --max_tokens; task and question alone are ~250 bytes.
  r = test::run_miniseq("passkey --model " + out + " --max_tokens 200 --interval 80 --trials 2 --progress False");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("--max_tokens 200 is too short for even the shortest prompt"), std::string::npos) << r.out;
  // LongLoRA's filler for 2550 tokens at 1.3 characters per token is 3072 characters: with the task's ~250 tokens
  // on this byte-level vocabulary that passes 2600, so it shrinks to 2048.
  r = test::run_miniseq("passkey --model " + out + " --max_tokens 2600 --interval 1275 --chars_per_token 1.3 " +
                        "--trials 2 --progress False --json " + tmp.file("pk.json"));
  ASSERT_EQ(r.status, 0) << r.out;
  const auto pk = nlohmann::json::parse(test::read_text(tmp.file("pk.json")));
  ASSERT_EQ(pk["results"].size(), 2u);  // lengths 1275 and 2550
  for (const auto& row : pk["results"]) {
    EXPECT_EQ(row["trials"].get<int64_t>(), 2);
    EXPECT_GT(row["tokens"].get<int64_t>(), 1000);
    EXPECT_LE(row["tokens"].get<int64_t>(), 2600 - 5);  // room for the 5-digit answer
  }
  EXPECT_EQ(pk["results"][0]["filler_chars"].get<int64_t>(), 1024);
  EXPECT_EQ(pk["results"][1]["filler_chars"].get<int64_t>(), 2048);

  r = test::run_miniseq("generate --model " + out + " --prompt 'The pass key is' --max_new_tokens 6 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto g = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  EXPECT_EQ(g["prompt_ids"].size(), 16u);  // <s> + 15 bytes
  EXPECT_LE(g["new_ids"].size(), 6u);
  EXPECT_TRUE(g.contains("text"));

  test::write_text(tmp.file("doc.txt"), std::string(300, 'a') + " The grass is green.");
  r = test::run_miniseq("eval --model " + out + " --seq_len 64 --stride 32 --progress False --data " +
                        tmp.file("doc.txt"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("321 tokens; 10 windows of 64 tokens (stride 32), 320 tokens scored"), std::string::npos)
      << r.out;
}
