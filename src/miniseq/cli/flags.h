// Command-line flags declared once: each command lists its flags in a table (name, default, help), and parsing,
// --help and the printed effective configuration all come from that table. Accepts `--flag value` and
// `--flag=value`; booleans as transformers accepts them (True/False, yes/no, 1/0, any case; a bare `--flag`
// means True); an unknown flag is an error
// naming the closest known one. Positional arguments are collected in order.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace miniseq::cli {

enum class FlagKind { String, Int, Float, Bool };

struct FlagSpec {
  std::string name;           // without the leading dashes, LongLoRA/HF spelling: "model_max_length"
  FlagKind kind = FlagKind::String;
  std::string default_value;  // "" = unset
  std::string help;
};

class Flags {
 public:
  Flags(std::string command, std::string usage, std::vector<FlagSpec> specs);

  // Parses args (without the program and command names). Throws miniseq::Error on bad input. Returns false
  // when --help was given (help already printed to stdout).
  bool parse(const std::vector<std::string>& args);
  // Arguments that are not flags: none unless allowed here (a stray word is an error, never silently dropped:
  // `--prompt The pass key is` would otherwise generate from "The").
  void allow_positional(size_t n) { max_positional_ = n; }

  bool has(const std::string& name) const;  // set on the command line or by a non-empty default
  bool given(const std::string& name) const { return given_.count(name) != 0; }  // set on the command line
  std::string str(const std::string& name) const;
  int64_t i64(const std::string& name) const;
  double f64(const std::string& name) const;
  bool boolean(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

  std::string help() const;
  // "name = value" for each flag given or set away from its default, and how many keep their defaults (logs).
  std::string effective_config() const;

 private:
  const FlagSpec& spec(const std::string& name) const;
  std::string command_, usage_;
  std::vector<FlagSpec> specs_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> given_;
  std::vector<std::string> positional_;
  size_t max_positional_ = 0;
};

bool parse_bool(const std::string& s, bool* out);
// Closest candidate by edit distance (for "did you mean").
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace miniseq::cli
