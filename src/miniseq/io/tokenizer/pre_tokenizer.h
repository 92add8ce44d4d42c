// tokenizer.json "pre_tokenizer": splits normalized text into the pieces ("words") that the BPE model encodes
// independently. Supported: Sequence, Split (String or Regex pattern, every SplitDelimiterBehavior, invert),
// ByteLevel (add_prefix_space, use_regex), Metaspace (replacement, prepend_scheme, split), Digits.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "miniseq/io/tokenizer/regex.h"

namespace miniseq::tok {

// Pieces of text: spans [begin, end) into `text`, in order. `text` is the caller's input until a step
// rewrites it (prefix space, Metaspace), then `buffer`. The object is reused between calls so that its
// buffers stay allocated.
struct PreTokens {
  struct Span {
    uint32_t begin, end;
  };
  std::string_view text;
  std::vector<Span> spans;
  std::string buffer, scratch;      // owned text; scratch: the next step's output
  std::vector<Span> scratch_spans;  // the next step's spans
  std::string_view piece(const Span& s) const { return text.substr(s.begin, s.end - s.begin); }
  // Makes scratch / scratch_spans (filled by a step) the current text and spans.
  void commit_text() {
    buffer.swap(scratch);
    text = buffer;
    spans.swap(scratch_spans);
  }
};

class PreTokenizer {
 public:
  // j: the "pre_tokenizer" value (null allowed: the whole text is one piece).
  static PreTokenizer from_json(const nlohmann::json& j, const std::string& where);

  // Splits `text` into pieces. at_text_start: this text begins at offset 0 of the user's input (Metaspace
  // prepend_scheme "first" prepends only there). `text` must outlive the use of `out`.
  void apply(std::string_view text, bool at_text_start, PreTokens& out) const;

  // True when the last step is ByteLevel. apply() then leaves the pieces as raw bytes (the byte -> character
  // mapping is left to the model, which only needs it for pieces that miss its cache).
  bool byte_level_deferred() const { return !steps_.empty() && steps_.back().kind == Kind::ByteLevel; }

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
  void add(const nlohmann::json& j, const std::string& where, int depth);  // depth: Sequence nesting
  void run_split(const Step& s, PreTokens& p) const;
  void run_byte_level(const Step& s, bool map_bytes, PreTokens& p) const;
  void run_metaspace(const Step& s, bool at_text_start, PreTokens& p) const;
  std::vector<Step> steps_;
};

}  // namespace miniseq::tok
