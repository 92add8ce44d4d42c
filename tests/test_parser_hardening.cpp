// Hostile input files (issue 20). Each input below once crashed a parser of outside input (segfault),
// exhausted memory or time, ended in "internal error" (exit 3) or gave a wrong result. Through the real
// program each must now end in one line `miniseq: error: FILE: what is wrong` with exit 2, no signal, and
// bounded memory (the program runs with its address space capped, so a regression fails here instead of
// swamping the machine).
//
// The same inputs, at a size fit for a repository, are the seeds of the fuzz corpora in
// tests/data/fuzz/<target>/ (fuzz/README.md). SeedsAreCurrent checks that they match the generators below and
// that each is rejected the same way; MINISEQ_WRITE_FUZZ_SEEDS=1 rewrites them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>

#include "support/run_limited.h"
#include "support/tmpdir.h"

namespace fs = std::filesystem;
using miniseq::test::LimitedRun;
using miniseq::test::TempDir;

namespace {

constexpr int64_t kMaxRssKb = 512 * 1024;  // the real commands use a few tens of MB on these inputs

// How a file reaches its parser: which command reads it, and under what name.
enum class Target { Config, Tokenizer, Safetensors, Index, JsonlGrad, JsonlEval, TokenBin, TrainerState };

struct Repro {
  const char* name;
  Target target;
  std::function<std::string(bool full)> make;  // full: the size found by the fuzzer; else a seed's size
  const char* fragment;                        // part of the expected message
};

const char* seed_dir(Target t) {
  switch (t) {
    case Target::Config:
      return "config";
    case Target::Tokenizer:
      return "tokenizer";
    case Target::Safetensors:
      return "safetensors";
    case Target::Index:
      return "safetensors_index";
    case Target::JsonlGrad:
    case Target::JsonlEval:
      return "jsonl";
    case Target::TokenBin:
      return "token_bin";
    case Target::TrainerState:
      return "trainer_state";
  }
  return "?";
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  out.reserve(s.size() * static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out += s;
  return out;
}
std::string nested_array(int depth, const std::string& inner = "1") {
  return repeat("[", depth) + inner + repeat("]", depth);
}

// A small valid BPE tokenizer.json with `extra` spliced in as further top-level keys (or model keys).
std::string tokenizer(const std::string& extra, const std::string& model_extra = "",
                      const std::string& vocab = R"("a": 0, "b": 1, "ab": 2)") {
  return R"({"model": {"type": "BPE", "vocab": {)" + vocab + R"(}, "merges": ["a b"])" + model_extra + "}" +
         extra + "}\n";
}
// A Sequence of `levels` nested Sequences of kind (pretokenizers / normalizers / decoders / processors).
std::string nested_sequence(const std::string& key, const std::string& list, int levels,
                            const std::string& leaf) {
  return ", \"" + key + "\": " + repeat(R"({"type": "Sequence", ")" + list + R"(": [)", levels) + leaf +
         repeat("]}", levels);
}
std::string config(const std::string& extra) {
  return R"({"model_type": "llama")" + extra + "}\n";
}

// A safetensors file: 8-byte little-endian header length, then the header.
std::string safetensors(const std::string& header) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i)
    s[static_cast<size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return s + header;
}
std::string trainer_state(const std::string& extra) {
  return R"({"global_step": 1, "epoch": 0, "micro_in_epoch": 1, "total_steps": 2, "seed": 42)" + extra +
         "}\n";
}

const std::vector<Repro>& repros() {
  static const std::vector<Repro> r = {
      // tokenizer.json
      {"bert_cls_empty", Target::Tokenizer,
       [](bool) {
         return tokenizer(R"(, "post_processor": {"type": "BertProcessing", "cls": [], "sep": []})");
       },
       "post_processor.cls: expected a [token, id] pair, found an array of 0 items"},
      {"bert_cls_one_item", Target::Tokenizer,
       [](bool) {
         return tokenizer(R"(, "post_processor": {"type": "BertProcessing", "cls": ["a"], "sep": ["b"]})");
       },
       "post_processor.cls: expected a [token, id] pair"},
      {"bert_cls_string", Target::Tokenizer,
       [](bool) {
         return tokenizer(R"(, "post_processor": {"type": "BertProcessing", "cls": "ab", "sep": "ab"})");
       },
       "post_processor.cls: expected an array, found the string \"ab\""},
      {"bert_id_outside_vocab", Target::Tokenizer,
       [](bool) {
         return tokenizer(
             R"(, "post_processor": {"type": "BertProcessing", "cls": ["a", 7], "sep": ["b", 1]})");
       },
       "post_processor.cls[1]: token id 7 is outside the vocabulary [0, 3)"},
      {"deep_pre_tokenizer_sequence", Target::Tokenizer,
       [](bool full) {
         return tokenizer(nested_sequence("pre_tokenizer", "pretokenizers", full ? 50000 : 200,
                                          R"({"type": "ByteLevel"})"));
       },
       "JSON nested more than 64 levels deep"},
      {"nested_pre_tokenizer_sequence", Target::Tokenizer,
       [](bool) {
         return tokenizer(nested_sequence("pre_tokenizer", "pretokenizers", 20, R"({"type": "ByteLevel"})"));
       },
       "Sequence nested more than 8 deep"},
      {"nested_normalizer_sequence", Target::Tokenizer,
       [](bool) { return tokenizer(nested_sequence("normalizer", "normalizers", 20, R"({"type": "NFC"})")); },
       "Sequence nested more than 8 deep"},
      {"nested_decoder_sequence", Target::Tokenizer,
       [](bool) { return tokenizer(nested_sequence("decoder", "decoders", 20, R"({"type": "Fuse"})")); },
       "Sequence nested more than 8 deep"},
      {"nested_post_processor_sequence", Target::Tokenizer,
       [](bool) {
         return tokenizer(nested_sequence("post_processor", "processors", 20, R"({"type": "ByteLevel"})"));
       },
       "Sequence nested more than 8 deep"},
      {"number_overflow", Target::Tokenizer, [](bool) { return tokenizer("", R"(, "dropout": 4e456)"); },
       "beyond the range of a double"},
      {"post_processor_type_number", Target::Tokenizer,
       [](bool) { return tokenizer(R"(, "post_processor": {"type": 1})"); },
       "post_processor.type: expected a string, found the number 1"},
      {"decoder_replace_pattern_number", Target::Tokenizer,
       [](bool) {
         return tokenizer(R"(, "decoder": {"type": "Replace", "pattern": {"String": 1}, "content": " "})");
       },
       "decoder.pattern.String: expected a string, found the number 1"},
      {"split_behavior_number", Target::Tokenizer,
       [](bool) {
         return tokenizer(
             R"(, "pre_tokenizer": {"type": "Split", "pattern": {"String": "a"}, "behavior": 1})");
       },
       "pre_tokenizer.behavior: expected a string, found the number 1"},
      {"vocab_id_huge", Target::Tokenizer,
       [](bool) { return tokenizer("", "", R"("a": 2147483646, "b": 1, "ab": 2)"); },
       "model.vocab[\"a\"]: id must be an integer in [0, 2097151), found the number 2147483646"},
      {"template_ids_outside_vocab", Target::Tokenizer,
       [](bool) {
         return tokenizer(R"(, "post_processor": {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "special_tokens": {"<s>": {"id": "<s>", "ids": [-7, 999999], "tokens": ["<s>", "<s>"]}}})");
       },
       "special_tokens.<s>.ids[0]: token id -7 is outside the vocabulary [0, 3)"},
      {"added_token_id_int32_max", Target::Tokenizer,
       [](bool) {
         return tokenizer(R"(, "added_tokens": [{"id": 2147483647, "content": "<x>", "special": true}])");
       },
       "added_tokens[0].id: 2147483647 is outside the range [0, 2147483646]"},
      // config.json
      {"deep_array", Target::Config,
       [](bool full) { return config(", \"x\": " + nested_array(full ? 200000 : 200)); },
       "JSON nested more than 64 levels deep"},
      {"number_overflow", Target::Config, [](bool) { return config(R"(, "rms_norm_eps": 1e380)"); },
       "beyond the range of a double"},
      {"hidden_act_number", Target::Config, [](bool) { return config(R"(, "hidden_act": 1)"); },
       "\"hidden_act\" must be a string, found the number 1"},
      {"rope_type_number", Target::Config, [](bool) { return config(R"(, "rope_scaling": {"type": 1})"); },
       "rope_scaling.type must be a string"},
      {"layers_huge", Target::Config, [](bool) { return config(R"(, "num_hidden_layers": 2000000000)"); },
       "\"num_hidden_layers\" is 2000000000, beyond the 16384 that miniseq accepts"},
      {"head_dim_huge", Target::Config, [](bool) { return config(R"(, "head_dim": 4611686018427387904)"); },
       "\"head_dim\" is 4611686018427387904, beyond the 16384 that miniseq accepts"},
      {"vocab_uint64_max", Target::Config,
       [](bool) { return config(R"(, "vocab_size": 18446744073709551615)"); },
       "\"vocab_size\": 18446744073709551615 is outside the range"},
      // model.safetensors
      {"deep_shape", Target::Safetensors,
       [](bool full) {
         return safetensors(R"({"w": {"dtype": "F32", "shape": )" + nested_array(full ? 200000 : 200) +
                            R"(, "data_offsets": [0, 0]}})");
       },
       "JSON nested more than 64 levels deep"},
      {"number_overflow", Target::Safetensors,
       [](bool) {
         return safetensors(R"({"w": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 4]}})");
       },
       "beyond the range of a double"},
      // model.safetensors.index.json
      {"number_overflow", Target::Index,
       [](bool) { return R"({"metadata": {"total_size": 2e672}, "weight_map": {}})"; },
       "beyond the range of a double"},
      {"shard_name_too_long", Target::Index,
       [](bool) {
         return R"({"weight_map": {"model.embed_tokens.weight": ")" + std::string(300, 'a') +
                R"(.safetensors"}})";
       },
       "which is not a file in this directory"},
      // JSONL data: miniseq grad and miniseq eval
      {"deep_input_ids", Target::JsonlGrad,
       [](bool full) { return "{\"input_ids\": " + nested_array(full ? 200000 : 200) + "}\n"; },
       "x.jsonl:1: JSON nested more than 64 levels deep"},
      {"deep_input_ids", Target::JsonlEval,
       [](bool full) { return "{\"input_ids\": " + nested_array(full ? 200000 : 200) + "}\n"; },
       "x.jsonl:1: JSON nested more than 64 levels deep"},
      {"number_overflow", Target::JsonlGrad, [](bool) { return "{\"input_ids\": [1, 4E443]}\n"; },
       "x.jsonl:1: malformed JSON: number overflow"},
      {"id_uint64", Target::JsonlEval, [](bool) { return "{\"input_ids\": [1, 18446744073709551615]}\n"; },
       "x.jsonl:1: input_ids value 18446744073709551615 is outside the model's vocabulary"},
      // token .bin stream (uint32 ids)
      {"id_2pow31", Target::TokenBin, [](bool) { return std::string("\x01\0\0\0\0\0\0\x80\x02\0\0\0", 12); },
       "token 1 (byte offset 4) is 2147483648, outside the model's vocabulary"},
      // trainer_state.json of a checkpoint
      {"number_overflow", Target::TrainerState, [](bool) { return R"({"global_step": 1e400})"; },
       "beyond the range of a double"},
      {"seed_string", Target::TrainerState,
       [](bool) {
         return R"({"global_step": 1, "epoch": 0, "micro_in_epoch": 1, "total_steps": 2, "seed": "x"})";
       },
       "trainer_state.json: seed: expected a non-negative integer, found the string \"x\""},
      {"log_history_loss_string", Target::TrainerState,
       [](bool) { return trainer_state(R"(, "log_history": [{"step": 1, "loss": "x"}])"); },
       "trainer_state.json: log_history[0].loss: expected a number, found the string \"x\""},
      {"log_history_loss_without_step", Target::TrainerState,
       [](bool) { return trainer_state(R"(, "log_history": [{"loss": 1.5}])"); },
       "trainer_state.json: log_history[0].step: missing"},
      {"deep_log_history", Target::TrainerState,
       [](bool full) { return trainer_state(", \"log_history\": " + nested_array(full ? 200000 : 200)); },
       "JSON nested more than 64 levels deep"},
  };
  return r;
}

