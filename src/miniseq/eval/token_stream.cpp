#include "miniseq/eval/token_stream.h"

#include <fstream>
#include <sstream>

#include "miniseq/core/check.h"
#include "miniseq/model/batch.h"

namespace miniseq {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

StreamFormat stream_format_for(const std::string& path) {
  if (ends_with(path, ".jsonl")) return StreamFormat::Jsonl;
  if (ends_with(path, ".txt") || ends_with(path, ".text") || ends_with(path, ".md")) return StreamFormat::Text;
  return StreamFormat::Binary;
}

StreamFormat parse_stream_format(const std::string& name) {
  if (name == "bin") return StreamFormat::Binary;
  if (name == "jsonl") return StreamFormat::Jsonl;
  if (name == "text") return StreamFormat::Text;
  fail("unknown data format '", name, "': use bin (flat token ids, see --token_dtype), jsonl or text");
}

std::vector<int32_t> read_token_binary(const std::string& path, int width, int64_t vocab) {
  MS_CHECK(width == 2 || width == 4, "internal: token width ", width);
  std::ifstream in(path, std::ios::binary);
  MS_CHECK(in, path, ": cannot open the token file");
  in.seekg(0, std::ios::end);
  const auto bytes = static_cast<int64_t>(in.tellg());
  in.seekg(0);
  const char* dtype = width == 2 ? "uint16" : "uint32";
  MS_CHECK(bytes % width == 0, path, ": ", bytes, " bytes is not a whole number of ", dtype,
           " token ids (", width, " bytes each); is --token_dtype right, or is the file truncated?");
  MS_CHECK(bytes > 0, path, ": the token file is empty");
  const int64_t n = bytes / width;
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::vector<unsigned char> raw(static_cast<size_t>(bytes));
  in.read(reinterpret_cast<char*>(raw.data()), bytes);
  MS_CHECK(in.gcount() == bytes, path, ": read ", in.gcount(), " of ", bytes, " bytes");
  for (int64_t i = 0; i < n; ++i) {
    const unsigned char* p = raw.data() + i * width;
    uint32_t id = p[0] | (uint32_t{p[1]} << 8);
    if (width == 4) id |= (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
    MS_CHECK(static_cast<int64_t>(id) < vocab, path, ": token ", i, " (byte offset ", i * width, ") is ", id,
             ", outside the model's vocabulary [0, ", vocab, "); was the file written for another tokenizer, or with "
             "another --token_dtype than ", dtype, "?");
    ids[static_cast<size_t>(i)] = static_cast<int32_t>(id);
  }
  return ids;
}

std::vector<int32_t> read_token_text(const std::string& path, StreamFormat format, int64_t vocab,
                                     const DocumentTokenizer& tokenize) {
  // Each entry is a text to tokenize, or ids given directly (pretokenized JSONL).
  struct Doc {
    std::string text;
    std::vector<int32_t> ids;
    bool tokenized = false;
  };
  std::vector<Doc> docs;
  if (format == StreamFormat::Text) {
    std::ifstream in(path, std::ios::binary);
    MS_CHECK(in, path, ": cannot read the data file");
    std::stringstream ss;
    ss << in.rdbuf();
    docs.push_back({ss.str(), {}, false});
  } else {
    for_each_jsonl_record(path, "the data file", [&](const nlohmann::json& rec, int64_t lineno) {
      if (rec.contains("input_ids")) {
        docs.push_back({{}, json_token_ids(rec, "input_ids", false, vocab, path, lineno), true});
      } else {
        MS_CHECK(rec.contains("text") && rec["text"].is_string(), path, ":", lineno,
                 ": expected {\"text\": \"...\"} or {\"input_ids\": [...]}");
        docs.push_back({rec["text"].get<std::string>(), {}, false});
      }
    });
  }
  std::vector<std::string> texts;
  for (const auto& d : docs)
    if (!d.tokenized) texts.push_back(d.text);
  std::vector<std::vector<int32_t>> encoded;
  if (!texts.empty()) {
    MS_CHECK(static_cast<bool>(tokenize), path,
             ": text data needs the model's tokenizer.json (none was found in the model directory)");
    encoded = tokenize(texts);
  }
  std::vector<int32_t> stream;
  size_t next = 0;
  for (const auto& d : docs) {
    const std::vector<int32_t>& ids = d.tokenized ? d.ids : encoded[next++];
    for (int32_t id : ids)
      MS_CHECK(id >= 0 && id < vocab, path, ": the tokenizer produced id ", id,
               ", outside the model's vocabulary [0, ", vocab, "): the tokenizer does not belong to this model");
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  MS_CHECK(!stream.empty(), path, ": no tokens in the data file");
  return stream;
}

}  // namespace miniseq
