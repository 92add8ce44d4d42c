#include "miniseq/io/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"
#include "miniseq/io/tokenizer/limits.h"
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
  return jsonio::parse(text, where, nullptr, "not valid JSON");
}

// bos_token / eos_token in tokenizer_config.json: a string, an AddedToken object {"content": ...}, or null.
std::string config_token(const json& cfg, const char* key) {
  if (!cfg.contains(key) || cfg[key].is_null()) return "";
  if (cfg[key].is_string()) return cfg[key];
  if (cfg[key].is_object() && cfg[key].contains("content") && cfg[key]["content"].is_string())
    return cfg[key]["content"];
  return "";
}

// A token id that a post-processor adds: an integer in the vocabulary [0, vocab).
int32_t post_processor_id(const json& v, const std::string& where, int32_t vocab) {
  const int64_t id = jsonio::as_int(v, where);
  MS_CHECK(id >= 0 && id < vocab, where, ": token id ", id, " is outside the vocabulary [0, ", vocab, ")");
  return static_cast<int32_t>(id);
}

// Ids that a post-processor puts before and after a single sequence; every id lies in [0, vocab).
void parse_post_processor(const json& j, const std::string& where, int32_t vocab, int depth,
                          std::vector<int32_t>& prefix, std::vector<int32_t>& suffix) {
  if (j.is_null()) return;
  MS_CHECK(depth < kMaxSequenceDepth, where, ": Sequence nested more than ", kMaxSequenceDepth, " deep");
  const jsonio::Obj o(j, where);
  const std::string type = o.str("type");
  if (type == "Sequence") {
    const json& processors = o.array("processors");
    for (size_t i = 0; i < processors.size(); ++i)
      parse_post_processor(processors[i], o.at("processors[") + std::to_string(i) + "]", vocab, depth + 1,
                           prefix, suffix);
  } else if (type == "ByteLevel") {
    // offsets only
  } else if (type == "TemplateProcessing") {
    const json& single = o.array("single");
    const json empty = json::object();
    const jsonio::Obj specials(o.has("special_tokens") ? o.get("special_tokens") : empty,
                               o.at("special_tokens"));
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string at = o.at("single[") + std::to_string(i) + "]";
      const jsonio::Obj item(single[i], at);
      if (item.has("Sequence")) {
        seen_sequence = true;
      } else if (item.has("SpecialToken")) {
        const std::string name = item.object("SpecialToken").str("id", "");
        MS_CHECK(specials.has(name.c_str()), at, ": special token \"", jsonio::excerpt(name), "\" is not in ",
                 specials.where());
        const jsonio::Obj special = specials.object(name.c_str());
        const json& ids = special.array("ids");
        for (size_t k = 0; k < ids.size(); ++k)
          (seen_sequence ? suffix : prefix)
              .push_back(post_processor_id(ids[k], special.at("ids[") + std::to_string(k) + "]", vocab));
      } else {
        fail(at, ": expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    for (const char* key : {"cls", "sep"}) {
      const json& pair = o.array(key);
      MS_CHECK(pair.size() == 2 && pair[0].is_string(), o.at(key), ": expected a [token, id] pair, found ",
               jsonio::describe(pair));
      (key[0] == 'c' ? prefix : suffix).push_back(post_processor_id(pair[1], o.at(key) + "[1]", vocab));
    }
  } else {
    fail(o.at("type"), ": post-processor \"", jsonio::excerpt(type),
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
  MS_CHECK(cfg.is_object(), where, " (tokenizer_config.json): expected a JSON object");
  const jsonio::Obj top(j, where, /*file_level=*/true);
  MS_CHECK(top.has("model") && j["model"].is_object(), where,
           ": field \"model\" is missing; this is not a Hugging Face tokenizer.json");
  const jsonio::Obj m = top.object("model");
  const std::string type = m.str("type", m.has("merges") ? "BPE" : "");
  MS_CHECK(type == "BPE", where, ": model.type \"", jsonio::excerpt(type),
           "\" is not supported (only BPE: Llama, Mistral, Qwen); WordPiece/Unigram/WordLevel are not "
           "implemented");

  static const json kNull;
  auto member = [&](const char* key) -> const json& { return top.has(key) ? top.get(key) : kNull; };
  Tokenizer t;
  t.model_ = std::make_unique<BpeModel>(m.json_value(), where + ": model");
  t.normalizer_ = Normalizer::from_json(member("normalizer"), where + ": normalizer");
  t.pre_tokenizer_ = PreTokenizer::from_json(member("pre_tokenizer"), where + ": pre_tokenizer");
  t.decoder_ = Decoder::from_json(member("decoder"), where + ": decoder");
  if (t.pre_tokenizer_.byte_level_deferred()) t.model_->set_byte_level_input();
  t.vocab_size_ = t.model_->max_id() + 1;

  std::vector<AddedToken> raw, normalized;
  std::vector<std::string> raw_pat, norm_pat;
  const json empty = json::array();
  const json& added = top.has("added_tokens") ? top.array("added_tokens") : empty;
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string at = where + ": added_tokens[" + std::to_string(i) + "]";
    const jsonio::Obj a(added[i], at);
    AddedToken tok;
    // id + 1 (the vocabulary size) must fit an int32.
    tok.id = static_cast<int32_t>(a.integer("id", 0, std::numeric_limits<int32_t>::max() - 1));
    tok.content = a.str("content");
    tok.special = a.boolean("special", false);
    tok.lstrip = a.boolean("lstrip", false);
    tok.rstrip = a.boolean("rstrip", false);
    tok.single_word = a.boolean("single_word", false);
    tok.normalized = a.boolean("normalized", !tok.special);
    MS_CHECK(!tok.content.empty(), at, ": content must be non-empty");
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
    const jsonio::Obj c(cfg, where + " (tokenizer_config.json)", /*file_level=*/true);
    const bool add_bos = c.boolean("add_bos_token", false), add_eos = c.boolean("add_eos_token", false);
    MS_CHECK(!add_bos || t.bos_id_ >= 0, where,
             " (tokenizer_config.json): add_bos_token is true but bos_token \"", bos, "\" is not a token");
    MS_CHECK(!add_eos || t.eos_id_ >= 0, where,
             " (tokenizer_config.json): add_eos_token is true but eos_token \"", eos, "\" is not a token");
    if (add_bos) t.prefix_ids_.push_back(t.bos_id_);
    if (add_eos) t.suffix_ids_.push_back(t.eos_id_);
    t.special_source_ = "tokenizer_config.json add_bos_token/add_eos_token";
  } else {
    parse_post_processor(member("post_processor"), where + ": post_processor", t.vocab_size_, /*depth=*/0,
                         t.prefix_ids_, t.suffix_ids_);
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
