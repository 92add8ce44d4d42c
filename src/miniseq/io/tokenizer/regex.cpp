#define PCRE2_CODE_UNIT_WIDTH 8
#include "miniseq/io/tokenizer/regex.h"

#include <pcre2.h>

#include "miniseq/core/check.h"

namespace miniseq::tok {

namespace {
constexpr const char* kOnigSpace = "\\t-\\r\\x{85}\\p{Z}";

// Per-thread PCRE2 scratch: match data and a JIT stack large enough for long whitespace runs.
struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(16, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};
MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}
}  // namespace

std::string onig_to_pcre2(std::string_view p) {
  std::string out;
  int class_depth = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[i + 1];
      if (n == 's')
        out += class_depth ? std::string(kOnigSpace) : "[" + std::string(kOnigSpace) + "]";
      else if (n == 'S' && !class_depth)
        out += "[^" + std::string(kOnigSpace) + "]";
      else
        out += p.substr(i, 2);
      ++i;
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a literal ] first in a class
      continue;
    }
    if (c == ']' && class_depth) --class_depth;
    out += c;
  }
  return out;
}

std::string regex_quote(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern, const std::string& where) : pattern_(pattern) {
  const std::string translated = onig_to_pcre2(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                             PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail(where, ": regex '", pattern, "' does not compile (PCRE2 at offset ", offset, ": ",
         reinterpret_cast<const char*>(msg), "); fix the pattern in tokenizer.json");
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  scan_ = scan_pattern_of(pattern);
}

Regex::~Regex() {
  pcre2_code_free(static_cast<pcre2_code*>(code_));
}

bool Regex::match_from(std::string_view text, size_t pos, size_t* begin, size_t* end) const {
  auto* code = static_cast<pcre2_code*>(code_);
  auto& s = scratch();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), pos, 0, s.data, s.context)
                : pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.data, s.context);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // pathological input: retry with the interpreter
    rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, s.data, s.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  MS_CHECK(rc >= 0, "tokenizer regex '", pattern_, "' failed on the input (PCRE2 error ", rc, ")");
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
  *begin = ov[0], *end = ov[1];
  return true;
}

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  size_t pos = 0;
  while (pos < text.size()) {
    if (scan_ != ScanPattern::kNone) {
      if (const size_t e = scan_match(scan_, text, pos)) {  // the ASCII fast path
        out.emplace_back(pos, e);
        pos = e;
        continue;
      }
    }
    size_t b, e;
    if (!match_from(text, pos, &b, &e)) break;
    if (e > b) {
      out.emplace_back(b, e);
      pos = e;
    } else {  // empty match: step over one character
      pos = b + 1;
      while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
}

}  // namespace miniseq::tok
