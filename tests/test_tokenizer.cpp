// Tokenizer unit tests on small tokenizer.json fixtures built here: BPE merge order, byte fallback and unk,
// added tokens and their flags, the Metaspace and ByteLevel paths, decoders, UTF-8 repair, NFC, errors for
// malformed files, and the `miniseq tokenize` command. The comparison with Hugging Face on real vocabularies
// is in test_tokenizer_reference.cpp.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "miniseq/core/check.h"
#include "miniseq/io/tokenizer/tokenizer.h"
#include "miniseq/io/tokenizer/unicode_nfc.h"
#include "miniseq/io/tokenizer/utf8.h"
#include "support/tmpdir.h"

using miniseq::tok::Tokenizer;
using nlohmann::json;
using Ids = std::vector<int32_t>;

namespace {

// A SentencePiece-style BPE: "▁" prepended, spaces to "▁", byte fallback for characters outside the
// vocabulary.
json spm_json() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2},    {"\u2581", 3},   {"a", 4},   {"b", 5},
                {"c", 6},     {"ab", 7},  {"\u2581a", 8}, {"\u2581ab", 9}, {"aa", 10}, {"bc", 11}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 12 + b;
  }
  return {{"version", "1.0"},
          {"added_tokens",
           {{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
            {{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
            {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}}},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", "\u2581"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single",
             {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "<unk>"},
            {"fuse_unk", true},
            {"byte_fallback", true},
            {"vocab", vocab},
            {"merges", {"a b", "\u2581 a", "\u2581a b", "a a", "b c"}}}}};
}

Tokenizer make(const json& j, const std::string& config = "") {
  return Tokenizer::from_json(j.dump(), config, "test");
}

std::string error_of(const json& j) {
  try {
    make(j);
  } catch (const miniseq::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Tokenizer, BpeMergesByRankLeftmostFirst) {
  const Tokenizer t = make(spm_json());
  EXPECT_EQ(t.encode("ab", false), (Ids{3, 7}));    // ▁ a b: "a b" (rank 0) before "▁ a" (rank 1)
  EXPECT_EQ(t.encode("aaa", false), (Ids{8, 10}));  // ▁a a a: "▁ a" (rank 1) before "a a" (rank 3)
  EXPECT_EQ(t.encode("xaaa", false), (Ids{3, 12 + 'x', 10, 4}));  // a a a: leftmost "a a" first
  EXPECT_EQ(t.encode("abc", false), (Ids{3, 7, 6}));              // "b c" (rank 4) loses its "b" to "a b"
  EXPECT_EQ(t.encode("ab"), (Ids{1, 3, 7}));                      // TemplateProcessing adds <s>
}

TEST(Tokenizer, ByteFallbackAndUnknown) {
  json j = spm_json();
  const Tokenizer t = make(j);
  // "é" is not in the vocabulary: its two UTF-8 bytes become <0xC3> <0xA9>.
  EXPECT_EQ(t.encode("\u00e9", false), (Ids{3, 12 + 0xC3, 12 + 0xA9}));
  EXPECT_EQ(t.decode(t.encode("\u00e9 ab")), "<s> \u00e9 ab");  // Strip only cuts a leading space
  EXPECT_EQ(t.decode(t.encode("\u00e9 ab"), /*skip_special_tokens=*/true), "\u00e9 ab");
  // A lone byte token that is not UTF-8 decodes to U+FFFD.
  EXPECT_EQ(t.decode({12 + 0xC3, 4}),
            "\xEF\xBF\xBD"
            "a");

  // Without byte fallback: unknown characters become <unk>, fused into one when fuse_unk.
  j["model"]["byte_fallback"] = false;
  EXPECT_EQ(make(j).encode("xyz", false), (Ids{3, 0}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(make(j).encode("xyz", false), (Ids{3, 0, 0, 0}));
  // Without an unk token they are dropped, as Hugging Face does.
  j["model"]["unk_token"] = nullptr;
  EXPECT_EQ(make(j).encode("xay", false), (Ids{8}));
}

TEST(Tokenizer, AddedTokensSplitTheTextFirst) {
  const Tokenizer t = make(spm_json());
  // Each piece between added tokens is normalized on its own (so each gets its "▁"), as Hugging Face.
  EXPECT_EQ(t.encode("a</s>b", false), (Ids{8, 2, 3, 5}));
  EXPECT_EQ(t.encode("<s><s>", false), (Ids{1, 1}));
  EXPECT_EQ(t.encode("<s", false), (Ids{3, 12 + '<', 12 + 's'}));

  json j = spm_json();
  j["added_tokens"].push_back({{"id", 300},
                               {"content", "<sep>"},
                               {"special", false},
                               {"normalized", false},
                               {"lstrip", true},
                               {"rstrip", true}});
  j["added_tokens"].push_back({{"id", 301}, {"content", "<sep>x"}, {"special", true}, {"normalized", false}});
  j["added_tokens"].push_back(
      {{"id", 302}, {"content", "cc"}, {"special", false}, {"normalized", false}, {"single_word", true}});
  const Tokenizer u = make(j);
  EXPECT_EQ(u.encode("a  <sep>  b", false), (Ids{8, 300, 3, 5}));  // lstrip/rstrip eat the spaces
  EXPECT_EQ(u.encode("<sep>xa", false), (Ids{301, 8}));            // longest match wins
  EXPECT_EQ(u.encode("a cc", false), (Ids{8, 3, 302}));            // single word: matched
  EXPECT_EQ(u.encode("acc", false), (Ids{8, 6, 6}));               // inside a word: not matched
  EXPECT_EQ(u.vocab_size(), 303);
  EXPECT_TRUE(u.is_special(301));
  EXPECT_FALSE(u.is_special(300));
  EXPECT_EQ(u.decode({300, 301, 302}, /*skip_special_tokens=*/true), "<sep>cc");
}

TEST(Tokenizer, ConfigFlagsOverrideTheTemplate) {
  const std::string cfg = R"({"add_bos_token": false, "add_eos_token": true, "bos_token": "<s>",
                              "eos_token": {"content": "</s>"}})";
  const Tokenizer t = make(spm_json(), cfg);
  EXPECT_EQ(t.encode("a"), (Ids{8, 2}));
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.special_tokens_source(), "tokenizer_config.json add_bos_token/add_eos_token");
  EXPECT_EQ(make(spm_json()).special_tokens_source(), "tokenizer.json post_processor");
}