// Everything a target needs around the hostile file; built once per test.
class Harness {
 public:
  Harness() { model_ = tmp_.file("model"); }

  const std::string& model() {
    if (!model_made_) {
      auto w = miniseq::test::run_miniseq("tiny-model --out " + model_);
      EXPECT_EQ(w.status, 0) << w.out;
      model_made_ = true;
    }
    return model_;
  }

  // A checkpoint directory of a short demo run (for trainer_state.json).
  const std::string& checkpoint() {
    if (checkpoint_.empty()) {
      const std::string out = tmp_.file("run");
      auto w = miniseq::test::run_miniseq("train --preset demo --output_dir " + out +
                                          " --max_steps 1 --save_steps 1 --model_max_length 64");
      EXPECT_EQ(w.status, 0) << w.out;
      checkpoint_ = out + "/checkpoint-1";
      EXPECT_TRUE(fs::exists(checkpoint_ + "/trainer_state.json")) << w.out;
    }
    return checkpoint_;
  }

  // Writes the content where the target reads it and runs the command; `file` gets the name the message must
  // show.
  LimitedRun run(Target t, const std::string& content, std::string& file) {
    const std::string case_dir = tmp_.file("case" + std::to_string(n_++));
    fs::create_directories(case_dir);
    auto put = [&](const std::string& name) {
      file = case_dir + "/" + name;
      miniseq::test::write_text(file, content);
    };
    auto model_copy = [&] {  // a model directory whose config.json is fine
      fs::copy_file(model() + "/config.json", case_dir + "/config.json");
    };
    switch (t) {
      case Target::Config:
        put("config.json");
        return miniseq::test::run_miniseq_limited({"inspect", case_dir});
      case Target::Tokenizer:
        put("tokenizer.json");
        miniseq::test::write_text(case_dir + "/in.txt", "ab a b\n");
        return miniseq::test::run_miniseq_limited(
            {"tokenize", "--tokenizer", case_dir, "--in", case_dir + "/in.txt"});
      case Target::Safetensors:
        model_copy();
        put("model.safetensors");
        return miniseq::test::run_miniseq_limited({"inspect", case_dir});
      case Target::Index:
        model_copy();
        put("model.safetensors.index.json");
        return miniseq::test::run_miniseq_limited({"inspect", case_dir});
      case Target::JsonlGrad:
        put("x.jsonl");
        return miniseq::test::run_miniseq_limited(
            {"grad", "--model", model(), "--data", file, "--out", case_dir + "/g.safetensors"});
      case Target::JsonlEval:
        put("x.jsonl");
        return miniseq::test::run_miniseq_limited(
            {"eval", "--model", model(), "--data", file, "--seq_len", "4", "--progress", "False"});
      case Target::TokenBin:
        put("x.bin");
        return miniseq::test::run_miniseq_limited({"eval", "--model", model(), "--data", file,
                                                   "--token_dtype", "uint32", "--seq_len", "4", "--progress",
                                                   "False"});
      case Target::TrainerState: {
        const std::string cp = case_dir + "/run/checkpoint-1";
        fs::create_directories(case_dir + "/run");
        fs::copy(checkpoint(), cp, fs::copy_options::recursive);
        file = cp + "/trainer_state.json";
        miniseq::test::write_text(file, content);
        return miniseq::test::run_miniseq_limited(
            {"train", "--preset", "demo", "--output_dir", case_dir + "/run", "--max_steps", "2",
             "--save_steps", "1", "--model_max_length", "64", "--resume_from_checkpoint", cp});
      }
    }
    return {};
  }

