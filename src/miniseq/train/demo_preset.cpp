#include "miniseq/train/demo_preset.h"

#include <cstdio>

#include "miniseq/core/random.h"

namespace miniseq {

ModelConfig demo_model_config(int64_t max_position_embeddings) {
  nlohmann::json j = {{"model_type", "mistral"},
                      {"architectures", {"MistralForCausalLM"}},
                      {"hidden_size", 128},
                      {"intermediate_size", 352},
                      {"num_hidden_layers", 4},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"vocab_size", 259},
                      {"max_position_embeddings", max_position_embeddings},
                      {"sliding_window", 1024},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", 10000.0},
                      {"hidden_act", "silu"},
                      {"tie_word_embeddings", false},
                      {"bos_token_id", 1},
                      {"eos_token_id", 2},
                      {"pad_token_id", 0},
                      {"torch_dtype", "float32"}};
  return parse_model_config(j.dump(), "demo preset config");
}

void init_random_weights(const ParamSet& weights, uint64_t seed, Backend* backend) {
  Rng rng(seed);
  std::vector<float> w;
  weights.for_each([&](const ParamSpec& s, const Tensor& t) {
    const bool norm = param_kind(s.role) == "norm";
    w.resize(static_cast<size_t>(t.numel()));
    for (float& x : w) x = norm ? 1.0f : static_cast<float>(0.02 * rng.normal());
    const Tensor src(w.data(), t.shape);
    if (t.device == Device::CPU) convert(w.data(), DType::F32, t.data, t.dtype, w.size());
    else backend->upload(t, src);
  });
}

std::vector<int32_t> demo_encode(const std::string& text) {
  std::vector<int32_t> ids;
  for (unsigned char c : text) ids.push_back(3 + static_cast<int32_t>(c));
  return ids;
}

std::string demo_decode(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids)
    if (id >= 3) s.push_back(static_cast<char>(id - 3));
  return s;
}

std::map<std::string, std::string> demo_tokenizer_files() {
  const char* specials[] = {"<pad>", "<s>", "</s>"};
  nlohmann::json added = nlohmann::json::array(), vocab = nlohmann::json::object();
  for (int id = 0; id < 3; ++id) {
    added.push_back({{"id", id}, {"content", specials[id]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
    vocab[specials[id]] = id;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  const nlohmann::json bos = {{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}};
  const nlohmann::json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {bos, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", {bos, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, bos, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", true},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", nlohmann::json::array()}}}};
  // PreTrainedTokenizerFast: transformers uses tokenizer.json as it is (a Llama class would be rebuilt from this
  // file's flags with a Metaspace normalizer).
  const nlohmann::json config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                                 {"add_bos_token", true},
                                 {"add_eos_token", false},
                                 {"bos_token", "<s>"},
                                 {"eos_token", "</s>"},
                                 {"pad_token", "<pad>"},
                                 {"model_max_length", 1000000}};
  return {{"tokenizer.json", tokenizer.dump(1) + "\n"}, {"tokenizer_config.json", config.dump(2) + "\n"}};
}

std::vector<int32_t> demo_token_stream(int64_t tokens, int64_t doc_tokens, uint64_t seed) {
  static const char* kFiller[] = {"The grass is green. ", "The sky is blue. ", "The sun is yellow. ",
                                  "Here we go. ", "There and back again. "};
  Rng rng(seed);
  std::vector<int32_t> stream;
  while (static_cast<int64_t>(stream.size()) < tokens) {
    char key[16];
    std::snprintf(key, sizeof key, "%05d", static_cast<int>(rng.below(100000)));
    const std::string fact = std::string("The pass key is ") + key + ". Remember it. " + key + " is the pass key. ";
    const std::string question = std::string("What is the pass key? The pass key is ") + key + ".";
    const int64_t body = doc_tokens - static_cast<int64_t>(fact.size() + question.size()) - 2;
    const int64_t depth = static_cast<int64_t>(rng.below(static_cast<uint64_t>(std::max<int64_t>(1, body))));
    std::string text;
    size_t f = 0;
    while (static_cast<int64_t>(text.size()) < depth) text += kFiller[f++ % 5];
    text += fact;
    while (static_cast<int64_t>(text.size()) < body + static_cast<int64_t>(fact.size())) text += kFiller[f++ % 5];
    text += question;
    stream.push_back(1);
    auto ids = demo_encode(text);
    stream.insert(stream.end(), ids.begin(), ids.end());
    stream.push_back(2);
  }
  return stream;
}

}  // namespace miniseq
