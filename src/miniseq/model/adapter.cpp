#include "miniseq/model/adapter.h"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "miniseq/io/json_read.h"
#include "miniseq/io/safetensors.h"

namespace miniseq {

namespace fs = std::filesystem;

namespace {
bool is_lora(const ParamSpec& s) {
  return s.role == ParamRole::LoraA || s.role == ParamRole::LoraB;
}
}  // namespace

LoraConfig read_adapter_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / kAdapterConfigFile).string();
  MS_CHECK(fs::exists(path), path, " does not exist: --peft_model must be a PEFT adapter directory (",
           kAdapterConfigFile, " and ", kAdapterWeightsFile, ")");
  const jsonio::json j = jsonio::parse_file(path);
  const jsonio::Obj o(j, path, /*file_level=*/true);
  const std::string type = o.str("peft_type", "LORA");
  MS_CHECK(type == "LORA", o.at("peft_type"), ": \"", type,
           "\" adapters are not supported; miniseq runs LORA");
  LoraConfig lora;
  lora.enabled = true;
  lora.r = o.integer("r", 1, int64_t{1} << 20);
  lora.alpha = o.number_or("lora_alpha", 8.0);
  const double dropout = o.number_or("lora_dropout", 0.0);
  const std::string bias = o.str("bias", "none");
  MS_CHECK(bias == "none", o.at("bias"), ": \"", bias,
           "\" is not supported; LongLoRA's adapters use \"none\"");
  for (const char* flag : {"use_dora", "use_rslora", "fan_in_fan_out", "lora_bias"})
    MS_CHECK(!o.boolean(flag, false), o.at(flag), ": true is not supported (LongLoRA's adapters use false)");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (const auto* p = o.find(key))
      MS_CHECK(p->is_object() && p->empty(), o.at(key), ": per-module ranks and alphas are not supported");
  for (const char* key : {"layers_to_transform", "modules_to_save", "layer_replication"})
    MS_CHECK(!o.has(key), o.at(key), ": not supported (LongLoRA's adapters leave it null)");
  const jsonio::json& tm = o.get("target_modules");
  MS_CHECK(!tm.is_string(), o.at("target_modules"), ": a regular expression (\"",
           jsonio::excerpt(tm.get<std::string>()), "\") is not supported; give the list of module names");
  lora.target_modules.clear();
  const jsonio::json& arr = jsonio::as_array(tm, o.at("target_modules"));
  for (size_t i = 0; i < arr.size(); ++i)
    lora.target_modules.push_back(
        jsonio::as_string(arr[i], o.at("target_modules") + "[" + std::to_string(i) + "]"));
  validate_lora(lora, dropout, path);
  return lora;
}

void load_adapter_weights(const std::string& dir, const ParamSet& params, Backend* backend) {
  const std::string path = (fs::path(dir) / kAdapterWeightsFile).string();
  MS_CHECK(fs::exists(path), path, " does not exist (a PEFT adapter directory holds ", kAdapterWeightsFile,
           ")");
  const SafetensorsFile file(path);
  std::set<std::string> expected;
  std::vector<uint8_t> staging;
  params.for_each([&](const ParamSpec& s, const Tensor& t) {
    if (!is_lora(s)) return;
    expected.insert(s.name);
    const SafetensorInfo* info = file.find(s.name);
    MS_CHECK(info, path, ": missing tensor '", s.name, "' (expected shape ", s.shape.str(),
             "); was the adapter trained with other target modules?");
    MS_CHECK(Shape::from(info->shape) == s.shape, path, ": tensor '", s.name, "' has shape ",
             Shape::from(info->shape).str(), ", the adapter config and model imply ", s.shape.str());
    if (!t.data) return;
    const Tensor h = host_view(backend, t, staging, /*download=*/false);
    file.read(s.name, h);
    store_host_view(backend, t, h);
  });
  for (const auto& t : file.tensors())
    MS_CHECK(expected.count(t.name), path, ": unexpected tensor '", t.name,
             "' (not a LoRA tensor of this model and adapter config)");
}

