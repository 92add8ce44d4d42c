// Reading JSON that comes from outside (config.json, tokenizer.json, safetensors headers and indexes, JSONL
// data, trainer_state.json). Every parser goes through here so that a bad file ends in one miniseq::Error
// naming the file, never in a signal, an nlohmann exception ("internal error") or unbounded memory:
//  - parse(): nesting is limited to kMaxJsonDepth before nlohmann sees the text (its copies and dump()
//  recurse),
//    and every nlohmann error (syntax, a number beyond double range) becomes "<where>: <what>".
//  - typed accessors: the expected type, where (file and key path) and what was found, instead of raw
//  get<T>().
//  - describe() / excerpt(): messages quote at most a short piece of the input.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace miniseq::jsonio {

using nlohmann::json;

// No real config, tokenizer or data record comes near this; nlohmann recurses once per level when copying.
constexpr int kMaxJsonDepth = 64;

// Parses text; `where` names it in errors ("model/config.json", "data.jsonl:12"), `what` says what is wrong
// with text that does not parse. The callback, if any, is nlohmann's parser callback.
json parse(std::string_view text, const std::string& where, const json::parser_callback_t& cb = nullptr,
           const char* what = "malformed JSON");
nlohmann::ordered_json parse_ordered(std::string_view text, const std::string& where);
// Reads a whole file and parses it; a file that cannot be read is an error naming it.
json parse_file(const std::string& path);

// Fails unless text nests arrays/objects at most kMaxJsonDepth deep (strings and escapes are skipped).
void check_depth(std::string_view text, const std::string& where);

// At most `max` bytes of s, with "..." when cut (never in the middle of a UTF-8 character).
std::string excerpt(std::string_view s, size_t max = 60);
// A short description of a value for messages: the string "ab", the number 1, true, null, an array of 3
// items, an object with 2 keys.
std::string describe(const json& v);

// Typed reads of one value. `where` names it ("tokenizer.json: post_processor.cls[1]"); each fails with
// "<where>: expected <what>, found <describe(v)>".
const std::string& as_string(const json& v, const std::string& where);
int64_t as_int(const json& v, const std::string& where, int64_t lo = std::numeric_limits<int64_t>::min(),
               int64_t hi = std::numeric_limits<int64_t>::max());
double as_number(const json& v, const std::string& where);
bool as_bool(const json& v, const std::string& where);
const json& as_array(const json& v, const std::string& where);
const json& as_object(const json& v, const std::string& where);

// The keys of one JSON object. A key that is absent or null takes the default; a required one is an error.
class Obj {
 public:
  // Fails unless j is an object. `file_level`: where is a file name and keys read "<file>: key", else
  // "<where>.key".
  Obj(const json& j, std::string where, bool file_level = false);

  const json& json_value() const { return j_; }
  const std::string& where() const { return where_; }
  std::string at(std::string_view key) const;  // the location of a key, for messages

  const json* find(const char* key) const;  // nullptr when absent or null
  bool has(const char* key) const { return find(key) != nullptr; }
  const json& get(const char* key) const;  // required

  std::string str(const char* key) const;
  std::string str(const char* key, std::string def) const;
  int64_t integer(const char* key, int64_t lo = std::numeric_limits<int64_t>::min(),
                  int64_t hi = std::numeric_limits<int64_t>::max()) const;
  int64_t integer_or(const char* key, int64_t def, int64_t lo = std::numeric_limits<int64_t>::min(),
                     int64_t hi = std::numeric_limits<int64_t>::max()) const;
  double number_or(const char* key, double def) const;
  std::optional<double> opt_number(const char* key) const;
  bool boolean(const char* key, bool def) const;
  const json& array(const char* key) const;  // required
  Obj object(const char* key) const;         // required

 private:
  const json& j_;
  std::string where_;
  bool file_level_;
};

}  // namespace miniseq::jsonio
