#include "miniseq/train/model_setup.h"

#include <cmath>
#include <vector>

namespace miniseq {

double rope_factor_for(const ModelConfig& c, int64_t model_max_length) {
  const double orig = static_cast<double>(c.max_position_embeddings) * c.rope_linear_factor;
  if (static_cast<double>(model_max_length) <= orig) return c.rope_linear_factor;
  return c.rope_linear_factor * std::ceil(static_cast<double>(model_max_length) / orig);
}

void load_params_grown(const SafetensorsModel& files, const ModelConfig& file_config, const ModelConfig& config,
                       const ParamSet& params) {
  const int64_t old_v = file_config.vocab_size, new_v = config.vocab_size;
  MS_CHECK(new_v >= old_v, "internal: vocabulary can only grow");
  if (new_v == old_v) {
    load_params(files, config, params);
    return;
  }
  // Every other tensor must match as usual: check with the file's own config.
  auto problems = check_model_files(files, param_specs(file_config), file_config);
  MS_CHECK(problems.empty(), problems.front());
  params.for_each([&](const ParamSpec& s, const Tensor& t) {
    if (!t.data) return;
    if (s.role != ParamRole::Embedding && s.role != ParamRole::LmHead) {
      files.read(s.name, t);
      return;
    }
    const int64_t d = t.size(1);
    files.read(s.name, t.rows(0, old_v));
    std::vector<double> mean(static_cast<size_t>(d), 0.0);
    const float* w = t.f32();
    for (int64_t r = 0; r < old_v; ++r)
      for (int64_t j = 0; j < d; ++j) mean[static_cast<size_t>(j)] += w[r * d + j];
    for (int64_t r = old_v; r < new_v; ++r)
      for (int64_t j = 0; j < d; ++j)
        t.f32()[r * d + j] = static_cast<float>(mean[static_cast<size_t>(j)] / static_cast<double>(old_v));
  });
}

}  // namespace miniseq
