// tokenizer.json "pre_tokenizer": splits normalized text into the pieces ("words") that the BPE model encodes
// independently. Supported: Sequence, Split (String or Regex pattern, every SplitDelimiterBehavior, invert),
// ByteLevel (add_prefix_space, use_regex), Metaspace (replacement, prepend_scheme, split), Digits.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "miniseq/io/tokenizer/regex.h"

namespace miniseq::tok {

// Pieces of text: spans [begin, end) into one buffer, in order.
struct PreTokens {
  struct Span {
    uint32_t begin, end;
  };
  std::string text;
  std::vector<Span> spans;
  std::string_view piece(const Span& s) const {
    return std::string_view(text).substr(s.begin, s.end - s.begin);
  }
};

class PreTokenizer {
 public:
  // j: the "pre_tokenizer" value (null allowed: the whole text is one piece).
  static PreTokenizer from_json(const nlohmann::json& j, const std::string& where);

  // Splits `text` into pieces. at_text_start: this text begins at offset 0 of the user's input (Metaspace
  // prepend_scheme "first" prepends only there).
  void apply(std::string text, bool at_text_start, PreTokens& out) const;

  bool empty() const { return steps_.empty(); }

 private:
  enum class Kind { Split, ByteLevel, Metaspace };
  enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
  enum class Prepend { Always, First, Never };
  struct Step {
    Kind kind = Kind::Split;
    std::shared_ptr<const Regex> regex;  // Split pattern; ByteLevel use_regex pattern (null: no regex)
    Behavior behavior = Behavior::Isolated;
    bool invert = false;
    bool add_prefix_space = false;      // ByteLevel
    std::string replacement;            // Metaspace
    Prepend prepend = Prepend::Always;  // Metaspace
    bool split = true;                  // Metaspace
  };
  void add(const nlohmann::json& j, const std::string& where);
  void run_split(const Step& s, PreTokens& p) const;
  void run_byte_level(const Step& s, PreTokens& p) const;
  void run_metaspace(const Step& s, bool at_text_start, PreTokens& p) const;
  std::vector<Step> steps_;
};

}  // namespace miniseq::tok
