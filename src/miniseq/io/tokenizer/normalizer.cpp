#include "miniseq/io/tokenizer/normalizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "miniseq/core/check.h"
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
  if (!j.is_null()) n.add(j, where);
  return n;
}

void Normalizer::add(const json& j, const std::string& where) {
  MS_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(), where,
           ": expected an object with a \"type\" string");
  const std::string type = j["type"];
  if (type == "Sequence") {
    MS_CHECK(j.contains("normalizers") && j["normalizers"].is_array(), where, ".normalizers: missing array");
    for (size_t i = 0; i < j["normalizers"].size(); ++i)
      add(j["normalizers"][i], where + ".normalizers[" + std::to_string(i) + "]");
  } else if (type == "Prepend") {
    MS_CHECK(j.contains("prepend") && j["prepend"].is_string(), where, ".prepend: missing string");
    steps_.push_back({Kind::Prepend, j["prepend"], "", nullptr});
  } else if (type == "Replace") {
    MS_CHECK(j.contains("pattern") && j["pattern"].is_object() && j.contains("content") &&
                 j["content"].is_string(),
             where, ": Replace needs \"pattern\" {String|Regex} and \"content\"");
    const json& p = j["pattern"];
    Step s{Kind::Replace, "", j["content"], nullptr};
    if (p.contains("String") && p["String"].is_string())
      s.a = p["String"];
    else if (p.contains("Regex") && p["Regex"].is_string())
      s.regex = std::make_shared<Regex>(p["Regex"].get<std::string>(), where + ".pattern.Regex");
    else
      fail(where, ".pattern: expected {\"String\": ...} or {\"Regex\": ...}");
    steps_.push_back(std::move(s));
  } else if (type == "NFC") {
    steps_.push_back({Kind::NFC, "", "", nullptr});
  } else if (type == "Strip") {
    Step s{Kind::Strip, "", "", nullptr};
    s.left = j.value("strip_left", false);
    s.right = j.value("strip_right", false);
    steps_.push_back(s);
  } else {
    fail(where, ".type: normalizer \"", type,
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
