#include "miniseq/io/tokenizer/normalizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"
#include "miniseq/io/tokenizer/limits.h"
#include "miniseq/io/tokenizer/unicode_nfc.h"
#include "miniseq/io/tokenizer/utf8.h"

namespace miniseq::tok {

using nlohmann::json;

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  if (from.size() == 1) {
    // One byte (Mistral's " " -> "▁", once per word): one pass, no find() call per occurrence.
    const char f = from[0];
    const auto count = static_cast<size_t>(std::count(text.begin(), text.end(), f));
    if (count == 0) return;
    std::string out(text.size() - count + count * to.size(), '\0');
    char* o = out.data();
    for (const char c : text) {
      if (c != f) {
        *o++ = c;
        continue;
      }
      for (const char t : to) *o++ = t;
    }
    text.swap(out);
    return;
  }
  if (from.empty() || text.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(text.size() + text.size() / 4);
  size_t pos = 0;
  for (size_t hit; (hit = text.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(text, pos, hit - pos);
    out += to;
  }
  out.append(text, pos);
  text.swap(out);
}

Normalizer Normalizer::from_json(const json& j, const std::string& where) {
  Normalizer n;
  if (!j.is_null()) n.add(j, where, /*depth=*/0);
  return n;
}

void Normalizer::add(const json& j, const std::string& where, int depth) {
  MS_CHECK(depth < kMaxSequenceDepth, where, ": Sequence nested more than ", kMaxSequenceDepth, " deep");
  const jsonio::Obj o(j, where);
  const std::string type = o.str("type");
  if (type == "Sequence") {
    const json& list = o.array("normalizers");
    for (size_t i = 0; i < list.size(); ++i)
      add(list[i], o.at("normalizers[") + std::to_string(i) + "]", depth + 1);
  } else if (type == "Prepend") {
    steps_.push_back({Kind::Prepend, o.str("prepend"), "", nullptr});
  } else if (type == "Replace") {
    const jsonio::Obj p = o.object("pattern");
    Step s{Kind::Replace, "", o.str("content"), nullptr};
    if (p.has("String") && p.get("String").is_string())
      s.a = p.str("String");
    else if (p.has("Regex") && p.get("Regex").is_string())
      s.regex = std::make_shared<Regex>(p.str("Regex"), p.at("Regex"));
    else
      fail(o.at("pattern"), ": expected {\"String\": ...} or {\"Regex\": ...} with a string");
    steps_.push_back(std::move(s));
  } else if (type == "NFC") {
    steps_.push_back({Kind::NFC, "", "", nullptr});
  } else if (type == "Strip") {
    Step s{Kind::Strip, "", "", nullptr};
    s.left = o.boolean("strip_left", false);
    s.right = o.boolean("strip_right", false);
    steps_.push_back(s);
  } else {
    fail(o.at("type"), ": normalizer \"", jsonio::excerpt(type),
         "\" is not supported (supported: Sequence, Prepend, Replace, NFC, Strip)");
  }
}

void Normalizer::apply(std::string& text) const {
  for (const Step& s : steps_) {
    switch (s.kind) {
      case Kind::Prepend:
        if (!text.empty()) text.insert(0, s.a);
        break;
      case Kind::Replace:
        if (!s.regex) {
          replace_all(text, s.a, s.b);
        } else {
          std::vector<std::pair<size_t, size_t>> m;
          s.regex->find_all(text, m);
          if (m.empty()) break;
          std::string out;
          size_t pos = 0;
          for (auto [b, e] : m) out.append(text, pos, b - pos), out += s.b, pos = e;
          out.append(text, pos);
          text.swap(out);
        }
        break;
      case Kind::NFC:
        if (!nfc_quick_check(text)) text = nfc(text);  // the usual case needs no copy
        break;
      case Kind::Strip: {
        size_t b = 0, e = text.size();
        if (s.left) {
          for (size_t i = 0; i < text.size();) {
            size_t j = i;
            if (!is_unicode_whitespace(utf8_next(text, j))) break;
            b = i = j;
          }
        }
        if (s.right) {
          while (e > b) {
            size_t k = e - 1;
            while (k > b && (static_cast<unsigned char>(text[k]) & 0xC0) == 0x80) --k;
            size_t j = k;
            if (!is_unicode_whitespace(utf8_next(text, j))) break;
            e = k;
          }
        }
        text = text.substr(b, e - b);
        break;
      }
    }
  }
}

}  // namespace miniseq::tok
