#include "miniseq/train/model_setup.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace miniseq {

RopeScaling rope_for_length(const ModelConfig& c, int64_t model_max_length) {
  RopeScaling r = c.rope;
  const int64_t native = c.native_context();
  if (model_max_length <= native || r.type == RopeType::Dynamic) return r;
  const auto S = static_cast<double>(model_max_length);
  switch (r.type) {
    case RopeType::Default:
      r.type = RopeType::Linear;
      r.factor = std::ceil(S / static_cast<double>(native));
      break;
    case RopeType::Linear:
    case RopeType::Llama3: r.factor *= std::ceil(S / static_cast<double>(native)); break;
    case RopeType::Yarn: r.factor = std::ceil(S / static_cast<double>(r.original_max_position_embeddings)); break;
    case RopeType::Dynamic: break;
  }
  return r;
}

void grow_for_tokenizer(ModelConfig& c, int64_t tokenizer_vocab_size, int64_t tokenizer_pad_id) {
  c.vocab_size = std::max(c.vocab_size, tokenizer_vocab_size);
  c.pad_token_id = tokenizer_pad_id;
}

void load_params_grown(const SafetensorsModel& files, const ModelConfig& file_config, const ModelConfig& config,
                       const ParamSet& params, Backend* backend) {
  const int64_t old_v = file_config.vocab_size, new_v = config.vocab_size;
  MS_CHECK(new_v >= old_v, "internal: vocabulary can only grow");
  if (new_v == old_v) {
    load_params(files, config, params, backend);
    return;
  }
  // Every other tensor must match as usual: check with the file's own config.
  auto problems = check_model_files(files, param_specs(file_config), file_config);
  MS_CHECK(problems.empty(), problems.front());
  std::vector<uint8_t> staging;
  params.for_each([&](const ParamSpec& s, const Tensor& t) {
    if (!t.data || s.role == ParamRole::LoraA || s.role == ParamRole::LoraB) return;  // not in a model directory
    const Tensor h = host_view(backend, t, staging, /*download=*/false);
    if (s.role != ParamRole::Embedding && s.role != ParamRole::LmHead) {
      files.read(s.name, h);
      store_host_view(backend, t, h);
      return;
    }
    // New rows: the mean of the old ones, computed in fp32 on the host whatever the storage dtype.
    const int64_t d = t.size(1);
    std::vector<float> w(static_cast<size_t>(new_v * d));
    files.read(s.name, Tensor(w.data(), {old_v, d}));
    std::vector<double> mean(static_cast<size_t>(d), 0.0);
    for (int64_t r = 0; r < old_v; ++r)
      for (int64_t j = 0; j < d; ++j) mean[static_cast<size_t>(j)] += w[static_cast<size_t>(r * d + j)];
    for (int64_t r = old_v; r < new_v; ++r)
      for (int64_t j = 0; j < d; ++j)
        w[static_cast<size_t>(r * d + j)] = static_cast<float>(mean[static_cast<size_t>(j)] / static_cast<double>(old_v));
    convert(w.data(), DType::F32, h.data, h.dtype, w.size());
    store_host_view(backend, t, h);
  });
}

}  // namespace miniseq
