#include "miniseq/io/json_read.h"

#include <fstream>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "miniseq/core/check.h"

namespace miniseq::jsonio {

namespace {

// nlohmann's what() without its "[json.exception.parse_error.101] " prefix, cut short (a long token is
// quoted).
std::string nlohmann_reason(const std::exception& e) {
  std::string_view w = e.what();
  if (!w.empty() && w[0] == '[')
    if (const size_t close = w.find("] "); close != std::string_view::npos) w.remove_prefix(close + 2);
  return excerpt(w, 160);
}

// Runs parse() on text whose nesting check_depth accepted; every nlohmann error becomes "<where>: <what>: …".
template <typename Parse>
auto parse_checked(std::string_view text, const std::string& where, const char* what, Parse&& parse) {
  check_depth(text, where);
  try {
    return parse();
  } catch (const nlohmann::json::out_of_range& e) {  // 406: a number beyond the range of a double
    fail(where, ": ", what, ": ", nlohmann_reason(e), " (beyond the range of a double)");
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": ", what, ": ", nlohmann_reason(e));
  }
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    default:
      return "a binary value";
  }
}

[[noreturn]] void wrong_type(const json& v, const std::string& where, const char* expected) {
  fail(where, ": expected ", expected, ", found ", describe(v));
}

}  // namespace

void check_depth(std::string_view text, const std::string& where) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;  // skip the escaped character (\" in particular)
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        size_t line = 1;
        for (size_t k = 0; k < i; ++k) line += text[k] == '\n';
        fail(where, ": JSON nested more than ", kMaxJsonDepth, " levels deep (line ", line, ", byte ", i,
             "); this is not a file miniseq reads");
      }
    } else if (c == ']' || c == '}') {
      --depth;  // unbalanced brackets are the parser's to report
    }
  }
}

json parse(std::string_view text, const std::string& where, const json::parser_callback_t& cb,
           const char* what) {
  return parse_checked(text, where, what, [&] { return json::parse(text.begin(), text.end(), cb); });
}

namespace {

// Builds an ordered_json in one pass. nlohmann's own DOM parser inserts each key through ordered_map, which
// searches the object linearly for a duplicate: quadratic in a tokenizer.json vocabulary of 128K keys
// (tens of seconds). Here each open object keeps a hash index of its keys; a repeated key replaces the
// earlier value in place (the last one wins, as nlohmann's parser does).
class OrderedBuilder : public nlohmann::json_sax<nlohmann::ordered_json> {
  using J = nlohmann::ordered_json;
  using Slots = std::vector<std::pair<const std::string, J>>;  // ordered_map's storage

 public:
  explicit OrderedBuilder(J& root) : root_(root) {}

  bool null() override { return put(J(nullptr)); }
  bool boolean(bool v) override { return put(J(v)); }
  bool number_integer(number_integer_t v) override { return put(J(v)); }
  bool number_unsigned(number_unsigned_t v) override { return put(J(v)); }
  bool number_float(number_float_t v, const string_t&) override { return put(J(v)); }
  bool string(string_t& v) override { return put(J(std::move(v))); }
  bool binary(binary_t& v) override { return put(J::binary(std::move(v))); }
  bool start_object(std::size_t) override { return open(J::object()); }
  bool start_array(std::size_t) override { return open(J::array()); }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    // Rethrown with its own type (parse_ordered reports a number beyond double range apart).
    if (const auto* o = dynamic_cast<const nlohmann::detail::out_of_range*>(&e)) throw *o;
    if (const auto* p = dynamic_cast<const nlohmann::detail::parse_error*>(&e)) throw *p;
    throw e;
  }

 private:
  struct Open {
    J* value;
    std::unordered_map<std::string, size_t> keys;  // objects only: key → slot
  };

  // Stores v in the innermost open container (or as the root) and returns where it now lives. Pointers to
  // open containers stay valid: a parent gets no new element while a child is open.
  J* place(J&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Open& top = stack_.back();
    if (top.value->is_array()) {
      auto& a = top.value->get_ref<J::array_t&>();
      a.push_back(std::move(v));
      return &a.back();
    }
    auto& slots = static_cast<Slots&>(top.value->get_ref<J::object_t&>());
    if (const auto it = top.keys.find(key_); it != top.keys.end()) {
      slots[it->second].second = std::move(v);
      return &slots[it->second].second;
    }
    top.keys.emplace(key_, slots.size());
    slots.emplace_back(std::move(key_), std::move(v));
    return &slots.back().second;
  }
  bool put(J&& v) {
    place(std::move(v));
    return true;
  }
  bool open(J&& container) {
    stack_.push_back({place(std::move(container)), {}});
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  J& root_;
  std::vector<Open> stack_;
  std::string key_;
};

}  // namespace

