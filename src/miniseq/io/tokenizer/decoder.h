// tokenizer.json "decoder": turns the token strings of an id sequence back into text. Supported: Sequence,
// Replace (String pattern), ByteFallback (<0xXX> runs to bytes, U+FFFD per byte when not UTF-8), Fuse,
// Strip, ByteLevel, Metaspace. Like Hugging Face, each step maps a list of token strings to a new list.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace miniseq::tok {

class Decoder {
 public:
  // j: the "decoder" value (null: tokens are joined with spaces, as Hugging Face without a decoder).
  static Decoder from_json(const nlohmann::json& j, const std::string& where);

  std::string decode(std::vector<std::string> tokens) const;

 private:
  enum class Kind { Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace };
  struct Step {
    Kind kind;
    std::string a, b;            // Replace: pattern, content; Metaspace: replacement
    size_t start = 0, stop = 0;  // Strip: characters to cut (content a)
    bool prepend = true;         // Metaspace: prepend_scheme != never
  };
  void add(const nlohmann::json& j, const std::string& where, int depth);  // depth: Sequence nesting
  bool none_ = true;
  std::vector<Step> steps_;
};

}  // namespace miniseq::tok
