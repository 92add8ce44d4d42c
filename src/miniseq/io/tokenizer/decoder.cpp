#include "miniseq/io/tokenizer/decoder.h"

#include <limits>
#include <nlohmann/json.hpp>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"
#include "miniseq/io/tokenizer/byte_level.h"
#include "miniseq/io/tokenizer/limits.h"
#include "miniseq/io/tokenizer/normalizer.h"
#include "miniseq/io/tokenizer/utf8.h"

namespace miniseq::tok {

using nlohmann::json;

namespace {
// "<0xAB>" -> 0xAB, or -1.
int parse_byte_token(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                  : -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Removes up to n leading (or trailing) occurrences of the character `c` from t, one character at a time.
void strip_chars(std::string& t, const std::string& c, size_t start, size_t stop) {
  for (size_t i = 0; i < start && !c.empty() && t.rfind(c, 0) == 0; ++i) t.erase(0, c.size());
  for (size_t i = 0;
       i < stop && !c.empty() && t.size() >= c.size() && t.compare(t.size() - c.size(), c.size(), c) == 0;
       ++i)
    t.resize(t.size() - c.size());
}
}  // namespace

Decoder Decoder::from_json(const json& j, const std::string& where) {
  Decoder d;
  if (!j.is_null()) d.none_ = false, d.add(j, where, /*depth=*/0);
  return d;
}

void Decoder::add(const json& j, const std::string& where, int depth) {
  MS_CHECK(depth < kMaxSequenceDepth, where, ": Sequence nested more than ", kMaxSequenceDepth, " deep");
  const jsonio::Obj o(j, where);
  const std::string type = o.str("type");
  if (type == "Sequence") {
    const json& list = o.array("decoders");
    for (size_t i = 0; i < list.size(); ++i)
      add(list[i], o.at("decoders[") + std::to_string(i) + "]", depth + 1);
  } else if (type == "Replace") {
    const jsonio::Obj p = o.object("pattern");
    MS_CHECK(p.has("String"), o.at("pattern"),
             ": the Replace decoder supports only {\"String\": ...} patterns");
    steps_.push_back({Kind::Replace, p.str("String"), o.str("content")});
  } else if (type == "ByteFallback") {
    steps_.push_back({Kind::ByteFallback, "", ""});
  } else if (type == "Fuse") {
    steps_.push_back({Kind::Fuse, "", ""});
  } else if (type == "Strip") {
    Step s{Kind::Strip, o.str("content", " "), ""};
    s.start = static_cast<size_t>(o.integer_or("start", 0, 0, std::numeric_limits<int32_t>::max()));
    s.stop = static_cast<size_t>(o.integer_or("stop", 0, 0, std::numeric_limits<int32_t>::max()));
    steps_.push_back(s);
  } else if (type == "ByteLevel") {
    steps_.push_back({Kind::ByteLevel, "", ""});
  } else if (type == "Metaspace") {
    Step s{Kind::Metaspace, o.str("replacement", "\u2581"), ""};
    const std::string scheme =
        o.str("prepend_scheme", o.boolean("add_prefix_space", true) ? "always" : "never");
    s.prepend = scheme != "never";
    steps_.push_back(s);
  } else {
    fail(o.at("type"), ": decoder \"", jsonio::excerpt(type),
         "\" is not supported (supported: Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, "
         "Metaspace)");
  }
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
  if (none_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const Step& s : steps_) {
    switch (s.kind) {
      case Kind::Replace:
        for (auto& t : tokens) replace_all(t, s.a, s.b);
        break;
      case Kind::ByteFallback: {
        std::vector<std::string> out;
        std::string bytes;
        size_t n_bytes = 0;
        auto flush = [&] {
          if (!n_bytes) return;
          if (utf8_valid(bytes))
            out.push_back(bytes);
          else
            for (size_t i = 0; i < n_bytes; ++i) out.emplace_back("\xEF\xBF\xBD");
          bytes.clear();
          n_bytes = 0;
        };
        for (auto& t : tokens) {
          if (const int b = parse_byte_token(t); b >= 0) {
            bytes.push_back(static_cast<char>(b));
            ++n_bytes;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens.swap(out);
        break;
      }
      case Kind::Fuse: {
        std::string all;
        for (auto& t : tokens) all += t;
        tokens.assign(1, all);
        break;
      }
      case Kind::Strip:
        for (auto& t : tokens) strip_chars(t, s.a, s.start, s.stop);
        break;
      case Kind::ByteLevel: {
        std::string bytes;
        for (auto& t : tokens)
          if (!byte_level_decode(t, bytes)) bytes += t;
        tokens.assign(1, utf8_repair(bytes));
        break;
      }
      case Kind::Metaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          replace_all(tokens[i], s.a, " ");
          if (i == 0 && s.prepend && !tokens[i].empty() && tokens[i][0] == ' ') tokens[i].erase(0, 1);
        }
        break;
    }
  }
  std::string out;
  for (auto& t : tokens) out += t;
  return out;
}

}  // namespace miniseq::tok
