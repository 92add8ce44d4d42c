// Supervised fine-tuning data, as LongLoRA's supervised-fine-tune.py builds it (LongAlpaca):
//  - --data_path: a JSON list of records, or JSONL (one record per line), each {"instruction": str,
//    "input": str (optional), "output": str}.
//  - source = the prompt: LongLoRA's "prompt_input_llama2" template when "input" is non-empty, else
//    "prompt_llama2" ("[INST]{instruction}[/INST]"); target = output + the tokenizer's eos token (as text).
//  - source and source + target are tokenized separately, each with the tokenizer's special tokens (BOS) and
//    truncated to model_max_length as Hugging Face does (the text's tokens are cut, the special tokens kept).
//  - the example is the tokens of source + target; its first n labels are -100, n = the number of non-pad
//    tokens of the tokenized source (so a prompt that fills model_max_length leaves no target).
//  - no packing: one example per record, a micro-batch right-padded to its longest example (Dataset::batch).
// Where miniseq differs: "input": null counts as no input (Python would format the word "None"); a value that
// is not a string is an error (Python would format it); a dataset without any target token is refused (the
// Hugging Face loss would be NaN).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "miniseq/io/tokenizer/tokenizer.h"
#include "miniseq/train/dataset.h"

namespace miniseq {

struct SftRecord {
  std::string instruction, input, output;
  std::string where;  // "data.json: record 3" or "data.jsonl:12", for messages
};

// Reads a JSON list or JSONL file of records (chosen by the first non-blank character: '[' is a list). Errors
// name the file, the record (list: 1-based index; JSONL: line) and the missing or mistyped key.
std::vector<SftRecord> read_sft_records(const std::string& path);

// LongLoRA's prompt (the "source") of a record.
std::string sft_prompt(const SftRecord& r);

// One tokenized example.
struct SftExample {
  std::vector<int32_t> input_ids;  // source + target, truncated
  int64_t prompt_len = 0;  // labels[0, prompt_len) are -100 (may exceed input_ids.size() after truncation)
  bool truncated = false;  // source + target was cut at max_len
};

struct SftTokenization {
  const tok::Tokenizer* tokenizer = nullptr;  // with the special tokens added by prepare_special_tokens
  std::string eos_token;                      // appended to every output (text)
  int32_t pad_id = -1;  // not counted in the prompt length (LongLoRA's ne(pad_token_id))
  int64_t max_len = 0;  // model_max_length
};

// Tokenizes records (in parallel) into examples.
std::vector<SftExample> tokenize_sft(const std::vector<SftRecord>& records, const SftTokenization& t);

// What a dataset load found, for the log.
struct SftStats {
  int64_t records = 0, truncated = 0, without_target = 0, tokens = 0, target_tokens = 0, longest = 0;
  std::string first_truncated, first_without_target;  // where, for the log
};

// read + tokenize + Dataset::from_examples; ids are checked against vocab. Refuses an empty dataset and one
// without any target token.
Dataset sft_dataset(const std::string& path, const SftTokenization& t, int64_t vocab, SftStats* stats);

}  // namespace miniseq