 private:
  TempDir tmp_;
  std::string model_, checkpoint_;
  bool model_made_ = false;
  int n_ = 0;
};

void expect_user_error(const LimitedRun& r, const std::string& file, const std::string& fragment) {
  EXPECT_EQ(r.signal, 0) << "killed by signal " << r.signal << ": " << r.out.substr(0, 2000);
  EXPECT_EQ(r.status, 2) << r.out.substr(0, 2000);
  EXPECT_EQ(r.out.find("internal error"), std::string::npos) << r.out.substr(0, 2000);
  const size_t e = r.out.find("miniseq: error: ");
  ASSERT_NE(e, std::string::npos) << r.out.substr(0, 2000);
  const std::string msg = r.out.substr(e);
  EXPECT_NE(msg.find(file), std::string::npos) << "the message names " << file << ": " << msg.substr(0, 2000);
  EXPECT_NE(msg.find(fragment), std::string::npos)
      << "expected \"" << fragment << "\" in: " << msg.substr(0, 2000);
  EXPECT_LT(msg.size(), 1000u) << "the message quotes a short piece of the input at most: "
                               << msg.substr(0, 2000);
  EXPECT_LT(r.max_rss_kb, kMaxRssKb) << "peak RSS " << r.max_rss_kb << " KB";
}

