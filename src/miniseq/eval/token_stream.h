// The token stream of an evaluation: LongLoRA's flat binary of token ids (PG19 / proof-pile validation sets are
// uint16, as eval.py's np.memmap(dtype=np.uint16) reads them; uint32 for vocabularies past 65536), or text tokenized
// on the fly (a JSONL file of documents, or a plain text file as one document).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace miniseq {

enum class StreamFormat { Binary, Jsonl, Text };

// From the file name: .jsonl → Jsonl, .txt/.text/.md → Text, anything else → Binary.
StreamFormat stream_format_for(const std::string& path);
// "bin" | "jsonl" | "text"; throws naming the accepted spellings.
StreamFormat parse_stream_format(const std::string& name);

// A flat little-endian binary of ids of `width` bytes (2 or 4). Every id must lie in [0, vocab). Errors name the
// file and, for a bad id, its index and byte offset.
std::vector<int32_t> read_token_binary(const std::string& path, int width, int64_t vocab);

// Tokenizes documents (each with the tokenizer's BOS/EOS as configured), results in input order.
using DocumentTokenizer = std::function<std::vector<std::vector<int32_t>>(const std::vector<std::string>& docs)>;

// JSONL: one document per line, {"text": "..."} (tokenized) or {"input_ids": [...]}; plain text: the whole file is
// one document. Documents are concatenated in file order. Ids must lie in [0, vocab).
std::vector<int32_t> read_token_text(const std::string& path, StreamFormat format, int64_t vocab,
                                     const DocumentTokenizer& tokenize);

}  // namespace miniseq
