#include "miniseq/train/sft_dataset.h"

#include <algorithm>
#include <fstream>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"

namespace miniseq {

namespace {

// LongLoRA's Llama-2 chat system prompt (PROMPT_DICT["prompt_input_llama2"]), verbatim: note the two spaces
// after "safe." and the space before each line break around <</SYS>>.
constexpr const char* kLlama2System =
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being "
    "safe.  "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal "
    "content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false "
    "information.\n";

const char* kRecordShape =
    "(LongAlpaca records are {\"instruction\": \"...\", \"input\": \"...\" (optional), "
    "\"output\": \"...\"})";

SftRecord parse_record(const nlohmann::json& j, const std::string& where) {
  MS_CHECK(j.is_object(), where, ": expected a JSON object, found ", jsonio::describe(j), " ", kRecordShape);
  SftRecord r;
  r.where = where;
  auto text = [&](const char* key, bool required) -> std::string {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      MS_CHECK(!required, where, ": \"", key, "\" is missing ", kRecordShape);
      return "";
    }
    MS_CHECK(it->is_string(), where, ": \"", key, "\" must be a string, found ", jsonio::describe(*it));
    return it->get<std::string>();
  };
  r.instruction = text("instruction", true);
  r.input = text("input", false);
  r.output = text("output", true);
  return r;
}

// The text's tokens cut to max_len with the tokenizer's special tokens kept (tokenizers' truncation: the
// encoding is cut to max_len - added special tokens before the post-processor adds them).
std::vector<int32_t> with_specials_truncated(const tok::Tokenizer& t, const std::vector<int32_t>& text_ids,
                                             int64_t max_len, bool* truncated) {
  const auto& pre = t.prefix_ids();
  const auto& post = t.suffix_ids();
  const int64_t room = max_len - static_cast<int64_t>(pre.size() + post.size());
  const int64_t keep = std::min<int64_t>(static_cast<int64_t>(text_ids.size()), room);
  if (truncated) *truncated = keep < static_cast<int64_t>(text_ids.size());
  std::vector<int32_t> ids(pre);
  ids.insert(ids.end(), text_ids.begin(), text_ids.begin() + keep);
  ids.insert(ids.end(), post.begin(), post.end());
  return ids;
}

}  // namespace

std::vector<SftRecord> read_sft_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MS_CHECK(in.good(), path, ": cannot read the supervised fine-tuning data (--data_path)");
  char first = 0;
  while (in.get(first) && (first == ' ' || first == '\t' || first == '\r' || first == '\n')) {
  }
  in.close();
  std::vector<SftRecord> records;
  if (first == '[') {  // a JSON list, as LongLoRA's jload
    const nlohmann::json j = jsonio::parse_file(path);
    MS_CHECK(j.is_array(), path, ": expected a JSON list of records ", kRecordShape);
    records.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i)
      records.push_back(parse_record(j[i], path + ": record " + std::to_string(i + 1)));
  } else {
    std::ifstream lines(path);
    std::string line;
    int64_t lineno = 0;
    while (std::getline(lines, line)) {
      ++lineno;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = path + ":" + std::to_string(lineno);
      records.push_back(parse_record(jsonio::parse(line, where), where));
    }
  }
  MS_CHECK(!records.empty(), path, ": no records; expected a JSON list or JSONL of ", kRecordShape);
  return records;
}

std::string sft_prompt(const SftRecord& r) {
  if (r.input.empty()) return "[INST]" + r.instruction + "[/INST]";  // prompt_llama2
  return std::string("[INST] <<SYS>>\n") + kLlama2System + "<</SYS>> \n\n " + r.instruction + " \n" +
         r.input + " [/INST]";  // prompt_input_llama2
}

std::vector<SftExample> tokenize_sft(const std::vector<SftRecord>& records, const SftTokenization& t) {
  MS_CHECK(t.tokenizer != nullptr, "internal: supervised fine-tuning needs a tokenizer");
  const int64_t specials =
      static_cast<int64_t>(t.tokenizer->prefix_ids().size() + t.tokenizer->suffix_ids().size());
  MS_CHECK(t.max_len > specials, "--model_max_length ", t.max_len, " leaves no room for text beside the ",
           specials, " special tokens the tokenizer adds");
  std::vector<std::string> sources, examples;
  sources.reserve(records.size());
  examples.reserve(records.size());
  for (const auto& r : records) {
    sources.push_back(sft_prompt(r));
    examples.push_back(sources.back() + r.output + t.eos_token);
  }
  const auto source_ids = t.tokenizer->encode_batch(sources, /*add_special_tokens=*/false);
  const auto example_ids = t.tokenizer->encode_batch(examples, /*add_special_tokens=*/false);
  std::vector<SftExample> out(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const auto source = with_specials_truncated(*t.tokenizer, source_ids[i], t.max_len, nullptr);
    out[i].input_ids = with_specials_truncated(*t.tokenizer, example_ids[i], t.max_len, &out[i].truncated);
    out[i].prompt_len = static_cast<int64_t>(
        std::count_if(source.begin(), source.end(), [&](int32_t id) { return id != t.pad_id; }));
  }
  return out;
}

Dataset sft_dataset(const std::string& path, const SftTokenization& t, int64_t vocab, SftStats* stats) {
  const std::vector<SftRecord> records = read_sft_records(path);
  std::vector<SftExample> examples = tokenize_sft(records, t);
  SftStats s;
  s.records = static_cast<int64_t>(records.size());
  std::vector<std::vector<int32_t>> ids(examples.size());
  std::vector<int64_t> prompt_len(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    SftExample& e = examples[i];
    for (int32_t id : e.input_ids)
      MS_CHECK(id >= 0 && id < vocab, records[i].where, ": the tokenizer produced id ", id,
               " outside the model's vocabulary [0, ", vocab, "); tokenizer and model do not match");
    const auto n = static_cast<int64_t>(e.input_ids.size());
    const int64_t targets =
        std::max<int64_t>(0, n - std::max<int64_t>(e.prompt_len, 1));  // position 0 predicts nothing
    if (e.truncated && s.truncated++ == 0) s.first_truncated = records[i].where;
    if (targets == 0 && s.without_target++ == 0) s.first_without_target = records[i].where;
    s.tokens += n;
    s.target_tokens += targets;
    s.longest = std::max(s.longest, n);
    ids[i] = std::move(e.input_ids);
    prompt_len[i] = e.prompt_len;
  }
  MS_CHECK(s.target_tokens > 0, path, ": none of its ", s.records,
           " records keeps a response token within --model_max_length ", t.max_len,
           " (every prompt fills it); raise --model_max_length or shorten the prompts");
  if (stats) *stats = s;
  return Dataset::from_examples(ids, prompt_len, t.max_len, t.pad_id);
}

}  // namespace miniseq
