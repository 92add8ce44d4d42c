#include "miniseq/io/tokenizer/unicode_nfc.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

#include "miniseq/io/tokenizer/utf8.h"

namespace miniseq::tok {

namespace {
struct CccRange {
  char32_t first, last;
  uint8_t ccc;
};
struct Decomposition {
  char32_t cp;
  uint16_t offset;
  uint8_t length;
};
struct Composition {
  char32_t first, second, composite;
};
struct CodeRange {
  char32_t first, last;
};
#include "miniseq/io/tokenizer/unicode_nfc_tables.inc"

// Hangul syllables (Unicode 3.12): algorithmic decomposition and composition.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

void decompose(char32_t c, std::vector<char32_t>& out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    const char32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto* end = std::end(kDecompositions);
  const auto* it = std::lower_bound(std::begin(kDecompositions), end, c,
                                    [](const Decomposition& d, char32_t v) { return d.cp < v; });
  if (it != end && it->cp == c)
    out.insert(out.end(), kDecompositionData + it->offset, kDecompositionData + it->offset + it->length);
  else
    out.push_back(c);
}

// Primary composite of (a, b), or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto* end = std::end(kCompositions);
  const auto* it = std::lower_bound(std::begin(kCompositions), end, std::pair{a, b},
                                    [](const Composition& x, std::pair<char32_t, char32_t> v) {
                                      return x.first < v.first || (x.first == v.first && x.second < v.second);
                                    });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}
bool nfc_unsafe(char32_t c) {
  const auto* end = std::end(kNfcUnsafe);
  const auto* it = std::upper_bound(std::begin(kNfcUnsafe), end, c,
                                    [](char32_t v, const CodeRange& r) { return v < r.first; });
  return it != std::begin(kNfcUnsafe) && c <= (it - 1)->last;
}

}  // namespace

bool nfc_quick_check(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      i = skip_ascii(text, i);
      continue;
    }
    if (static_cast<unsigned char>(text[i]) < 0xCC) {  // below U+0300: always stable
      i += utf8_len(static_cast<unsigned char>(text[i]));
      continue;
    }
    if (nfc_unsafe(utf8_next(text, i))) return false;
  }
  return true;
}

int canonical_combining_class(char32_t c) {
  if (c < 0x300) return 0;
  const auto* end = std::end(kCccRanges);
  const auto* it = std::upper_bound(std::begin(kCccRanges), end, c,
                                    [](char32_t v, const CccRange& r) { return v < r.first; });
  if (it == std::begin(kCccRanges)) return 0;
  --it;
  return c <= it->last ? it->ccc : 0;
}

std::string nfc(std::string_view text) {
  if (nfc_quick_check(text)) return std::string(text);

  // 1. Full canonical decomposition.
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  for (size_t i = 0; i < text.size();) decompose(utf8_next(text, i), cps);
  // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
  std::vector<int> ccc(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) ccc[i] = canonical_combining_class(cps[i]);
  for (size_t i = 0; i < cps.size();) {
    if (ccc[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && ccc[j] != 0) ++j;
    if (j - i > 1) {
      std::vector<std::pair<int, char32_t>> run;
      for (size_t k = i; k < j; ++k) run.emplace_back(ccc[k], cps[k]);
      std::stable_sort(run.begin(), run.end(),
                       [](const auto& x, const auto& y) { return x.first < y.first; });
      for (size_t k = i; k < j; ++k) ccc[k] = run[k - i].first, cps[k] = run[k - i].second;
    }
    i = j;
  }
  // 3. Canonical composition: each character combines with the last starter unless blocked.
  size_t starter = SIZE_MAX, n = 0;
  int last_ccc = -1;  // class of the last character kept after the starter (-1: none)
  for (size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    const int cc = ccc[i];
    const bool unblocked = last_ccc == -1 || (last_ccc != 0 && last_ccc < cc);
    if (starter != SIZE_MAX && unblocked) {
      if (const char32_t composite = compose(cps[starter], c)) {
        cps[starter] = composite;
        continue;
      }
    }
    if (cc == 0) {
      starter = n;
      last_ccc = -1;
    } else {
      last_ccc = cc;
    }
    cps[n] = c;
    ccc[n] = cc;
    ++n;
  }
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < n; ++i) utf8_append(out, cps[i]);
  return out;
}

}  // namespace miniseq::tok