// A byte-level BPE (GPT-2 alphabet) with a Llama-3-like regex and ignore_merges.
json byte_level_json() {
  json vocab = json::object();
  int next = 0;
  for (const char* t : {"!", "a", "b", "c", "\u0120", "\u010a", "ab", "\u0120a", "\u0120ab", "abc", "1", "2",
                        "3", "12", "123", "\u00c3", "\u00a9"})
    vocab[t] = next++;
  return {{"added_tokens", {{{"id", 100}, {"content", "<|end|>"}, {"special", true}, {"normalized", false}}}},
          {"normalizer", {{"type", "NFC"}}},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"},
               {"pattern",
                {{"Regex",
                  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                  "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                  "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
          {"post_processor", {{"type", "ByteLevel"}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"},
            {"ignore_merges", true},
            {"vocab", vocab},
            {"merges", json::array({json::array({"a", "b"}), json::array({"\u0120", "a"}),
                                    json::array({"\u0120a", "b"}), json::array({"1", "2"}),
                                    json::array({"12", "3"})})}}}};
}

TEST(Tokenizer, ByteLevelRegexAndIgnoreMerges) {
  const Tokenizer t = make(byte_level_json());
  EXPECT_EQ(t.encode("ab ab"), (Ids{6, 8}));
  EXPECT_EQ(t.encode("abc"), (Ids{9}));        // ignore_merges: the whole word is a token
  EXPECT_EQ(t.encode("12345"), (Ids{14}));     // "45": no tokens and no unk token, so dropped
  EXPECT_EQ(t.encode("1231"), (Ids{14, 10}));  // \p{N}{1,3}
  EXPECT_EQ(t.encode("a\n"), (Ids{1, 5}));
  EXPECT_EQ(t.encode("ab<|end|>a"), (Ids{6, 100, 1}));
  EXPECT_EQ(t.encode("\u00e9"), (Ids{15, 16}));   // é = C3 A9, both printable byte-level characters
  EXPECT_EQ(t.encode("e\u0301"), (Ids{15, 16}));  // NFC first
  EXPECT_EQ(t.decode(t.encode("ab ab\n")), "ab ab\n");
  EXPECT_EQ(t.decode({15}), "\xEF\xBF\xBD");  // a lone C3 byte is not UTF-8
}

TEST(Tokenizer, InvalidUtf8IsRepairedLikeHuggingFace) {
  using miniseq::tok::utf8_repair;
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_repair("a\xFF"
                        "b"),
            "a" + r + "b");
  EXPECT_EQ(utf8_repair("\xE2\x82"), r);                      // truncated sequence: one replacement
  EXPECT_EQ(utf8_repair("\xF0\x80"), r + r);                  // F0 needs 90..BF next
  EXPECT_EQ(utf8_repair("\xED\xA0\x80"), r + r + r);          // a surrogate is never valid
  EXPECT_EQ(utf8_repair("\xC0\xAF"), r + r);                  // overlong
  EXPECT_EQ(utf8_repair("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(utf8_repair("\xE2\x82\xAC"), "\xE2\x82\xAC");     // valid stays
  const Tokenizer t = make(byte_level_json());
  EXPECT_EQ(t.encode("ab\xC3(ab"), t.encode("ab" + r + "(ab"));
  EXPECT_EQ(t.encode(std::string("\x80\x80\xFE", 3)), t.encode(r + r + r));
}

TEST(Tokenizer, Nfc) {
  using miniseq::tok::nfc;
  EXPECT_EQ(nfc("e\u0301"), "\u00e9");
  EXPECT_EQ(nfc("a\u0323\u0302"), "\u1ead");  // canonical ordering, then composition
  EXPECT_EQ(nfc("a\u0302\u0323"), "\u1ead");
  EXPECT_EQ(nfc("\u212b"), "\u00c5");              // singleton decomposition
  EXPECT_EQ(nfc("\u0344"), "\u0308\u0301");        // composition exclusion
  EXPECT_EQ(nfc("\u1100\u1161\u11a8"), "\uac01");  // Hangul L V T
  EXPECT_EQ(nfc("\uac00\u11a8"), "\uac01");        // Hangul LV T
  EXPECT_EQ(nfc("\u0958"), "\u0915\u093c");        // excluded from composition
  EXPECT_EQ(nfc("\u1e9b\u0323"), "\u1e9b\u0323");
  EXPECT_EQ(nfc("caf\u00e9 \u4e2d\u6587 \U0001f600"), "caf\u00e9 \u4e2d\u6587 \U0001f600");
  EXPECT_TRUE(miniseq::tok::nfc_quick_check("Hello, caf\u00e9 \u4e2d"));
  EXPECT_FALSE(miniseq::tok::nfc_quick_check("e\u0301"));
}

TEST(Tokenizer, MalformedFilesNameTheField) {
  EXPECT_NE(error_of(json{{"version", "1.0"}}).find("\"model\" is missing"), std::string::npos);
  json j = spm_json();
  j["model"]["type"] = "Unigram";
  EXPECT_NE(error_of(j).find("model.type \"Unigram\" is not supported"), std::string::npos);
  j = spm_json();
  j["model"]["merges"].push_back("a zz");
  EXPECT_NE(error_of(j).find("model.merges[5]: token \"zz\" is not in"), std::string::npos) << error_of(j);
  j = spm_json();
  j["model"]["merges"].push_back("c c");
  EXPECT_NE(error_of(j).find("merged token \"cc\""), std::string::npos) << error_of(j);
  j = spm_json();
  j["model"].erase("vocab");
  EXPECT_NE(error_of(j).find("model.vocab"), std::string::npos);
  j = spm_json();
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_NE(error_of(j).find("normalizer.type: normalizer \"NFKC\" is not supported"), std::string::npos)
      << error_of(j);
  j = byte_level_json();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  EXPECT_NE(error_of(j).find("does not compile"), std::string::npos);
  EXPECT_NE(error_of(json::parse("[1]")).find("expected a JSON object"), std::string::npos);
  try {
    Tokenizer::from_json("{not json", "", "x/tokenizer.json");
    FAIL();
  } catch (const miniseq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("x/tokenizer.json: not valid JSON"), std::string::npos);
  }
}

TEST(Tokenizer, BatchMatchesSerial) {
  const Tokenizer t = make(byte_level_json());
  std::vector<std::string> docs;
  for (int i = 0; i < 500; ++i) docs.push_back(std::string(static_cast<size_t>(i % 37), 'a') + " ab 123 c\n");
  const auto batch = t.encode_batch(docs, true, 2);
  for (size_t i = 0; i < docs.size(); ++i) ASSERT_EQ(batch[i], t.encode(docs[i])) << i;
}

TEST(TokenizeCli, EncodesAndDecodesLines) {
  miniseq::test::TempDir dir;
  miniseq::test::write_text(dir.file("tokenizer.json"), spm_json().dump());
  miniseq::test::write_text(dir.file("in.txt"), "ab\naaa\n\u00e9\n");
  auto r = miniseq::test::run_miniseq("tokenize --tokenizer " + dir.path().string() + " --in " +
                                      dir.file("in.txt"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "[1,3,7]\n[1,8,10]\n[1,3,207,181]\n");
  miniseq::test::write_text(dir.file("ids.txt"), r.out);
  r = miniseq::test::run_miniseq("tokenize --tokenizer " + dir.path().string() +
                                 " --decode --skip_special_tokens " + "--in " + dir.file("ids.txt"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "ab\naaa\n\u00e9\n");
  r = miniseq::test::run_miniseq("tokenize --tokenizer " + dir.file("missing"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("tokenizer.json: not found"), std::string::npos) << r.out;
}

}  // namespace
