#include "miniseq/io/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "miniseq/core/check.h"
#include "miniseq/io/tokenizer/byte_level.h"

namespace miniseq::tok {

using nlohmann::json;

namespace {
// GPT-2's pattern, used by ByteLevel with use_regex.
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct Part {
  uint32_t begin, end;
  bool is_match;
};

// Hugging Face's SplitDelimiterBehavior applied to a partition of one piece into matches and gaps.
template <typename Behavior>
void combine(std::vector<Part>& parts, Behavior b, std::vector<PreTokens::Span>& out) {
  if (b == Behavior::Isolated) {
    for (const Part& p : parts) out.push_back({p.begin, p.end});
    return;
  }
  thread_local std::vector<Part> acc;  // reused: no allocation per piece
  acc.clear();
  switch (b) {
    case Behavior::Removed:
      for (const Part& p : parts)
        if (!p.is_match) acc.push_back(p);
      break;
    case Behavior::Isolated:
      break;
    case Behavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && !acc.empty())
          acc.back().end = p.end;
        else
          acc.push_back(p);
        previous_match = p.is_match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !acc.empty())
          acc.back().begin = it->begin;
        else
          acc.push_back(*it);
        previous_match = it->is_match;
      }
      std::reverse(acc.begin(), acc.end());
      break;
    }
    case Behavior::Contiguous: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match && previous_match && !acc.empty())
          acc.back().end = p.end;
        else
          acc.push_back(p);
        previous_match = p.is_match;
      }
      break;
    }
  }
  for (const Part& p : acc)
    if (p.end > p.begin) out.push_back({p.begin, p.end});
}
}  // namespace

PreTokenizer PreTokenizer::from_json(const json& j, const std::string& where) {
  PreTokenizer p;
  if (!j.is_null()) p.add(j, where);
  return p;
}

void PreTokenizer::add(const json& j, const std::string& where) {
  MS_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(), where,
           ": expected an object with a \"type\" string");
  const std::string type = j["type"];
  Step s;
  if (type == "Sequence") {
    MS_CHECK(j.contains("pretokenizers") && j["pretokenizers"].is_array(), where,
             ".pretokenizers: missing array");
    for (size_t i = 0; i < j["pretokenizers"].size(); ++i)
      add(j["pretokenizers"][i], where + ".pretokenizers[" + std::to_string(i) + "]");
    return;
  } else if (type == "Split") {
    MS_CHECK(j.contains("pattern") && j["pattern"].is_object(), where,
             ".pattern: missing {String|Regex} object");
    const json& p = j["pattern"];
    if (p.contains("String") && p["String"].is_string())
      s.regex =
          std::make_shared<Regex>(regex_quote(p["String"].get<std::string>()), where + ".pattern.String");
    else if (p.contains("Regex") && p["Regex"].is_string())
      s.regex = std::make_shared<Regex>(p["Regex"].get<std::string>(), where + ".pattern.Regex");
    else
      fail(where, ".pattern: expected {\"String\": ...} or {\"Regex\": ...}");
    const std::string b = j.value("behavior", "Isolated");
    if (b == "Removed")
      s.behavior = Behavior::Removed;
    else if (b == "Isolated")
      s.behavior = Behavior::Isolated;
    else if (b == "MergedWithPrevious")
      s.behavior = Behavior::MergedWithPrevious;
    else if (b == "MergedWithNext")
      s.behavior = Behavior::MergedWithNext;
    else if (b == "Contiguous")
      s.behavior = Behavior::Contiguous;
    else
      fail(where, ".behavior: unknown split behavior \"", b, "\"");
    s.invert = j.value("invert", false);
  } else if (type == "Digits") {
    s.regex = std::make_shared<Regex>(j.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+", where);
  } else if (type == "ByteLevel") {
    s.kind = Kind::ByteLevel;
    s.add_prefix_space = j.value("add_prefix_space", true);
    if (j.value("use_regex", true)) s.regex = std::make_shared<Regex>(kGpt2Pattern, where + " (GPT-2 regex)");
  } else if (type == "Metaspace") {
    s.kind = Kind::Metaspace;
    s.replacement = j.value("replacement", "\u2581");
    const std::string scheme =
        j.value("prepend_scheme", j.value("add_prefix_space", true) ? "always" : "never");
    if (scheme == "always")
      s.prepend = Prepend::Always;
    else if (scheme == "first")
      s.prepend = Prepend::First;
    else if (scheme == "never")
      s.prepend = Prepend::Never;
    else
      fail(where, ".prepend_scheme: unknown value \"", scheme, "\" (always, first, never)");
    s.split = j.value("split", true);
    s.regex = std::make_shared<Regex>(regex_quote(s.replacement), where + ".replacement");
  } else {
    fail(where, ".type: pre-tokenizer \"", type,
         "\" is not supported (supported: Sequence, Split, ByteLevel, Metaspace, Digits)");
  }
  steps_.push_back(std::move(s));
}