nlohmann::ordered_json parse_ordered(std::string_view text, const std::string& where) {
  return parse_checked(text, where, "malformed JSON", [&] {
    nlohmann::ordered_json root;
    OrderedBuilder builder(root);
    nlohmann::ordered_json::sax_parse(text.begin(), text.end(), &builder);
    return root;
  });
}

json parse_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MS_CHECK(in.good(), path, ": cannot read the file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

std::string excerpt(std::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // not inside a character
  return std::string(s.substr(0, cut)) + "...";
}

std::string describe(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return v.get<bool>() ? "true" : "false";
    case json::value_t::string:
      return "the string \"" + excerpt(v.get_ref<const std::string&>()) + "\"";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return "the number " + v.dump();
    case json::value_t::array:
      return "an array of " + std::to_string(v.size()) + " items";
    case json::value_t::object:
      return "an object with " + std::to_string(v.size()) + " keys";
    default:
      return type_name(v);
  }
}

const std::string& as_string(const json& v, const std::string& where) {
  if (!v.is_string()) wrong_type(v, where, "a string");
  return v.get_ref<const std::string&>();
}

int64_t as_int(const json& v, const std::string& where, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) wrong_type(v, where, "an integer");
  const bool too_big = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi);
  const int64_t x = too_big ? hi : v.get<int64_t>();
  MS_CHECK(!too_big && x >= lo && x <= hi, where, ": ", v.dump(), " is outside the range [", lo, ", ", hi,
           "] that miniseq accepts here");
  return x;
}

double as_number(const json& v, const std::string& where) {
  if (!v.is_number()) wrong_type(v, where, "a number");
  return v.get<double>();
}

bool as_bool(const json& v, const std::string& where) {
  if (!v.is_boolean()) wrong_type(v, where, "true or false");
  return v.get<bool>();
}

const json& as_array(const json& v, const std::string& where) {
  if (!v.is_array()) wrong_type(v, where, "an array");
  return v;
}

const json& as_object(const json& v, const std::string& where) {
  if (!v.is_object()) wrong_type(v, where, "an object");
  return v;
}

Obj::Obj(const json& j, std::string where, bool file_level)
    : j_(as_object(j, where)), where_(std::move(where)), file_level_(file_level) {}

std::string Obj::at(std::string_view key) const {
  return where_ + (file_level_ ? ": " : ".") + std::string(key);
}

const json* Obj::find(const char* key) const {
  const auto it = j_.find(key);
  return it == j_.end() || it->is_null() ? nullptr : &*it;
}

const json& Obj::get(const char* key) const {
  const json* v = find(key);
  MS_CHECK(v, at(key), ": missing (a required key)");
  return *v;
}

std::string Obj::str(const char* key) const {
  return as_string(get(key), at(key));
}

std::string Obj::str(const char* key, std::string def) const {
  const json* v = find(key);
  return v ? as_string(*v, at(key)) : def;
}

int64_t Obj::integer(const char* key, int64_t lo, int64_t hi) const {
  return as_int(get(key), at(key), lo, hi);
}

int64_t Obj::integer_or(const char* key, int64_t def, int64_t lo, int64_t hi) const {
  const json* v = find(key);
  return v ? as_int(*v, at(key), lo, hi) : def;
}

double Obj::number_or(const char* key, double def) const {
  const json* v = find(key);
  return v ? as_number(*v, at(key)) : def;
}

std::optional<double> Obj::opt_number(const char* key) const {
  const json* v = find(key);
  return v ? std::optional<double>(as_number(*v, at(key))) : std::nullopt;
}

bool Obj::boolean(const char* key, bool def) const {
  const json* v = find(key);
  return v ? as_bool(*v, at(key)) : def;
}

const json& Obj::array(const char* key) const {
  return as_array(get(key), at(key));
}

Obj Obj::object(const char* key) const {
  return Obj(get(key), at(key));
}

}  // namespace miniseq::jsonio
