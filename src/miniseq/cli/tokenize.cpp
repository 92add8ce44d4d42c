// `miniseq tokenize --tokenizer DIR [--in FILE] [--decode]`: each input line is one text, printed as a JSON
// array of ids (one per line, in input order); with --decode each line is a JSON id array, printed as its
// text. Lines are encoded in parallel in batches.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "miniseq/cli/commands.h"
#include "miniseq/cli/flags.h"
#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"
#include "miniseq/io/tokenizer/tokenizer.h"

namespace miniseq::cli {

namespace {
constexpr size_t kBatchLines = 4096;

void print_ids(const std::vector<int32_t>& ids, std::string& buf) {
  buf.clear();
  buf += '[';
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) buf += ',';
    buf += std::to_string(ids[i]);
  }
  buf += "]\n";
  std::fwrite(buf.data(), 1, buf.size(), stdout);
}
}  // namespace

int cmd_tokenize(const Args& args) {
  Flags f("tokenize", "miniseq tokenize --tokenizer DIR [--in FILE] [--decode]",
          {{"tokenizer", FlagKind::String, "", "directory with tokenizer.json (and tokenizer_config.json)"},
           {"in", FlagKind::String, "-",
            "input file, one text (or JSON id array with --decode) per line; - = stdin"},
           {"decode", FlagKind::Bool, "False", "read JSON id arrays and print their text"},
           {"add_special_tokens", FlagKind::Bool, "True", "add BOS/EOS as the tokenizer is configured to"},
           {"skip_special_tokens", FlagKind::Bool, "False",
            "with --decode: leave special tokens out of the text"},
           {"threads", FlagKind::Int, "0", "encoding threads (0 = all cores)"}});
  if (!f.parse(args)) return 0;
  MS_CHECK(!f.str("tokenizer").empty(),
           "tokenize: --tokenizer DIR is required (a model or tokenizer directory)");
  const tok::Tokenizer t = tok::Tokenizer::load(f.str("tokenizer"));

  std::ifstream file;
  const std::string in = f.str("in");
  if (in != "-") {
    file.open(in, std::ios::binary);
    MS_CHECK(file.good(), "tokenize: cannot open --in ", in);
  }
  std::istream& is = in == "-" ? std::cin : file;
  const bool decode = f.boolean("decode"), skip = f.boolean("skip_special_tokens");
  const bool add_special = f.boolean("add_special_tokens");
  const int threads = static_cast<int>(f.i64("threads"));

  std::vector<std::string> lines;
  std::string line, buf;
  size_t line_no = 0;
  auto flush = [&] {
    if (!decode) {
      for (const auto& ids : t.encode_batch(lines, add_special, threads)) print_ids(ids, buf);
    }
    lines.clear();
  };
  while (std::getline(is, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (decode) {
      const std::string where = "tokenize --decode: " + in + ":" + std::to_string(line_no);
      const nlohmann::json j = jsonio::parse(line, where);
      MS_CHECK(j.is_array(), where, ": expected a JSON array of token ids like [1, 22557], found ",
               jsonio::describe(j));
      std::vector<int32_t> ids;
      for (const auto& id : j)
        ids.push_back(static_cast<int32_t>(jsonio::as_int(id, where, std::numeric_limits<int32_t>::min(),
                                                          std::numeric_limits<int32_t>::max())));
      const std::string text = t.decode(ids, skip);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fputc('\n', stdout);
      continue;
    }
    lines.push_back(std::move(line));
    if (lines.size() == kBatchLines) flush();
  }
  flush();
  return 0;
}

}  // namespace miniseq::cli
