// tokenizer.json "normalizer": a sequence of string rewrites applied to each piece of text between added
// tokens. Supported: Sequence, Prepend, Replace (String or Regex pattern), NFC, Strip. Others are an error
// naming the type.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "miniseq/io/tokenizer/regex.h"

namespace miniseq::tok {

class Normalizer {
 public:
  // j: the "normalizer" value (null allowed: no normalization). where: JSON path for error messages.
  static Normalizer from_json(const nlohmann::json& j, const std::string& where);

  void apply(std::string& text) const;
  bool empty() const { return steps_.empty(); }

 private:
  enum class Kind { Prepend, Replace, NFC, Strip };
  struct Step {
    Kind kind;
    std::string a, b;                    // Prepend: a = prefix; Replace: a = literal pattern, b = content
    std::shared_ptr<const Regex> regex;  // Replace with a Regex pattern
    bool left = false, right = false;    // Strip
  };
  void add(const nlohmann::json& j, const std::string& where, int depth);  // depth: Sequence nesting
  std::vector<Step> steps_;
};

// Replaces every occurrence of `from` (non-empty) by `to`.
void replace_all(std::string& text, const std::string& from, const std::string& to);

}  // namespace miniseq::tok
