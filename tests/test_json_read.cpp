// jsonio::parse_ordered: the one-pass ordered reader that rewrites tokenizer files keeping their key order.
#include <gtest/gtest.h>

#include <string>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"

namespace miniseq {
namespace {

using ojson = nlohmann::ordered_json;

TEST(ParseOrdered, KeepsKeyOrderAndEqualsNlohmannsOwnOrderedParse) {
  const std::string text = R"({"z": 1, "a": [true, null, -3, 18446744073709551615, 2.5, "s",
    {"y": {}, "b": []}], "m": {"k2": "v", "k1": {"deep": [[1], [2, {"x": "\u00e9"}]]}}, "": 0})";
  const ojson mine = jsonio::parse_ordered(text, "t.json");
  const ojson theirs = ojson::parse(text);
  EXPECT_EQ(mine.dump(), theirs.dump());
  EXPECT_EQ(mine.dump(2), theirs.dump(2));
  EXPECT_EQ(mine.begin().key(), "z");
  EXPECT_EQ(mine["m"].begin().key(), "k2");
}

TEST(ParseOrdered, ARepeatedKeyKeepsItsFirstPlaceAndTheLastValue) {
  const ojson j = jsonio::parse_ordered(R"({"a": 1, "b": {"c": 2}, "a": {"d": [3]}})", "t.json");
  EXPECT_EQ(j.dump(), R"({"a":{"d":[3]},"b":{"c":2}})");
  EXPECT_EQ(j.dump(), ojson::parse(R"({"a": 1, "b": {"c": 2}, "a": {"d": [3]}})").dump());
}

TEST(ParseOrdered, ScalarsAndEmptyContainersAtTheTop) {
  EXPECT_EQ(jsonio::parse_ordered("7", "t").dump(), "7");
  EXPECT_EQ(jsonio::parse_ordered("[]", "t").dump(), "[]");
  EXPECT_EQ(jsonio::parse_ordered(" {} ", "t").dump(), "{}");
}

TEST(ParseOrdered, AVocabularySizedObjectKeepsItsOrder) {
  std::string text = "{\"vocab\": {";
  constexpr int n = 150000;  // a Llama-3 vocabulary; nlohmann's ordered insert is quadratic in it
  for (int i = n - 1; i >= 0; --i)
    text += "\"t" + std::to_string(i) + "\": " + std::to_string(i) + (i ? ", " : "");
  text += "}}";
  const ojson j = jsonio::parse_ordered(text, "tokenizer.json");
  const ojson& v = j["vocab"];
  ASSERT_EQ(v.size(), static_cast<size_t>(n));
  EXPECT_EQ(v.begin().key(), "t" + std::to_string(n - 1));
  EXPECT_EQ((--v.end()).key(), "t0");
  EXPECT_EQ(v.at("t77").get<int>(), 77);
}

TEST(ParseOrdered, ErrorsNameTheFile) {
  for (const char* bad : {"{\"a\": }", "[1, 2", "{\"a\": 1} x", "1e999", "{\"a\" 1}"}) {
    try {
      jsonio::parse_ordered(bad, "dir/tokenizer.json");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("dir/tokenizer.json: malformed JSON"), std::string::npos)
          << e.what();
    }
  }
  try {
    jsonio::parse_ordered("[1e999]", "t.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("beyond the range of a double"), std::string::npos) << e.what();
  }
  EXPECT_THROW(jsonio::parse_ordered(std::string(100, '[') + std::string(100, ']'), "t.json"), Error);
}

}  // namespace
}  // namespace miniseq
