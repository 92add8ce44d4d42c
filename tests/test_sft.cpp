// miniseq supervised-fine-tune: LongLoRA supervised-fine-tune.py's data (templates, labels -100 on the
// prompt, truncation, right padding, JSON list and JSONL, errors), the loss of its first step against
// transformers (tools/sft_reference.py -> tests/data/sft/), accumulation over padded batches, and bit-exact
// resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "miniseq/core/check.h"
#include "miniseq/core/random.h"
#include "miniseq/train/demo_preset.h"
#include "miniseq/train/sft_dataset.h"
#include "miniseq/train/special_tokens.h"
#include "miniseq/train/trainer.h"
#include "support/goldens.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

namespace miniseq {
namespace {

namespace fs = std::filesystem;

// The demo tokenizer: one token per byte (id 3 + byte), BOS <s> = 1 before the text, </s> = 2, <pad> = 0.
const tok::Tokenizer& byte_tokenizer() {
  static const tok::Tokenizer t = [] {
    auto files = demo_tokenizer_files();
    return tok::Tokenizer::from_json(files["tokenizer.json"], files["tokenizer_config.json"],
                                     "demo tokenizer");
  }();
  return t;
}

SftTokenization byte_tokenization(int64_t max_len) {
  SftTokenization t;
  t.tokenizer = &byte_tokenizer();
  t.eos_token = "</s>";
  t.pad_id = 0;
  t.max_len = max_len;
  return t;
}

std::vector<int32_t> bytes(const std::string& s) {
  std::vector<int32_t> v;
  for (unsigned char c : s) v.push_back(3 + c);
  return v;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(SftData, LongLoRAsLlama2Templates) {
  SftRecord r;
  r.instruction = "Name a color.";
  r.output = "Blue.";
  EXPECT_EQ(sft_prompt(r), "[INST]Name a color.[/INST]");  // prompt_llama2: no spaces, no system prompt
  r.input = "The sky.";
  EXPECT_EQ(
      sft_prompt(r),
      "[INST] <<SYS>>\n"
      "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while "
      "being "
      "safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or "
      "illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n\n"
      "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
      "something not correct. If you don't know the answer to a question, please don't share false "
      "information.\n"
      "<</SYS>> \n\n Name a color. \nThe sky. [/INST]");  // prompt_input_llama2
  // Braces in the data are text (Python's format_map does not format the values it inserts).
  r.input.clear();
  r.instruction = "{input} {instruction}";
  EXPECT_EQ(sft_prompt(r), "[INST]{input} {instruction}[/INST]");
}

TEST(SftData, PromptLabelsAreIgnoredTargetEndsWithEos) {
  SftRecord r{"hi", "", "ok", "r"};
  const auto ex = tokenize_sft({r}, byte_tokenization(64));
  ASSERT_EQ(ex.size(), 1u);
  std::vector<int32_t> want = {1};
  for (int32_t id : bytes("[INST]hi[/INST]ok")) want.push_back(id);
  want.push_back(2);  // "</s>" appended as text is the eos token
  EXPECT_EQ(ex[0].input_ids, want);
  EXPECT_EQ(ex[0].prompt_len, 16);  // BOS + 15 bytes of the prompt
  EXPECT_FALSE(ex[0].truncated);
  const Dataset d = Dataset::from_examples({ex[0].input_ids}, {ex[0].prompt_len}, 64, 0);
  const TokenBatch b = d.batch({0});
  EXPECT_EQ(b.seq, 19);
  EXPECT_EQ(b.input_ids, want);
  for (int s = 0; s < 16; ++s) EXPECT_EQ(b.labels[static_cast<size_t>(s)], kIgnoreIndex) << s;
  EXPECT_EQ(std::vector<int32_t>(b.labels.begin() + 16, b.labels.end()),
            (std::vector<int32_t>{3 + 'o', 3 + 'k', 2}));
  EXPECT_EQ(b.count_targets(), 3);
}

// LongLoRA counts the prompt's tokens that are not the pad token: a literal pad token in the prompt moves the
// boundary one token left (reproduced as it is).
TEST(SftData, PromptLengthCountsNonPadTokens) {
  SftRecord r{"a<pad>b", "", "c", "r"};
  const auto ex = tokenize_sft({r}, byte_tokenization(64));
  EXPECT_EQ(ex[0].input_ids[8], 0);  // BOS [ I N S T ] a, then <pad>
  // 17 prompt tokens (BOS, "[INST]", a, <pad>, b, "[/INST]"), 16 of them not the pad: the prompt's last
  // token, "]", gets a label as in LongLoRA.
  EXPECT_EQ(ex[0].prompt_len, 1 + 6 + 1 + 1 + 7);
}

TEST(SftData, TruncationKeepsBosAndCutsTheTail) {
  SftRecord r{"hi", "", "a long answer", "r"};
  auto ex = tokenize_sft({r}, byte_tokenization(20));
  ASSERT_EQ(ex[0].input_ids.size(), 20u);
  EXPECT_TRUE(ex[0].truncated);
  EXPECT_EQ(ex[0].input_ids[0], 1);
  std::vector<int32_t> want = {1};
  for (int32_t id : bytes("[INST]hi[/INST]a lo")) want.push_back(id);
  EXPECT_EQ(ex[0].input_ids, want);  // the eos is cut with the tail
  EXPECT_EQ(ex[0].prompt_len, 16);
  // A prompt longer than max_len: truncated to max_len as well, and every label is -100.
  ex = tokenize_sft({r}, byte_tokenization(10));
  EXPECT_EQ(ex[0].input_ids.size(), 10u);
  EXPECT_EQ(ex[0].prompt_len, 10);
  // Too short to hold even the special tokens.
  EXPECT_NE(error_of([&] { tokenize_sft({r}, byte_tokenization(1)); }).find("--model_max_length 1"),
            std::string::npos);
}

TEST(SftData, BatchesAreRightPaddedToTheirLongestExample) {
  const Dataset d = Dataset::from_examples({{1, 10, 11, 12, 13}, {1, 20, 21}, {1, 30}}, {2, 1, 5}, 8, 0);
  EXPECT_EQ(d.size(), 3);
  EXPECT_TRUE(d.examples());
  EXPECT_EQ(d.seq(), 8);
  const TokenBatch b = d.batch({1, 0});
  EXPECT_EQ(b.batch, 2);
  EXPECT_EQ(b.seq, 5);  // the longest of the batch, not model_max_length
  EXPECT_EQ(b.input_ids, (std::vector<int32_t>{1, 20, 21, 0, 0, 1, 10, 11, 12, 13}));
  const int32_t I = kIgnoreIndex;
  EXPECT_EQ(b.labels, (std::vector<int32_t>{I, 20, 21, I, I, I, I, 11, 12, 13}));
  const TokenBatch c = d.batch({2});  // prompt_len beyond the example: all ignored
  EXPECT_EQ(c.labels, (std::vector<int32_t>{I, I}));
}

TEST(SftData, JsonListAndJsonlGiveTheSameRecords) {
  test::TempDir tmp;
  test::write_text(tmp.file("a.json"),
                   "  \n[{\"instruction\": \"i1\", \"input\": \"x\", \"output\": \"o1\"},\n"
                   " {\"instruction\": \"i2\", \"output\": \"o2\", \"extra\": 3},\n"
                   " {\"instruction\": \"i3\", \"input\": null, \"output\": \"o3\"}]\n");
  test::write_text(tmp.file("a.jsonl"),
                   "{\"instruction\": \"i1\", \"input\": \"x\", \"output\": \"o1\"}\n\n"
                   "{\"instruction\": \"i2\", \"output\": \"o2\", \"extra\": 3}\n"
                   "{\"instruction\": \"i3\", \"input\": null, \"output\": \"o3\"}\n");
  const auto a = read_sft_records(tmp.file("a.json")), b = read_sft_records(tmp.file("a.jsonl"));
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(a[i].instruction, b[i].instruction);
    EXPECT_EQ(a[i].input, b[i].input);
    EXPECT_EQ(a[i].output, b[i].output);
  }
  EXPECT_EQ(a[0].input, "x");
  EXPECT_EQ(a[2].input, "");  // null: no input
  EXPECT_EQ(a[1].where, tmp.file("a.json") + ": record 2");
  EXPECT_EQ(b[1].where, tmp.file("a.jsonl") + ":3");  // JSONL: the line (blank lines skipped)
}

TEST(SftData, ClearErrors) {
  test::TempDir tmp;
  auto err = [&](const std::string& name, const std::string& text) {
    test::write_text(tmp.file(name), text);
    return error_of([&] { read_sft_records(tmp.file(name)); });
  };
  std::string e = err("m.json", "[{\"instruction\": \"a\", \"output\": \"b\"}, {\"instruction\": \"c\"}]");
  EXPECT_NE(e.find("m.json: record 2: \"output\" is missing"), std::string::npos) << e;
  e = err("m.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"output\": \"b\"}\n");
  EXPECT_NE(e.find("m.jsonl:2: \"instruction\" is missing"), std::string::npos) << e;
  e = err("t.json", "[{\"instruction\": \"a\", \"input\": 5, \"output\": \"b\"}]");
  EXPECT_NE(e.find("t.json: record 1: \"input\" must be a string, found the number 5"), std::string::npos)
      << e;
  e = err("o.json", "[[\"a\", \"b\"]]");
  EXPECT_NE(e.find("o.json: record 1: expected a JSON object"), std::string::npos) << e;
  e = err("e.json", "[]");
  EXPECT_NE(e.find("e.json: no records"), std::string::npos) << e;
  e = err("e.jsonl", "\n\n");
  EXPECT_NE(e.find("e.jsonl: no records"), std::string::npos) << e;
  e = err("bad.json", "[{\"instruction\": \"a\", \"output\": \"b\"},]");
  EXPECT_NE(e.find("bad.json"), std::string::npos) << e;
  e = err("bad.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \n");
  EXPECT_NE(e.find("bad.jsonl:2"), std::string::npos) << e;
  e = error_of([&] { read_sft_records(tmp.file("absent.json")); });
  EXPECT_NE(e.find("absent.json: cannot read"), std::string::npos) << e;
  // No record keeps a response token: refused (Hugging Face's loss would be NaN).
  test::write_text(tmp.file("long.json"), "[{\"instruction\": \"a very long prompt\", \"output\": \"b\"}]");
  e = error_of([&] { sft_dataset(tmp.file("long.json"), byte_tokenization(12), 259, nullptr); });
  EXPECT_NE(e.find("none of its 1 records keeps a response token within --model_max_length 12"),
            std::string::npos)
      << e;
  // Ids beyond the model's vocabulary: the tokenizer does not belong to the model.
  e = error_of([&] { sft_dataset(tmp.file("long.json"), byte_tokenization(64), 100, nullptr); });
  EXPECT_NE(e.find("long.json: record 1: the tokenizer produced id"), std::string::npos) << e;
}

// ---- against transformers: tests/data/sft/reference.json (tools/sft_reference.py) ----

fs::path mistral_tokenizer_dir() {
  if (const char* env = std::getenv("MINISEQ_TEST_DATA")) return fs::path(env) / "tokenizers/mistral";
  return fs::path(MINISEQ_SOURCE_DIR) / "../shared/data/tokenizers/mistral";
}

struct Reference {
  nlohmann::json ref;
  std::string model;
};

// The reference's model (`miniseq tiny-model` with its arguments) with the Mistral tokenizer, in tmp.
Reference reference_model(const test::TempDir& tmp) {
  Reference r;
  r.ref = nlohmann::json::parse(test::read_text(test::source_dir() + "/tests/data/sft/reference.json"));
  r.model = tmp.file("model");
  const auto run =
      test::run_miniseq("tiny-model --out " + r.model + " " + r.ref["tiny_model_args"].get<std::string>());
  EXPECT_EQ(run.status, 0) << run.out;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(mistral_tokenizer_dir() / f, fs::path(r.model) / f);
  return r;
}

TEST(SftReference, ExamplesEqualLongLoRAsBuiltByTransformers) {
  if (!fs::exists(mistral_tokenizer_dir() / "tokenizer.json"))
    GTEST_SKIP() << "no Mistral tokenizer at " << mistral_tokenizer_dir();
  test::TempDir tmp;
  const Reference r = reference_model(tmp);
  // As `miniseq sft` prepares it: "[PAD]" added (id 32000), the prompts tokenized with it.
  const tok::Tokenizer base = tok::Tokenizer::load(r.model);
  const PreparedTokenizer prep = prepare_special_tokens(r.model, base);
  ASSERT_EQ(prep.pad_id, r.ref["pad_token_id"].get<int32_t>());
  ASSERT_EQ(prep.vocab_size, r.ref["vocab_size"].get<int64_t>());
  const tok::Tokenizer t =
      tok::Tokenizer::from_json(prep.file_overrides["tokenizer.json"].get<std::string>(),
                                prep.file_overrides["tokenizer_config.json"].get<std::string>(), "prepared");
  SftTokenization st;
  st.tokenizer = &t;
  st.eos_token = *t.id_to_token(prep.eos_id);
  st.pad_id = prep.pad_id;
  st.max_len = r.ref["model_max_length"].get<int64_t>();
  for (const char* file : {"records.json", "records.jsonl"}) {
    SftStats stats;
    const Dataset d =
        sft_dataset(test::source_dir() + "/tests/data/sft/" + file, st, prep.vocab_size, &stats);
    const auto& examples = r.ref["examples"];
    ASSERT_EQ(d.size(), static_cast<int64_t>(examples.size())) << file;
    for (size_t i = 0; i < examples.size(); ++i) {
      const TokenBatch b = d.batch({static_cast<int64_t>(i)});
      EXPECT_EQ(b.input_ids, examples[i]["input_ids"].get<std::vector<int32_t>>())
          << file << " record " << i + 1;
      EXPECT_EQ(b.labels, examples[i]["labels"].get<std::vector<int32_t>>()) << file << " record " << i + 1;
    }
    const TokenBatch b = d.batch({0, 1});  // padded as DataCollatorForSupervisedDataset
    std::vector<int32_t> ids, labels;
    for (const auto& row : r.ref["batch_0_1"]["input_ids"])
      for (int32_t v : row) ids.push_back(v);
    for (const auto& row : r.ref["batch_0_1"]["labels"])
      for (int32_t v : row) labels.push_back(v);
    EXPECT_EQ(b.input_ids, ids) << file;
    EXPECT_EQ(b.labels, labels) << file;
    EXPECT_EQ(stats.records, 4);
    EXPECT_EQ(stats.without_target, 1);
  }
}

// The same records through the byte-level tokenizers (Llama-3: "[PAD]" and "<unk>" added; Qwen3: its own pad
// token, no BOS, "<s>" and "<unk>" already in its vocabulary): the examples as transformers builds them.
void expect_transformers_examples(const std::string& name) {
  const auto refs =
      nlohmann::json::parse(test::read_text(test::source_dir() + "/tests/data/sft/tokenizers.json"));
  const int64_t max_len = nlohmann::json::parse(test::read_text(
      test::source_dir() + "/tests/data/sft/reference.json"))["model_max_length"]
                              .get<int64_t>();
  const auto& ref = refs.at(name);
  const fs::path dir = mistral_tokenizer_dir().parent_path() / name;
  if (!fs::exists(dir / "tokenizer.json")) GTEST_SKIP() << "no tokenizer at " << dir;
  const tok::Tokenizer base = tok::Tokenizer::load(dir.string());
  const PreparedTokenizer prep = prepare_special_tokens(dir.string(), base);
  EXPECT_EQ(prep.pad_id, ref["pad_token_id"].get<int32_t>()) << name;
  EXPECT_EQ(prep.vocab_size, ref["vocab_size"].get<int64_t>()) << name;
  std::unique_ptr<tok::Tokenizer> grown;
  if (prep.file_overrides.contains("tokenizer.json"))
    grown = std::make_unique<tok::Tokenizer>(
        tok::Tokenizer::from_json(prep.file_overrides["tokenizer.json"].get<std::string>(),
                                  prep.file_overrides["tokenizer_config.json"].get<std::string>(), name));
  SftTokenization st;
  st.tokenizer = grown ? grown.get() : &base;
  st.eos_token = *st.tokenizer->id_to_token(prep.eos_id);
  EXPECT_EQ(st.eos_token, ref["eos_token"].get<std::string>()) << name;
  st.pad_id = prep.pad_id;
  st.max_len = max_len;
  const Dataset d =
      sft_dataset(test::source_dir() + "/tests/data/sft/records.json", st, prep.vocab_size, nullptr);
  ASSERT_EQ(d.size(), static_cast<int64_t>(ref["examples"].size())) << name;
  for (size_t i = 0; i < ref["examples"].size(); ++i) {
    const TokenBatch b = d.batch({static_cast<int64_t>(i)});
    EXPECT_EQ(b.input_ids, ref["examples"][i]["input_ids"].get<std::vector<int32_t>>())
        << name << " record " << i + 1;
    EXPECT_EQ(b.labels, ref["examples"][i]["labels"].get<std::vector<int32_t>>())
        << name << " record " << i + 1;
  }
}

TEST(SftReference, Llama3TokenizerGivesTransformersExamples) {
  expect_transformers_examples("llama3");
}
TEST(SftReference, Qwen3TokenizerGivesTransformersExamples) {
  expect_transformers_examples("qwen3");
}

// `miniseq sft` (and its long name) for one step of batch 2 x 2 over the four records: Hugging Face Trainer's
// loss.
TEST(SftReference, FirstStepLossEqualsTransformers) {
  if (!fs::exists(mistral_tokenizer_dir() / "tokenizer.json"))
    GTEST_SKIP() << "no Mistral tokenizer at " << mistral_tokenizer_dir();
  test::TempDir tmp;
  const Reference r = reference_model(tmp);
  const double want = r.ref["loss"].get<double>();
  // Full fine-tuning, and LoRA+ (LongLoRA's default, as in its supervised-fine-tune.py): PEFT's B = 0 leaves the
  // first step's loss the base model's.
  for (const char* cmd : {"sft", "supervised-fine-tune"}) {
    const bool lora = std::string(cmd) == "supervised-fine-tune";
    const std::string file = std::string(cmd) == "sft" ? "records.json" : "records.jsonl";
    const std::string out = tmp.file(std::string("out-") + cmd);
    const auto run = test::run_miniseq(
        std::string(cmd) + " --model_name_or_path " + r.model + " --data_path " + test::source_dir() +
        "/tests/data/sft/" + file + " --output_dir " + out + " --model_max_length " +
        std::to_string(r.ref["model_max_length"].get<int64_t>()) + " --per_device_train_batch_size 2" +
        " --gradient_accumulation_steps 2 --max_steps 1 --learning_rate 0 --logging_steps 1 --save_strategy "
        "no --use_full_attn True" +  // transformers' full attention (S²-Attn: docs/s2attn.md)
        (lora ? " --low_rank_training True --trainable_params embed,norm" : " --low_rank_training False"));
    EXPECT_EQ(fs::exists(out + "/adapter_model.safetensors"), lora) << run.out;
    EXPECT_EQ(fs::exists(out + "/trainable_params.safetensors"), lora) << run.out;
    EXPECT_EQ(fs::exists(out + "/model.safetensors"), !lora) << run.out;
    ASSERT_EQ(run.status, 0) << run.out;
    EXPECT_NE(run.out.find("supervised fine-tuning data: 4 records"), std::string::npos) << run.out;
    EXPECT_NE(
        run.out.find("records are longer than --model_max_length 192 and truncated to it, as LongLoRA does"),
        std::string::npos)
        << run.out;
    EXPECT_NE(run.out.find("1 record keeps no response token"), std::string::npos) << run.out;
    EXPECT_NE(run.out.find("tokenizer: added [PAD]"), std::string::npos) << run.out;
    const auto loss = test::logged(out, "loss");
    ASSERT_EQ(loss.size(), 1u);
    EXPECT_NEAR(loss[0], want, 1e-5 * want) << cmd;
  }
}

TEST(SftCli, ErrorsNameTheProblem) {
  test::TempDir tmp;
  const std::string model = test::train_test_model().string();  // no tokenizer.json
  test::write_text(tmp.file("d.json"), "[{\"instruction\": \"a\", \"output\": \"b\"}]");
  auto run = test::run_miniseq("sft --model_name_or_path " + model + " --data_path " + tmp.file("d.json") +
                               " --output_dir " + tmp.file("o"));
  EXPECT_EQ(run.status, 2);
  EXPECT_NE(run.out.find("has no tokenizer.json"), std::string::npos) << run.out;
  run = test::run_miniseq("sft --preset demo");
  EXPECT_EQ(run.status, 2);
  EXPECT_NE(run.out.find("--preset is a `miniseq train` flag"), std::string::npos) << run.out;
  run = test::run_miniseq("supervised-fine-tune --model_name_or_path " + model);
  EXPECT_EQ(run.status, 2);
  EXPECT_NE(run.out.find("--data_path is required (a JSON list or JSONL"), std::string::npos) << run.out;
  run = test::run_miniseq("sft --help");
  EXPECT_EQ(run.status, 0);
  EXPECT_NE(run.out.find("--gradient_accumulation_steps"), std::string::npos)
      << run.out;  // the train flag table
  EXPECT_NE(run.out.find("LongAlpaca"), std::string::npos) << run.out;
}

// ---- the training loop over examples (golden tiny Llama, vocabulary 131) ----

Dataset random_examples(int n, int64_t max_len, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<int32_t>> ids;
  std::vector<int64_t> prompt;
  for (int i = 0; i < n; ++i) {
    const auto len = static_cast<int64_t>(4 + rng.below(static_cast<uint64_t>(max_len - 3)));
    std::vector<int32_t> e(static_cast<size_t>(len));
    for (auto& x : e) x = static_cast<int32_t>(4 + rng.below(127));
    ids.push_back(e);
    prompt.push_back(static_cast<int64_t>(1 + rng.below(static_cast<uint64_t>(len - 2))));
  }
  return Dataset::from_examples(ids, prompt, max_len, /*pad_id=*/3);
}

// Right padding changes nothing for the real tokens (causal attention) and the loss is the mean over the
// step's targets: 4 x 1 accumulation (each example unpadded) equals one batch of 4 padded to the longest.
TEST(SftLoop, PaddingAndAccumulationDoNotChangeTheStep) {
  test::TempDir tmp;
  const Dataset data = random_examples(4, 24, 3);
  TrainArgs a =
      test::parse_train_args({"--max_steps", "1", "--learning_rate", "1e-3", "--save_strategy", "no",
                              "--logging_steps", "1", "--model_max_length", "24", "--seed", "5"});
  a.per_device_train_batch_size = 1, a.gradient_accumulation_steps = 4, a.output_dir = tmp.file("ga");
  const TrainResult r1 = run_training(test::tiny_setup(a, data));
  a.per_device_train_batch_size = 4, a.gradient_accumulation_steps = 1, a.output_dir = tmp.file("batch");
  const TrainResult r2 = run_training(test::tiny_setup(a, data));
  EXPECT_NEAR(r1.last_loss, r2.last_loss, 1e-6 * r2.last_loss);
  // The same gradient: its global norm (AdamW's first step is nearly sign(g), so the weights are no measure).
  const double g1 = test::logged(tmp.file("ga"), "grad_norm").at(0),
               g2 = test::logged(tmp.file("batch"), "grad_norm").at(0);
  EXPECT_NEAR(g1, g2, 1e-6 * g2);
}

// Full fine-tuning learns, and a resumed run is bit-identical (the data position is in trainer_state.json).
TEST(SftLoop, FullFineTuningLearnsAndResumeIsBitExact) {
  test::TempDir tmp;
  const Dataset data = random_examples(5, 20, 4);
  TrainArgs a = test::parse_train_args({"--max_steps", "8", "--learning_rate", "1e-2", "--logging_steps", "1",
                                        "--model_max_length", "20", "--per_device_train_batch_size", "2",
                                        "--save_steps", "3", "--lr_scheduler_type", "constant"});
  a.output_dir = tmp.file("straight");
  const TrainResult full = run_training(test::tiny_setup(a, data));
  EXPECT_EQ(full.steps, 8);
  const auto losses = test::logged(tmp.file("straight"), "loss");
  ASSERT_EQ(losses.size(), 8u);
  EXPECT_LT(losses[6] + losses[7], 0.8 * (losses[0] + losses[1]));  // 3 epochs over 5 examples
  a.output_dir = tmp.file("resumed");
  a.max_steps = 3;  // stops inside the second epoch (3 micro-batches per epoch)
  run_training(test::tiny_setup(a, data));
  a.max_steps = 8;
  a.resume_from_checkpoint = "True";
  const TrainResult resumed = run_training(test::tiny_setup(a, data));
  EXPECT_EQ(resumed.last_loss, full.last_loss);  // bitwise
  EXPECT_EQ(losses, test::logged(tmp.file("resumed"), "loss"));
  const auto wa = test::read_weights(tmp.file("straight")), wb = test::read_weights(tmp.file("resumed"));
  for (const auto& [name, v] : wa) EXPECT_EQ(v, wb.at(name)) << name;
}

// LoRA+ supervised fine-tuning (LongLoRA's supervised-fine-tune.py default): learns, saves the adapter and the
// trainable params only, and a resumed run is bit-identical.
TEST(SftLoop, LoraLearnsAndResumeIsBitExact) {
  test::TempDir tmp;
  const Dataset data = random_examples(5, 20, 4);
  TrainArgs a = test::parse_train_args({"--max_steps", "8", "--learning_rate", "1e-2", "--logging_steps", "1",
                                        "--model_max_length", "20", "--per_device_train_batch_size", "2",
                                        "--save_steps", "3", "--lr_scheduler_type", "constant",
                                        "--low_rank_training", "True", "--trainable_params", "embed,norm"});
  a.output_dir = tmp.file("straight");
  const TrainResult full = run_training(test::tiny_setup(a, data));
  EXPECT_EQ(full.steps, 8);
  const auto losses = test::logged(tmp.file("straight"), "loss");
  ASSERT_EQ(losses.size(), 8u);
  EXPECT_LT(losses[6] + losses[7], 0.9 * (losses[0] + losses[1]));  // 3 epochs over 5 examples
  EXPECT_FALSE(fs::exists(tmp.file("straight") + "/model.safetensors"));
  a.output_dir = tmp.file("resumed");
  a.max_steps = 3;
  run_training(test::tiny_setup(a, data));
  a.max_steps = 8;
  a.resume_from_checkpoint = "True";
  const TrainResult resumed = run_training(test::tiny_setup(a, data));
  EXPECT_EQ(resumed.last_loss, full.last_loss);  // bitwise
  EXPECT_EQ(losses, test::logged(tmp.file("resumed"), "loss"));
  const auto wa = test::read_lora_dir(tmp.file("straight")), wb = test::read_lora_dir(tmp.file("resumed"));
  ASSERT_EQ(wa.size(), 22u);
  for (const auto& [name, v] : wa) EXPECT_EQ(v, wb.at(name)) << name;
}

}  // namespace
}  // namespace miniseq