void PreTokenizer::apply(std::string_view text, bool at_text_start, PreTokens& out) const {
  out.text = text;
  out.spans.clear();
  if (text.empty()) return;
  out.spans.push_back({0, static_cast<uint32_t>(text.size())});
  for (size_t i = 0; i < steps_.size(); ++i) {
    const Step& s = steps_[i];
    switch (s.kind) {
      case Kind::Split:
        run_split(s, out);
        break;
      case Kind::ByteLevel:
        run_byte_level(s, /*map_bytes=*/i + 1 < steps_.size(), out);  // see byte_level_deferred()
        break;
      case Kind::Metaspace:
        run_metaspace(s, at_text_start, out);
        break;
    }
  }
}

void PreTokenizer::run_split(const Step& s, PreTokens& p) const {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  thread_local std::vector<Part> parts;
  auto& spans = p.scratch_spans;
  spans.clear();
  for (const auto& span : p.spans) {
    matches.clear();
    s.regex->find_all(p.piece(span), matches);
    const bool direct = s.behavior == Behavior::Isolated && !s.invert;  // the usual case: no Part list
    if (!direct) parts.clear();
    uint32_t pos = span.begin;
    for (auto [b, e] : matches) {
      const auto mb = static_cast<uint32_t>(span.begin + b), me = static_cast<uint32_t>(span.begin + e);
      if (direct) {
        if (mb > pos) spans.push_back({pos, mb});
        spans.push_back({mb, me});
      } else {
        if (mb > pos) parts.push_back({pos, mb, s.invert});
        parts.push_back({mb, me, !s.invert});
      }
      pos = me;
    }
    if (direct) {
      if (pos < span.end) spans.push_back({pos, span.end});
      continue;
    }
    if (pos < span.end) parts.push_back({pos, span.end, s.invert});
    combine(parts, s.behavior, spans);
  }
  p.spans.swap(spans);
}

void PreTokenizer::run_byte_level(const Step& s, bool map_bytes, PreTokens& p) const {
  // Optional prefix space per piece, optional GPT-2 split, then every byte to its byte-level character.
  if (s.add_prefix_space) {
    p.scratch.clear();
    p.scratch_spans.clear();
    for (const auto& span : p.spans) {
      const auto b = static_cast<uint32_t>(p.scratch.size());
      if (p.text[span.begin] != ' ') p.scratch += ' ';
      p.scratch.append(p.piece(span));
      p.scratch_spans.push_back({b, static_cast<uint32_t>(p.scratch.size())});
    }
    p.commit_text();
  }
  if (s.regex) {
    Step split;
    split.regex = s.regex;
    run_split(split, p);
  }
  if (!map_bytes) return;
  p.scratch.clear();
  p.scratch.reserve(p.text.size() * 2);
  p.scratch_spans.clear();
  for (const auto& span : p.spans) {
    const auto b = static_cast<uint32_t>(p.scratch.size());
    byte_level_encode(p.piece(span), p.scratch);
    p.scratch_spans.push_back({b, static_cast<uint32_t>(p.scratch.size())});
  }
  p.commit_text();
}

void PreTokenizer::run_metaspace(const Step& s, bool at_text_start, PreTokens& p) const {
  p.scratch.clear();
  p.scratch_spans.clear();
  for (const auto& span : p.spans) {
    const std::string_view piece = p.piece(span);
    const bool first = at_text_start && span.begin == 0;
    const auto b = static_cast<uint32_t>(p.scratch.size());
    for (char c : piece) {
      if (c == ' ')
        p.scratch += s.replacement;
      else
        p.scratch += c;
    }
    const bool starts = p.scratch.compare(b, s.replacement.size(), s.replacement) == 0;
    if (!starts && (s.prepend == Prepend::Always || (s.prepend == Prepend::First && first)))
      p.scratch.insert(b, s.replacement);
    p.scratch_spans.push_back({b, static_cast<uint32_t>(p.scratch.size())});
  }
  p.commit_text();
  if (s.split) {
    Step split;
    split.regex = s.regex;
    split.behavior = Behavior::MergedWithNext;
    run_split(split, p);
  }
}

}  // namespace miniseq::tok
