#include "miniseq/train/dataset.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "miniseq/core/check.h"
#include "miniseq/core/random.h"
#include "miniseq/train/token_cache.h"

namespace miniseq {

void Dataset::add_stream(const std::vector<int32_t>& tokens, const DataSpec& spec) {
  seq_ = spec.seq;
  for (size_t i = 0; i < tokens.size(); i += static_cast<size_t>(spec.seq)) {
    const size_t n = std::min(tokens.size() - i, static_cast<size_t>(spec.seq));
    if (n < 2) break;  // a last block of one token has nothing to predict
    ids_.insert(ids_.end(), tokens.begin() + static_cast<ptrdiff_t>(i), tokens.begin() + static_cast<ptrdiff_t>(i + n));
    labels_.insert(labels_.end(), tokens.begin() + static_cast<ptrdiff_t>(i),
                   tokens.begin() + static_cast<ptrdiff_t>(i + n));
    for (size_t k = n; k < static_cast<size_t>(spec.seq); ++k) {
      ids_.push_back(spec.pad_id);
      labels_.push_back(kIgnoreIndex);
    }
  }
  blocks_ = static_cast<int64_t>(ids_.size()) / spec.seq;
}

Dataset Dataset::from_stream(const std::vector<int32_t>& tokens, const DataSpec& spec) {
  Dataset d;
  d.add_stream(tokens, spec);
  d.doc_tokens_ = static_cast<int64_t>(tokens.size());
  d.seq_ = spec.seq;
  return d;
}

Dataset Dataset::from_jsonl(const std::string& path, const DataSpec& spec, const TokenizeFn& tokenize) {
  std::vector<std::vector<int32_t>> records_ids, records_labels;
  std::vector<std::string> texts;       // text documents, tokenized together below
  std::vector<size_t> text_record;      // record index of each text
  std::vector<int64_t> text_line;       // its line, for errors
  std::vector<int32_t> stream;
  bool all_exact = true, any_text = false;
  for_each_jsonl_record(path, "the training data (--data_path)", [&](const nlohmann::json& j, int64_t lineno) {
    if (j.contains("text")) {
      MS_CHECK(j["text"].is_string(), path, ":", lineno, ": \"text\" must be a string");
      MS_CHECK(static_cast<bool>(tokenize), path, ":", lineno,
               ": text documents need a tokenizer (tokenizer.json in the model directory), or give {\"input_ids\": ...}");
      texts.push_back(j["text"].get<std::string>());
      text_record.push_back(records_ids.size());
      text_line.push_back(lineno);
      any_text = true;
      all_exact = false;
      records_ids.emplace_back();
      records_labels.emplace_back();
    } else if (j.contains("input_ids")) {
      std::vector<int32_t> toks = json_token_ids(j, "input_ids", false, spec.vocab, path, lineno);
      std::vector<int32_t> labels =
          j.contains("labels") ? json_token_ids(j, "labels", true, spec.vocab, path, lineno) : toks;
      MS_CHECK(labels.size() == toks.size(), path, ":", lineno, ": labels has ", labels.size(),
               " entries but input_ids has ", toks.size());
      if (static_cast<int64_t>(toks.size()) != spec.seq) all_exact = false;
      records_ids.push_back(std::move(toks));
      records_labels.push_back(std::move(labels));
    } else {
      fail(path, ":", lineno, ": a record needs \"text\" or \"input_ids\"");
    }
  });
  if (!texts.empty()) {
    auto tokenized = tokenize(texts);
    for (size_t i = 0; i < texts.size(); ++i) {
      for (int32_t t : tokenized[i])
        MS_CHECK(t >= 0 && t < spec.vocab, path, ":", text_line[i], ": the tokenizer produced id ", t,
                 " outside the model's vocabulary [0, ", spec.vocab, "); tokenizer and model do not match");
      records_ids[text_record[i]] = std::move(tokenized[i]);
    }
  }
  MS_CHECK(!records_ids.empty(), path, ": no records (expected JSONL lines like {\"text\": \"...\"})");

  Dataset d;
  d.seq_ = spec.seq;
  if (all_exact && !any_text) {  // pre-tokenized blocks, used as they are (labels included)
    for (size_t r = 0; r < records_ids.size(); ++r) {
      d.ids_.insert(d.ids_.end(), records_ids[r].begin(), records_ids[r].end());
      d.labels_.insert(d.labels_.end(), records_labels[r].begin(), records_labels[r].end());
      d.doc_tokens_ += spec.seq;
    }
    d.blocks_ = static_cast<int64_t>(records_ids.size());
    return d;
  }
  for (const auto& doc : records_ids) {
    stream.insert(stream.end(), doc.begin(), doc.end());
    if (spec.eos_id >= 0) stream.push_back(spec.eos_id);
  }
  d.doc_tokens_ = static_cast<int64_t>(stream.size());
  // Checked before the blocks are laid out: a mistyped --model_max_length must not pad one block to its length.
  MS_CHECK(d.doc_tokens_ >= spec.seq, path, " holds ", d.doc_tokens_,
           " tokens, less than one sequence of --model_max_length ", spec.seq,
           "; lower --model_max_length or give more data");
  d.add_stream(stream, spec);
  return d;
}

std::vector<int64_t> Dataset::order(uint64_t seed, int64_t epoch) const {
  std::vector<int64_t> o(static_cast<size_t>(size()));
  for (size_t i = 0; i < o.size(); ++i) o[i] = static_cast<int64_t>(i);
  Rng rng(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(epoch) + 1);
  for (size_t i = o.size(); i > 1; --i) std::swap(o[i - 1], o[static_cast<size_t>(rng.below(i))]);
  return o;
}

Dataset Dataset::from_jsonl_cached(const std::string& path, const DataSpec& spec, const TokenizeFn& tokenize,
                                   const std::string& key, bool progress) {
  // Pre-tokenized blocks keep their labels: read in memory, as from_jsonl does.
  bool blocks = false;
  {
    std::ifstream in(path);
    MS_CHECK(in.good(), path, ": cannot read the training data (--data_path)");
    std::string line;
    while (std::getline(in, line) && line.find_first_not_of(" \t\r") == std::string::npos) {
    }
    try {
      const auto j = nlohmann::json::parse(line);
      blocks = j.is_object() && j.contains("input_ids") && j["input_ids"].is_array() &&
               static_cast<int64_t>(j["input_ids"].size()) == spec.seq;
    } catch (const std::exception&) {
      // from_jsonl names the problem
    }
  }
  if (blocks) return from_jsonl(path, spec, tokenize);
  auto ids = [&](const nlohmann::json& j, int64_t lineno) {
    MS_CHECK(j.is_object() && j.contains("input_ids"), path, ":", lineno, ": a record needs \"text\" or \"input_ids\"");
    return json_token_ids(j, "input_ids", false, spec.vocab, path, lineno);
  };
  auto cache = std::make_shared<TokenCache>(
      TokenCache::open_or_build(path, key, spec.eos_id, spec.vocab, tokenize, ids, progress));
  Dataset d;
  d.seq_ = spec.seq;
  d.pad_id_ = spec.pad_id;
  d.doc_tokens_ = cache->size();
  MS_CHECK(d.doc_tokens_ >= spec.seq, path, " holds ", d.doc_tokens_,
           " tokens, less than one sequence of --model_max_length ", spec.seq,
           "; lower --model_max_length or give more data");
  // The stream's blocks as add_stream cuts them: full blocks, and a last partial one of at least 2 tokens.
  d.blocks_ = d.doc_tokens_ / spec.seq + (d.doc_tokens_ % spec.seq >= 2 ? 1 : 0);
  d.cache_ = std::move(cache);
  return d;
}

Dataset Dataset::from_examples(const std::vector<std::vector<int32_t>>& ids,
                               const std::vector<int64_t>& prompt_len, int64_t max_len, int32_t pad_id) {
  MS_CHECK(ids.size() == prompt_len.size(), "internal: one prompt length per example");
  Dataset d;
  d.seq_ = max_len;
  d.pad_id_ = pad_id;
  d.offsets_.push_back(0);
  for (size_t i = 0; i < ids.size(); ++i) {
    MS_CHECK(!ids[i].empty() && static_cast<int64_t>(ids[i].size()) <= max_len, "internal: an example of ",
             ids[i].size(), " tokens (1..", max_len, " expected)");
    d.ids_.insert(d.ids_.end(), ids[i].begin(), ids[i].end());
    d.offsets_.push_back(static_cast<int64_t>(d.ids_.size()));
    d.prompt_len_.push_back(prompt_len[i]);
  }
  d.blocks_ = static_cast<int64_t>(ids.size());
  d.doc_tokens_ = static_cast<int64_t>(d.ids_.size());
  return d;
}

TokenBatch Dataset::batch(const std::vector<int64_t>& blocks) const {
  TokenBatch b;
  b.batch = static_cast<int64_t>(blocks.size());
  b.seq = seq_;
  if (examples()) {  // right-padded to the longest example of the batch: ids pad_id, labels -100
    b.seq = 0;
    for (int64_t e : blocks) b.seq = std::max(b.seq, offsets_[e + 1] - offsets_[e]);
    b.input_ids.assign(static_cast<size_t>(b.rows()), pad_id_);
    b.labels.assign(static_cast<size_t>(b.rows()), kIgnoreIndex);
    for (size_t r = 0; r < blocks.size(); ++r) {
      const int64_t begin = offsets_[blocks[r]], n = offsets_[blocks[r] + 1] - begin;
      const auto row = static_cast<ptrdiff_t>(r) * b.seq;
      std::copy_n(ids_.begin() + begin, n, b.input_ids.begin() + row);
      const int64_t masked = std::min(prompt_len_[blocks[r]], n);
      std::copy_n(ids_.begin() + begin + masked, n - masked, b.labels.begin() + row + masked);
    }
    return b;
  }
  if (cache_) {  // cut from the mapped stream; the last block padded (labels -100)
    b.input_ids.resize(static_cast<size_t>(b.batch * seq_), pad_id_);
    b.labels.resize(static_cast<size_t>(b.batch * seq_), kIgnoreIndex);
    for (size_t r = 0; r < blocks.size(); ++r) {
      const int64_t begin = blocks[r] * seq_, n = std::min(seq_, doc_tokens_ - begin);
      int32_t* ids = b.input_ids.data() + r * static_cast<size_t>(seq_);
      cache_->read(begin, n, ids);
      std::copy(ids, ids + n, b.labels.data() + r * static_cast<size_t>(seq_));
    }
    return b;
  }
  for (int64_t blk : blocks) {
    const auto begin = static_cast<ptrdiff_t>(blk * seq_);
    b.input_ids.insert(b.input_ids.end(), ids_.begin() + begin, ids_.begin() + begin + seq_);
    b.labels.insert(b.labels.end(), labels_.begin() + begin, labels_.begin() + begin + seq_);
  }
  return b;
}

}  // namespace miniseq
