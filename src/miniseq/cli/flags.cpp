#include "miniseq/cli/flags.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "miniseq/core/check.h"

namespace miniseq::cli {

bool parse_bool(const std::string& s, bool* out) {
  // transformers' HfArgumentParser (string_to_bool), case-insensitive.
  std::string l = s;
  for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (l == "true" || l == "t" || l == "yes" || l == "y" || l == "1") *out = true;
  else if (l == "false" || l == "f" || l == "no" || l == "n" || l == "0") *out = false;
  else return false;
  return true;
}

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

const char* kind_name(FlagKind k) {
  switch (k) {
    case FlagKind::String: return "string";
    case FlagKind::Int: return "int";
    case FlagKind::Float: return "float";
    case FlagKind::Bool: return "bool";
  }
  return "";
}
}  // namespace

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

Flags::Flags(std::string command, std::string usage, std::vector<FlagSpec> specs)
    : command_(std::move(command)), usage_(std::move(usage)), specs_(std::move(specs)) {
  for (const auto& s : specs_)
    if (!s.default_value.empty()) values_[s.name] = s.default_value;
}

const FlagSpec& Flags::spec(const std::string& name) const {
  for (const auto& s : specs_)
    if (s.name == name) return s;
  fail("internal: flag --", name, " is not declared for `miniseq ", command_, "`");
}

bool Flags::parse(const std::vector<std::string>& args) {
  std::vector<std::string> names;
  for (const auto& s : specs_) names.push_back(s.name);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      std::cout << help();
      return false;
    }
    if (a.rfind("--", 0) != 0 || a.size() == 2) {
      if (positional_.size() >= max_positional_) {
        const bool after_value = i >= 2 && args[i - 2].rfind("--", 0) == 0 && args[i - 2].find('=') == std::string::npos;
        fail("unexpected argument '", a, "' for `miniseq ", command_, "`",
             after_value ? "; a flag takes one value: quote values with spaces, e.g. " + args[i - 2] + " \"" +
                               args[i - 1] + " " + a + " ...\""
                         : std::string(),
             " (see `miniseq ", command_, " --help`)");
      }
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    std::replace(name.begin(), name.end(), '-', '_');
    auto it = std::find(names.begin(), names.end(), name);
    MS_CHECK(it != names.end(), "unknown flag --", name, " for `miniseq ", command_, "`; did you mean --",
             closest(name, names), "? (see `miniseq ", command_, " --help`)");
    const FlagSpec& s = spec(name);
    if (!has_value) {
      bool next_is_value = i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0;
      if (s.kind == FlagKind::Bool) {
        // A bare --flag means True; a following word is its value and must be a boolean.
        value = next_is_value ? args[++i] : "True";
      } else {
        MS_CHECK(next_is_value, "flag --", name, " needs a ", kind_name(s.kind), " value");
        value = args[++i];
      }
    }
    // Validate the value's type now so that errors name the flag.
    switch (s.kind) {
      case FlagKind::Bool: {
        bool b;
        MS_CHECK(parse_bool(value, &b), "flag --", name, " expects True or False, got '", value, "'");
        break;
      }
      case FlagKind::Int: {
        char* end = nullptr;
        errno = 0;
        std::strtoll(value.c_str(), &end, 10);
        MS_CHECK(!value.empty() && *end == 0, "flag --", name, " expects an integer, got '", value, "'");
        MS_CHECK(errno != ERANGE, "flag --", name, " value '", value, "' is out of range (at most ",
                 std::to_string(INT64_MAX), ")");
        break;
      }
      case FlagKind::Float: {
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(value.c_str(), &end);
        MS_CHECK(!value.empty() && *end == 0, "flag --", name, " expects a number, got '", value, "'");
        MS_CHECK(errno != ERANGE || v == 0.0, "flag --", name, " value '", value, "' is out of range");
        MS_CHECK(std::isfinite(v), "flag --", name, " must be a finite number, got '", value, "'");
        break;
      }
      case FlagKind::String: break;
    }
    values_[name] = value;
    given_[name] = true;
  }
  return true;
}

bool Flags::has(const std::string& name) const {
  spec(name);
  return values_.count(name) != 0;
}

std::string Flags::str(const std::string& name) const {
  spec(name);
  auto it = values_.find(name);
  return it == values_.end() ? std::string() : it->second;
}

int64_t Flags::i64(const std::string& name) const {
  MS_CHECK(has(name), "flag --", name, " is required (see `miniseq ", command_, " --help`)");
  return std::strtoll(str(name).c_str(), nullptr, 10);
}

double Flags::f64(const std::string& name) const {
  MS_CHECK(has(name), "flag --", name, " is required (see `miniseq ", command_, " --help`)");
  return std::strtod(str(name).c_str(), nullptr);
}

bool Flags::boolean(const std::string& name) const {
  bool b = false;
  if (has(name)) parse_bool(str(name), &b);
  return b;
}

std::string Flags::help() const {
  std::ostringstream os;
  os << "usage: " << usage_ << "\n\nflags:\n";
  for (const auto& s : specs_) {
    std::string left = "  --" + s.name + " <" + kind_name(s.kind) + ">";
    os << left << std::string(left.size() < 40 ? 40 - left.size() : 1, ' ') << s.help;
    if (!s.default_value.empty()) os << " (default: " << s.default_value << ")";
    os << "\n";
  }
  return os.str();
}

std::string Flags::effective_config() const {
  std::ostringstream os;
  size_t defaults = 0;
  for (const auto& s : specs_) {
    auto it = values_.find(s.name);
    const std::string value = it == values_.end() ? "" : it->second;
    if (!given(s.name) && value == s.default_value) {
      ++defaults;
      continue;
    }
    os << "  " << s.name << " = " << value << "\n";
  }
  if (defaults) os << "  (" << defaults << " more at their defaults: `miniseq " << command_ << " --help`)\n";
  return os.str();
}

}  // namespace miniseq::cli
