#include "miniseq/io/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"
#include "miniseq/io/tokenizer/byte_level.h"
#include "miniseq/io/tokenizer/limits.h"

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
  if (!j.is_null()) p.add(j, where, /*depth=*/0);
  return p;
}

void PreTokenizer::add(const json& j, const std::string& where, int depth) {
  MS_CHECK(depth < kMaxSequenceDepth, where, ": Sequence nested more than ", kMaxSequenceDepth, " deep");
  const jsonio::Obj o(j, where);
  const std::string type = o.str("type");
  Step s;
  if (type == "Sequence") {
    const json& list = o.array("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i)
      add(list[i], o.at("pretokenizers[") + std::to_string(i) + "]", depth + 1);
    return;
  } else if (type == "Split") {
    const jsonio::Obj p = o.object("pattern");
    if (p.has("String") && p.get("String").is_string())
      s.regex = std::make_shared<Regex>(regex_quote(p.str("String")), p.at("String"));
    else if (p.has("Regex") && p.get("Regex").is_string())
      s.regex = std::make_shared<Regex>(p.str("Regex"), p.at("Regex"));
    else
      fail(o.at("pattern"), ": expected {\"String\": ...} or {\"Regex\": ...} with a string");
    const std::string b = o.str("behavior", "Isolated");
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
      fail(o.at("behavior"), ": unknown split behavior \"", jsonio::excerpt(b), "\"");
    s.invert = o.boolean("invert", false);
  } else if (type == "Digits") {
    s.regex = std::make_shared<Regex>(o.boolean("individual_digits", false) ? "\\p{N}" : "\\p{N}+", where);
  } else if (type == "ByteLevel") {
    s.kind = Kind::ByteLevel;
    s.add_prefix_space = o.boolean("add_prefix_space", true);
    if (o.boolean("use_regex", true))
      s.regex = std::make_shared<Regex>(kGpt2Pattern, where + " (GPT-2 regex)");
  } else if (type == "Metaspace") {
    s.kind = Kind::Metaspace;
    s.replacement = o.str("replacement", "\u2581");
    const std::string scheme =
        o.str("prepend_scheme", o.boolean("add_prefix_space", true) ? "always" : "never");
    if (scheme == "always")
      s.prepend = Prepend::Always;
    else if (scheme == "first")
      s.prepend = Prepend::First;
    else if (scheme == "never")
      s.prepend = Prepend::Never;
    else
      fail(o.at("prepend_scheme"), ": unknown value \"", jsonio::excerpt(scheme),
           "\" (always, first, never)");
    s.split = o.boolean("split", true);
    s.regex = std::make_shared<Regex>(regex_quote(s.replacement), o.at("replacement"));
  } else {
    fail(o.at("type"), ": pre-tokenizer \"", jsonio::excerpt(type),
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
