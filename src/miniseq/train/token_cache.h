// The token stream of a JSONL training file, tokenized once and kept beside it (DATA.miniseq-tokens): every
// document's ids followed by EOS, flat, as uint16 when the vocabulary allows it and uint32 otherwise. It is
// read from the file as needed, so a run's memory does not grow with its data (LongLoRA's RedPajama sample is
// ~1B tokens), and rebuilt only when the data file (size, modification time), the tokenizer (a key the caller
// gives), the EOS id or the vocabulary changed. Written to a temporary file and renamed into place; when the
// data's directory is not writable the cache goes to the temporary directory instead. Blocks are read with
// pread, not a memory map: the pages read stay in the kernel's page cache, never in the process's resident
// memory, so the RSS of a run does not grow over an epoch either.
//
// File layout: a 64-byte header {magic "MSTOKEN1", uint32 width (2 or 4), uint32 reserved, uint64 tokens,
// uint64 key, 32 bytes reserved}, then the ids.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace miniseq {

class TokenCache {
 public:
  // Tokenizes batches of documents in parallel (results in input order).
  using TokenizeFn = std::function<std::vector<std::vector<int32_t>>(const std::vector<std::string>& texts)>;
  // Called for each record that is not {"text"}: its ids (checked by the caller), or an error.
  using IdsFn = std::function<std::vector<int32_t>(const nlohmann::json& record, int64_t line)>;

  // The cache of `jsonl` (its records: {"text"} through `tokenize`, others through `ids`), built when missing
  // or stale. `key` names the tokenizer; ids must lie in [0, vocab).
  static TokenCache open_or_build(const std::string& jsonl, const std::string& key, int32_t eos_id,
                                  int64_t vocab, const TokenizeFn& tokenize, const IdsFn& ids, bool progress);

  TokenCache() = default;
  TokenCache(TokenCache&& o) noexcept { *this = std::move(o); }
  TokenCache& operator=(TokenCache&& o) noexcept;
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;
  ~TokenCache();

  int64_t size() const { return tokens_; }
  // ids [begin, begin + n) into out.
  void read(int64_t begin, int64_t n, int32_t* out) const;
  const std::string& path() const { return path_; }
  bool built() const { return built_; }  // this call tokenized (false: an existing cache was reused)

 private:
  std::string path_;
  int fd_ = -1;
  int width_ = 4;
  int64_t tokens_ = 0;
  bool built_ = false;
};

}  // namespace miniseq
