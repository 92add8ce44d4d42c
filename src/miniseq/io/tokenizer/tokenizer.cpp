#include "miniseq/io/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "miniseq/core/check.h"
#include "miniseq/io/tokenizer/utf8.h"

namespace miniseq::tok {

using nlohmann::json;

namespace {
std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  MS_CHECK(f.good(), p.string(), ": cannot open the file; check the tokenizer directory");
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

json parse(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail(where, ": not valid JSON (", e.what(), ")");
  }
}

// bos_token / eos_token in tokenizer_config.json: a string, an AddedToken object {"content": ...}, or null.
std::string config_token(const json& cfg, const char* key) {
  if (!cfg.contains(key) || cfg[key].is_null()) return "";
  if (cfg[key].is_string()) return cfg[key];
  if (cfg[key].is_object() && cfg[key].contains("content") && cfg[key]["content"].is_string())
    return cfg[key]["content"];
  return "";
}

// Ids that a post-processor puts before and after a single sequence.
void parse_post_processor(const json& j, const std::string& where, std::vector<int32_t>& prefix,
                          std::vector<int32_t>& suffix) {
  if (j.is_null()) return;
  MS_CHECK(j.is_object() && j.contains("type"), where, ": expected an object with a \"type\"");
  const std::string type = j["type"];
  if (type == "Sequence") {
    for (size_t i = 0; i < j.value("processors", json::array()).size(); ++i)
      parse_post_processor(j["processors"][i], where + ".processors[" + std::to_string(i) + "]", prefix,
                           suffix);
  } else if (type == "ByteLevel") {
    // offsets only
  } else if (type == "TemplateProcessing") {
    MS_CHECK(j.contains("single") && j["single"].is_array(), where, ".single: missing template array");
    const json specials = j.value("special_tokens", json::object());
    bool seen_sequence = false;
    for (size_t i = 0; i < j["single"].size(); ++i) {
      const json& item = j["single"][i];
      const std::string at = where + ".single[" + std::to_string(i) + "]";
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = item["SpecialToken"].value("id", "");
        MS_CHECK(specials.contains(name) && specials[name].contains("ids"), at, ": special token \"", name,
                 "\" is not in ", where, ".special_tokens");
        for (const auto& id : specials[name]["ids"])
          (seen_sequence ? suffix : prefix).push_back(id.get<int32_t>());
      } else {
        fail(at, ": expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    MS_CHECK(j.contains("cls") && j.contains("sep"), where, ": needs \"cls\" and \"sep\" [token, id] pairs");
    prefix.push_back(j["cls"][1].get<int32_t>());
    suffix.push_back(j["sep"][1].get<int32_t>());
  } else {
    fail(where, ".type: post-processor \"", type,
         "\" is not supported (supported: TemplateProcessing, ByteLevel, Sequence, BertProcessing, "
         "RobertaProcessing)");
  }
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& dir) {
  const std::filesystem::path d(dir);
  const auto tj = d / "tokenizer.json";
  MS_CHECK(std::filesystem::exists(tj), tj.string(),
           ": not found; give a Hugging Face model or tokenizer directory that holds tokenizer.json");
  const auto cj = d / "tokenizer_config.json";
  return from_json(read_file(tj), std::filesystem::exists(cj) ? read_file(cj) : std::string(), tj.string());
}

Tokenizer Tokenizer::from_json(const std::string& tokenizer_json, const std::string& config_json,
                               const std::string& where) {
  const json j = parse(tokenizer_json, where);
  const json cfg =
      config_json.empty() ? json::object() : parse(config_json, where + " (tokenizer_config.json)");
  MS_CHECK(j.is_object(), where, ": expected a JSON object");
  MS_CHECK(j.contains("model") && j["model"].is_object(), where,
           ": field \"model\" is missing; this is not a Hugging Face tokenizer.json");
  const json& m = j["model"];
  const std::string type = m.value("type", m.contains("merges") ? "BPE" : "");
  MS_CHECK(type == "BPE", where, ": model.type \"", type,
           "\" is not supported (only BPE: Llama, Mistral, Qwen); WordPiece/Unigram/WordLevel are not "
           "implemented");

  Tokenizer t;
  t.model_ = std::make_unique<BpeModel>(m, where + ": model");
  t.normalizer_ = Normalizer::from_json(j.value("normalizer", json()), where + ": normalizer");
  t.pre_tokenizer_ = PreTokenizer::from_json(j.value("pre_tokenizer", json()), where + ": pre_tokenizer");
  t.decoder_ = Decoder::from_json(j.value("decoder", json()), where + ": decoder");
  if (t.pre_tokenizer_.byte_level_deferred()) t.model_->set_byte_level_input();
  t.vocab_size_ = t.model_->max_id() + 1;

  std::vector<AddedToken> raw, normalized;
  std::vector<std::string> raw_pat, norm_pat;
  const json added = j.value("added_tokens", json::array());
  MS_CHECK(added.is_array(), where, ": added_tokens: expected an array");
  for (size_t i = 0; i < added.size(); ++i) {
    const json& a = added[i];
    const std::string at = where + ": added_tokens[" + std::to_string(i) + "]";
    MS_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
                 a["content"].is_string(),
             at, ": needs an integer \"id\" and a string \"content\"");
    AddedToken tok;
    tok.id = a["id"];
    tok.content = a["content"];
    tok.special = a.value("special", false);
    tok.lstrip = a.value("lstrip", false);
    tok.rstrip = a.value("rstrip", false);
    tok.single_word = a.value("single_word", false);
    tok.normalized = a.value("normalized", !tok.special);
    MS_CHECK(tok.id >= 0 && !tok.content.empty(), at, ": id must be >= 0 and content non-empty");
    t.vocab_size_ = std::max(t.vocab_size_, tok.id + 1);
    t.added_.push_back(tok);
    if (tok.normalized) {
      std::string pattern = tok.content;
      t.normalizer_.apply(pattern);
      normalized.push_back(tok), norm_pat.push_back(pattern);
    } else {
      raw.push_back(tok), raw_pat.push_back(tok.content);
    }
  }
  t.raw_matcher_ = AddedTokenMatcher(std::move(raw), std::move(raw_pat));
  t.normalized_matcher_ = AddedTokenMatcher(std::move(normalized), std::move(norm_pat));

  const std::string bos = config_token(cfg, "bos_token"), eos = config_token(cfg, "eos_token");
  if (!bos.empty()) t.bos_id_ = t.token_to_id(bos);
  if (!eos.empty()) t.eos_id_ = t.token_to_id(eos);
  if (cfg.contains("add_bos_token") || cfg.contains("add_eos_token")) {
    // transformers' Llama-style tokenizers rebuild the template from these flags.
    const bool add_bos = cfg.value("add_bos_token", false), add_eos = cfg.value("add_eos_token", false);
    MS_CHECK(!add_bos || t.bos_id_ >= 0, where,
             " (tokenizer_config.json): add_bos_token is true but bos_token \"", bos, "\" is not a token");
    MS_CHECK(!add_eos || t.eos_id_ >= 0, where,
             " (tokenizer_config.json): add_eos_token is true but eos_token \"", eos, "\" is not a token");
    if (add_bos) t.prefix_ids_.push_back(t.bos_id_);
    if (add_eos) t.suffix_ids_.push_back(t.eos_id_);
    t.special_source_ = "tokenizer_config.json add_bos_token/add_eos_token";
  } else {
    parse_post_processor(j.value("post_processor", json()), where + ": post_processor", t.prefix_ids_,
                         t.suffix_ids_);
    t.special_source_ = "tokenizer.json post_processor";
  }
  return t;
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  for (const auto& a : added_)
    if (a.content == token) return a.id;
  return model_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  for (const auto& a : added_)
    if (a.id == id) return a.content;
  if (const std::string* s = model_->id_to_token(id)) return *s;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  for (const auto& a : added_)
    if (a.id == id) return a.special;
  return false;
}

void Tokenizer::encode_normalized(std::string_view text, bool at_text_start,
                                  std::vector<int32_t>& out) const {
  thread_local PreTokens pre;
  pre_tokenizer_.apply(text, at_text_start, pre);
  for (const auto& span : pre.spans) model_->encode(pre.piece(span), out);
}

void Tokenizer::encode_plain(std::string_view text, bool at_text_start, std::vector<int32_t>& out) const {
  if (normalizer_.empty() && normalized_matcher_.empty())  // Llama-3: the text as it is, no copy
    return encode_normalized(text, at_text_start, out);
  thread_local std::string s;  // per-thread scratch, reused across calls
  s.assign(text);
  normalizer_.apply(s);
  if (normalized_matcher_.empty()) return encode_normalized(s, at_text_start, out);
  thread_local std::vector<AddedTokenMatcher::Segment> segs;
  segs.clear();
  normalized_matcher_.split(s, segs);
  for (const auto& g : segs) {
    if (g.id >= 0)
      out.push_back(g.id);
    else
      encode_normalized(std::string_view(s).substr(g.begin, g.end - g.begin), at_text_start && g.begin == 0,
                        out);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!utf8_valid(text)) repaired = utf8_repair(text), text = repaired;
  std::vector<int32_t> out;
  out.reserve(text.size() / 2 + 4 + prefix_ids_.size() + suffix_ids_.size());  // ~3-4 bytes per token
  if (add_special_tokens) out.insert(out.end(), prefix_ids_.begin(), prefix_ids_.end());
  thread_local std::vector<AddedTokenMatcher::Segment> segs;
  segs.clear();
  raw_matcher_.split(text, segs);
  for (const auto& g : segs) {
    if (g.id >= 0)
      out.push_back(g.id);
    else
      encode_plain(text.substr(g.begin, g.end - g.begin), g.begin == 0, out);
  }
  if (add_special_tokens) out.insert(out.end(), suffix_ids_.begin(), suffix_ids_.end());
  return out;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special_tokens, int threads) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  const auto n = static_cast<int64_t>(texts.size());
  if (threads <= 0) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) out[i] = encode(texts[i], add_special_tokens);
  } else {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) out[i] = encode(texts[i], add_special_tokens);
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::unordered_map<int32_t, const AddedToken*> added;
  for (const auto& a : added_) added[a.id] = &a;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (auto it = added.find(id); it != added.end()) {
      if (!(skip_special_tokens && it->second->special)) tokens.push_back(it->second->content);
    } else if (const std::string* s = model_->id_to_token(id)) {
      tokens.push_back(*s);
    }
  }
  return decoder_.decode(std::move(tokens));
}

}  // namespace miniseq::tok