void run_target(Target t, bool full) {
  Harness h;
  int n = 0;
  for (const Repro& rep : repros()) {
    if (rep.target != t) continue;
    SCOPED_TRACE(std::string(seed_dir(t)) + "/" + rep.name);
    std::string file;
    expect_user_error(h.run(t, rep.make(full), file), file, rep.fragment);
    ++n;
  }
  EXPECT_GT(n, 0);
}

}  // namespace

TEST(ParserHardening, TokenizerJson) {
  run_target(Target::Tokenizer, /*full=*/true);
}
TEST(ParserHardening, ConfigJson) {
  run_target(Target::Config, /*full=*/true);
}
TEST(ParserHardening, SafetensorsHeader) {
  run_target(Target::Safetensors, /*full=*/true);
}
TEST(ParserHardening, SafetensorsIndex) {
  run_target(Target::Index, /*full=*/true);
}
TEST(ParserHardening, JsonlForGrad) {
  run_target(Target::JsonlGrad, /*full=*/true);
}
TEST(ParserHardening, JsonlForEval) {
  run_target(Target::JsonlEval, /*full=*/true);
}
TEST(ParserHardening, TokenBinStream) {
  run_target(Target::TokenBin, /*full=*/true);
}
TEST(ParserHardening, TrainerStateJson) {
  run_target(Target::TrainerState, /*full=*/true);
}

