#include "support/train_fixture.h"

#include <sstream>

#include <nlohmann/json.hpp>

#include "miniseq/core/random.h"
#include "miniseq/io/safetensors.h"
#include "support/goldens.h"
#include "support/tmpdir.h"

namespace miniseq::test {

std::filesystem::path train_test_model() {
  return golden_dir() / "llama_basic/model";
}

TrainArgs parse_train_args(const std::vector<std::string>& args) {
  cli::Flags f = train_flags();
  std::vector<std::string> all = {"--low_rank_training", "False"};  // full fine-tuning unless `args` say otherwise
  all.insert(all.end(), args.begin(), args.end());
  f.parse(all);
  return train_args_from(f);
}

Dataset random_blocks(int64_t blocks, int64_t seq, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> stream;
  for (int64_t i = 0; i < blocks * seq; ++i)
    stream.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab))));
  return Dataset::from_stream(stream, DataSpec{seq, vocab, -1, 0});
}

TrainSetup tiny_setup(const TrainArgs& a, const Dataset& data) {
  TrainSetup s;
  s.args = a;
  s.file_config = s.config = load_model_config(train_test_model().string());
  s.model_dir = train_test_model().string();
  s.data = &data;
  s.quiet = true;
  return s;
}

std::map<std::string, std::vector<float>> read_weights(const std::string& dir) {
  SafetensorsModel m(dir);
  std::map<std::string, std::vector<float>> out;
  for (const auto& name : m.names()) {
    const auto* e = m.find(name);
    std::vector<float> v(static_cast<size_t>(e->info->numel()));
    m.read(name, Tensor(v.data(), Shape::from(e->info->shape)));
    out[name] = std::move(v);
  }
  return out;
}

std::map<std::string, std::vector<float>> read_lora_dir(const std::string& dir) {
  std::map<std::string, std::vector<float>> out;
  for (const char* name : {"adapter_model.safetensors", "trainable_params.safetensors"}) {
    const std::filesystem::path p = std::filesystem::path(dir) / name;
    if (!std::filesystem::exists(p)) continue;
    SafetensorsFile f(p.string());
    for (const auto& t : f.tensors()) {
      std::vector<float> v(static_cast<size_t>(t.numel()));
      f.read(t.name, Tensor(v.data(), Shape::from(t.shape)));
      out[t.name] = std::move(v);
    }
  }
  return out;
}

std::vector<double> logged(const std::string& dir, const char* field) {
  std::vector<double> values;
  std::istringstream in(read_text(dir + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) values.push_back(nlohmann::json::parse(line)[field].get<double>());
  return values;
}

}  // namespace miniseq::test