bool load_trainable_params(const std::string& dir, const ParamSet& params, Backend* backend) {
  const std::string path = (fs::path(dir) / kTrainableParamsFile).string();
  if (!fs::exists(path)) return false;
  const SafetensorsFile file(path);
  std::vector<uint8_t> staging;
  for (const auto& info : file.tensors()) {
    const Tensor* t = params.find(info.name);
    MS_CHECK(t, path, ": tensor '", info.name, "' is not a parameter of this model");
    MS_CHECK(Shape::from(info.shape) == t->shape, path, ": tensor '", info.name, "' has shape ",
             Shape::from(info.shape).str(), ", the model's is ", t->shape.str());
    if (!t->data) continue;
    const Tensor h = host_view(backend, *t, staging, /*download=*/false);
    file.read(info.name, h);
    store_host_view(backend, *t, h);
  }
  return true;
}

void init_lora_weights(const ParamSet& params, uint64_t seed, Backend* backend) {
  std::vector<float> values;
  params.for_each([&](const ParamSpec& s, const Tensor& t) {
    if (!is_lora(s) || !t.data) return;
    values.resize(static_cast<size_t>(t.numel()));
    lora_init_values(s, seed, values.data());
    const Tensor h(values.data(), t.shape, DType::F32);
    if (backend) {
      backend->upload(t, h);
    } else {
      MS_CHECK(t.device == Device::CPU && t.dtype == DType::F32, "internal: LoRA init without a backend");
      std::copy(values.begin(), values.end(), t.f32());
    }
  });
}

namespace {
void write_tensors(const std::string& path, const ParamSet& params, DType dtype, Backend* backend,
                   const std::function<bool(const ParamSpec&)>& keep) {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<TensorToWrite> out;
  storage.reserve(params.size());
  params.for_each([&](const ParamSpec& s, const Tensor& t) {
    if (!keep(s)) return;
    storage.emplace_back();
    out.push_back({s.name, host_view(backend, t, storage.back()), dtype});
  });
  write_safetensors(path, out, {{"format", "pt"}});
}
}  // namespace

void save_adapter(const std::string& dir, const ParamSet& params, const LoraConfig& lora,
                  const std::string& base_model, DType dtype, Backend* backend) {
  fs::create_directories(dir);
  write_tensors((fs::path(dir) / kAdapterWeightsFile).string(), params, dtype, backend, is_lora);
  // PEFT 0.21's LoraConfig keys with LongLoRA's values; what PEFT fills in by default is left to it.
  nlohmann::ordered_json c;
  c["base_model_name_or_path"] = base_model;
  c["bias"] = "none";
  c["fan_in_fan_out"] = false;
  c["inference_mode"] = true;
  c["init_lora_weights"] = true;
  if (lora.alpha == static_cast<double>(static_cast<int64_t>(lora.alpha)))
    c["lora_alpha"] = static_cast<int64_t>(lora.alpha);  // as LongLoRA's config writes it (16)
  else
    c["lora_alpha"] = lora.alpha;
  c["lora_dropout"] = 0.0;
  c["modules_to_save"] = nullptr;
  c["peft_type"] = "LORA";
  c["r"] = lora.r;
  c["target_modules"] = lora.target_modules;
  c["task_type"] = "CAUSAL_LM";
  c["use_dora"] = false;
  c["use_rslora"] = false;
  write_file_atomic((fs::path(dir) / kAdapterConfigFile).string(), c.dump(2) + "\n");
}

bool save_trainable_params(const std::string& dir, const ParamSet& params, const LoraConfig& lora,
                           DType dtype, Backend* backend) {
  auto keep = [&](const ParamSpec& s) { return !is_lora(s) && is_trainable(s, lora); };
  bool any = false;
  params.for_each([&](const ParamSpec& s, const Tensor&) { any |= keep(s); });
  if (!any) return false;
  fs::create_directories(dir);
  write_tensors((fs::path(dir) / kTrainableParamsFile).string(), params, dtype, backend, keep);
  return true;
}

}  // namespace miniseq
