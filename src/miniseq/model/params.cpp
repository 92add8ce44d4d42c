#include "miniseq/model/params.h"

#include <set>

namespace miniseq {

ParamSet::ParamSet(MemoryPlan& plan, const std::vector<ParamSpec>& specs, DType dtype, MemCategory category,
                   const std::string& prefix)
    : specs_(specs) {
  buffers_.reserve(specs_.size());
  for (size_t i = 0; i < specs_.size(); ++i) {
    buffers_.push_back(plan.alloc(prefix + specs_[i].name, specs_[i].shape, dtype, category));
    tensors_.push_back(buffers_.back().tensor());
    index_[specs_[i].name] = i;
  }
}

const Tensor* ParamSet::find(const std::string& hf_name) const {
  auto it = index_.find(hf_name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const Tensor& ParamSet::get(const std::string& hf_name) const {
  const Tensor* t = find(hf_name);
  MS_CHECK(t, "internal: no parameter named '", hf_name, "'");
  return *t;
}

size_t ParamSet::bytes() const {
  size_t n = 0;
  for (const auto& t : tensors_) n += t.bytes();
  return n;
}

void ParamSet::for_each(const std::function<void(const ParamSpec&, const Tensor&)>& f) const {
  for (size_t i = 0; i < specs_.size(); ++i) f(specs_[i], tensors_[i]);
}

ParamSet ParamSet::view_of(const ParamSet& src, const std::vector<ParamSpec>& specs) {
  ParamSet v;
  v.specs_ = specs;
  for (size_t i = 0; i < specs.size(); ++i) {
    v.tensors_.push_back(src.get(specs[i].name));
    v.index_[specs[i].name] = i;
  }
  return v;
}

namespace {
// Tensors some checkpoints carry that are not parameters (transformers ignores them on load too).
bool ignorable(const std::string& name) {
  const std::string suffix = "rotary_emb.inv_freq";
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::vector<std::string> check_model_files(const SafetensorsModel& files, const std::vector<ParamSpec>& specs,
                                           const ModelConfig& config) {
  std::vector<std::string> problems;
  std::set<std::string> expected;
  for (const auto& s : specs) {
    if (s.role == ParamRole::LoraA || s.role == ParamRole::LoraB) continue;  // not in a model directory
    expected.insert(s.name);
    const auto* e = files.find(s.name);
    if (!e) {
      problems.push_back("missing tensor '" + s.name + "' (expected shape " + s.shape.str() + ")");
      continue;
    }
    const Shape found = e->info->shape.size() <= static_cast<size_t>(kMaxDims) ? Shape::from(e->info->shape) : Shape();
    if (found != s.shape)
      problems.push_back("tensor '" + s.name + "' in " + e->file->path() + " has shape " + found.str() +
                         ", the config implies " + s.shape.str());
    if (!e->info->is_float)
      problems.push_back("tensor '" + s.name + "' in " + e->file->path() + " has dtype " + e->info->dtype_name +
                         "; weights must be F32, BF16 or F16");
  }
  const Shape lm_head_shape{config.vocab_size, config.hidden_size};
  for (const auto& name : files.names()) {
    if (expected.count(name) || ignorable(name)) continue;
    // Tied models are sometimes saved with an lm_head copy; transformers ignores it, so do we (if it fits).
    if (config.tie_word_embeddings && name == "lm_head.weight" &&
        Shape::from(files.find(name)->info->shape) == lm_head_shape)
      continue;
    problems.push_back("unexpected tensor '" + name + "' in " + files.find(name)->file->path() +
                       " (not a parameter of this " + std::string(arch_name(config.arch)) + " config)");
  }
  return problems;
}

Tensor host_view(Backend* backend, const Tensor& t, std::vector<uint8_t>& storage, bool download) {
  if (t.device == Device::CPU) return t;
  MS_CHECK(backend, "internal: a device tensor needs its backend to reach the host");
  storage.resize(t.bytes());
  Tensor h(storage.data(), t.shape, t.dtype, Device::CPU);
  if (download) backend->download(h, t);
  return h;
}

void store_host_view(Backend* backend, const Tensor& t, const Tensor& host) {
  if (t.device == Device::CPU) return;
  backend->upload(t, host);
}

void load_params(const SafetensorsModel& files, const ModelConfig& config, const ParamSet& params,
                 Backend* backend) {
  auto problems = check_model_files(files, params.specs(), config);
  MS_CHECK(problems.empty(), problems.front(), problems.size() > 1 ? " (and " + std::to_string(problems.size() - 1) +
                                                                         " more problems; run `miniseq inspect`)"
                                                                   : std::string());
  std::vector<uint8_t> staging;
  params.for_each([&](const ParamSpec& s, const Tensor& t) {
    if (!t.data || s.role == ParamRole::LoraA || s.role == ParamRole::LoraB) return;
    const Tensor h = host_view(backend, t, staging, /*download=*/false);
    files.read(s.name, h);
    store_host_view(backend, t, h);
  });
}

}  // namespace miniseq
