#include "miniseq/train/special_tokens.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"

namespace miniseq {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;  // keeps the files' key order when they are rewritten

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ojson read_json(const fs::path& p) {
  if (!fs::exists(p)) return ojson::object();
  return jsonio::parse_ordered(read_file(p), p.string());
}

// The content of a special-token entry: "…" or {"content": "…"}; "" when absent or null.
std::string token_content(const ojson& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "";
  if (j[key].is_string()) return j[key].get<std::string>();
  if (j[key].is_object() && j[key].contains("content") && j[key]["content"].is_string())
    return j[key]["content"].get<std::string>();
  return "";
}

}  // namespace

PreparedTokenizer prepare_special_tokens(const std::string& dir, const tok::Tokenizer& tokenizer) {
  const fs::path d(dir);
  ojson tok_json = read_json(d / "tokenizer.json");
  ojson config = read_json(d / "tokenizer_config.json");
  ojson special_map = read_json(d / "special_tokens_map.json");
  for (const auto& [j, name] : {std::pair{&tok_json, "tokenizer.json"},
                                {&config, "tokenizer_config.json"},
                                {&special_map, "special_tokens_map.json"}})
    MS_CHECK(j->is_object(), (d / name).string(), ": expected a JSON object");
  MS_CHECK(!tok_json.contains("added_tokens") || tok_json["added_tokens"].is_array(),
           (d / "tokenizer.json").string(), ": added_tokens: expected an array");
  MS_CHECK(!config.contains("added_tokens_decoder") || config["added_tokens_decoder"].is_object(),
           (d / "tokenizer_config.json").string(), ": added_tokens_decoder: expected an object");
  PreparedTokenizer r;
  r.vocab_size = tokenizer.vocab_size();

  struct Role {
    const char* key;
    const char* fallback;
  };
  const Role roles[] = {{"pad_token", "[PAD]"}, {"eos_token", "</s>"}, {"bos_token", "<s>"}, {"unk_token", "<unk>"}};
  bool changed = false;
  for (const Role& role : roles) {
    std::string content = token_content(config, role.key);
    if (content.empty()) content = token_content(special_map, role.key);
    int32_t id = content.empty() ? -1 : tokenizer.token_to_id(content);
    if (id < 0) {
      content = role.fallback;
      id = tokenizer.token_to_id(content);
      if (id < 0) {  // a new special token with the next id
        id = static_cast<int32_t>(r.vocab_size++);
        r.added.push_back(content);
        ojson entry = {{"id", id},           {"content", content}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false},    {"normalized", false}, {"special", true}};
        tok_json["added_tokens"].push_back(entry);
        ojson decoder_entry = entry;
        decoder_entry.erase("id");
        config["added_tokens_decoder"][std::to_string(id)] = decoder_entry;
      }
      config[role.key] = content;
      special_map[role.key] = content;
      changed = true;
    }
    if (std::string(role.key) == "pad_token") r.pad_id = id;
    if (std::string(role.key) == "eos_token") r.eos_id = id;
    if (std::string(role.key) == "bos_token") r.bos_id = id;
  }
  if (changed) {
    r.file_overrides["tokenizer.json"] = tok_json.dump(2, ' ', false) + "\n";
    r.file_overrides["tokenizer_config.json"] = config.dump(2, ' ', false) + "\n";
    r.file_overrides["special_tokens_map.json"] = special_map.dump(2, ' ', false) + "\n";
  }
  return r;
}

}  // namespace miniseq