// A Split pre-tokenizer that removes every match leaves pieces with no ids; the merge cache once copied them
// from a null pointer (undefined behaviour that only the sanitizers see). The tokenizer is valid: it must
// simply work.
TEST(ParserHardening, SplitRemovedEncodes) {
  TempDir tmp;
  miniseq::test::write_text(
      tmp.file("tokenizer.json"),
      tokenizer(
          R"(, "pre_tokenizer": {"type": "Split", "pattern": {"String": "a"}, "behavior": "Removed"})"));
  miniseq::test::write_text(tmp.file("in.txt"), "abab\naaa\nc\n");
  auto r = miniseq::test::run_miniseq_limited(
      {"tokenize", "--tokenizer", tmp.path().string(), "--in", tmp.file("in.txt")});
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "[1,1]\n[]\n[]\n");
}

// The committed fuzz seeds are exactly these inputs at seed size, and each is rejected like the full-size
// one.
TEST(ParserHardening, SeedsAreCurrent) {
  const fs::path root = fs::path(miniseq::test::source_dir()) / "tests/data/fuzz";
  const bool write = std::getenv("MINISEQ_WRITE_FUZZ_SEEDS") != nullptr;
  Harness h;
  for (const Repro& rep : repros()) {
    const std::string dir = seed_dir(rep.target);
    const fs::path seed = root / dir / rep.name;
    SCOPED_TRACE(seed.string());
    const std::string content = rep.make(/*full=*/false);
    if (write) {
      fs::create_directories(seed.parent_path());
      miniseq::test::write_text(seed.string(), content);
    }
    // grad and eval share the jsonl corpus (and one seed where the input is the same).
    ASSERT_TRUE(fs::exists(seed)) << "missing seed; run with MINISEQ_WRITE_FUZZ_SEEDS=1";
    EXPECT_EQ(miniseq::test::read_text(seed.string()), content)
        << "stale seed; run with MINISEQ_WRITE_FUZZ_SEEDS=1";
    std::string file;
    expect_user_error(h.run(rep.target, content, file), file, rep.fragment);
  }
}
