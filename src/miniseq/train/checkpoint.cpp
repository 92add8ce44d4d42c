#include "miniseq/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "miniseq/io/json_read.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/model/adapter.h"

namespace miniseq {

namespace fs = std::filesystem;

namespace {

int g_fault_after = -1;
int g_files_written = 0;

void count_file(const std::string& what) {
  ++g_files_written;
  if (g_fault_after >= 0 && g_files_written > g_fault_after) {
    g_fault_after = -1;
    fail("simulated crash while saving ", what);
  }
}

const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                 "tokenizer.model", "generation_config.json"};

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Host copies of a parameter set's tensors (the tensors themselves when they are on the CPU).
struct HostSet {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<std::pair<const ParamSpec*, Tensor>> tensors;
  HostSet(const ParamSet& set, Backend* backend) {
    storage.resize(set.size());
    size_t i = 0;
    set.for_each([&](const ParamSpec& s, const Tensor& t) {
      tensors.push_back({&s, host_view(backend, t, storage[i++])});
    });
  }
};

bool lora_run(const SaveRequest& r) {
  return r.lora && r.lora->enabled;
}

void write_tokenizer(const SaveRequest& r, const fs::path& dir) {
  for (const char* name : kTokenizerFiles) {
    if (r.tokenizer_overrides.contains(name)) {
      write_file_atomic((dir / name).string(), r.tokenizer_overrides[name].get<std::string>());
    } else if (!r.tokenizer_dir.empty() && fs::exists(fs::path(r.tokenizer_dir) / name)) {
      write_file_atomic((dir / name).string(), read_file(fs::path(r.tokenizer_dir) / name));
    } else {
      continue;
    }
    count_file(name);
  }
}

void write_model(const SaveRequest& r, const fs::path& dir) {
  if (lora_run(r)) {
    // The adapter in fp32 whatever the weights' dtype (PEFT keeps adapters in fp32 beside a bf16 base: its
    // autocast_adapter_dtype), the trained base tensors in the model's save dtype.
    save_adapter(dir.string(), *r.weights, *r.lora, r.base_model, DType::F32, r.backend);
    count_file(kAdapterWeightsFile);
    if (save_trainable_params(dir.string(), *r.weights, *r.lora, r.weights_dtype, r.backend))
      count_file(kTrainableParamsFile);
    write_tokenizer(r, dir);
    return;
  }
  // The config names the dtype the weights are saved in (transformers loads "auto" dtype from it), whatever
  // the base model's was: a fp32 save of a bf16 model says float32.
  ModelConfig saved = *r.config;
  saved.torch_dtype = r.weights_dtype;
  nlohmann::json config = saved.to_json();
  if (config.contains("dtype")) config["dtype"] = config["torch_dtype"];  // transformers 5's key, kept in step
  write_file_atomic((dir / "config.json").string(), config.dump(2) + "\n");
  count_file("config.json");
  const HostSet weights(*r.weights, r.backend);
  std::vector<TensorToWrite> tensors;
  for (const auto& [spec, t] : weights.tensors) tensors.push_back({spec->name, t, r.weights_dtype});
  write_safetensors_model(dir.string(), tensors, {{"format", "pt"}}, r.max_shard_bytes);
  count_file("model weights");
  write_tokenizer(r, dir);
}

}  // namespace

void set_save_fault_for_testing(int files) {
  g_fault_after = files;
  g_files_written = 0;
}

void save_model_files(const SaveRequest& r) {
  fs::create_directories(r.dir);
  write_model(r, r.dir);
}

void save_checkpoint(const SaveRequest& r) {
  const fs::path final_dir(r.dir);
  const fs::path parent = final_dir.parent_path().empty() ? fs::path(".") : final_dir.parent_path();
  fs::create_directories(parent);
  const fs::path tmp = parent / (".tmp-" + final_dir.filename().string() + "." + std::to_string(getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    write_model(r, tmp);
    if (r.exp_avg) {
      std::vector<TensorToWrite> state;
      // Moments in the dtype they are kept in (fp32, or bf16 with that memory policy).
      const HostSet m(*r.exp_avg, r.backend), v(*r.exp_avg_sq, r.backend);
      for (const auto& [spec, t] : m.tensors) state.push_back({"exp_avg." + spec->name, t, t.dtype});
      for (const auto& [spec, t] : v.tensors) state.push_back({"exp_avg_sq." + spec->name, t, t.dtype});
      // The saved model is rounded: keep the exact weights (in their own dtype, or the host optimizer's fp32
      // master copy) for a bit-exact resume. Weights of bf16 precision saved in bf16 are exact (the CPU's fp32
      // buffers that emulate bf16, --master_weights False).
      const bool saved_exactly = r.weights_dtype == (*r.weights)[0].dtype ||
                                 (r.backend && r.backend->weight_precision() == r.weights_dtype);
      // (LoRA: the adapter is saved in fp32; trainable_params in weights_dtype, exact under the same rule.)
      const ParamSet* exact = r.master ? r.master : saved_exactly ? nullptr : r.weights;
      std::optional<HostSet> w;
      if (exact) {
        w.emplace(*exact, r.backend);
        for (const auto& [spec, t] : w->tensors) state.push_back({"master." + spec->name, t, t.dtype});
      }
      write_safetensors((tmp / "optimizer.safetensors").string(), state, {{"format", "miniseq-adamw"}});
      count_file("optimizer.safetensors");
    }
    if (r.progress) {
      const TrainProgress& p = *r.progress;
      nlohmann::json j = {{"global_step", p.global_step},   {"epoch", p.epoch},
                          {"micro_in_epoch", p.micro_in_epoch}, {"total_steps", p.total_steps},
                          {"seed", p.seed},                 {"tokens_seen", p.tokens_seen},
                          {"log_history", p.log_history},   {"writer", "miniseq"}};
      if (!p.run_id.empty()) j["run_id"] = p.run_id;
      if (p.micro_batch_blocks > 0) j["micro_batch_blocks"] = p.micro_batch_blocks;
      j["model_name_or_path"] = p.model_name_or_path;
      j["low_rank_training"] = p.low_rank_training;
      if (p.low_rank_training) j["trainable_params"] = p.trainable_params;
      write_file_atomic((tmp / "trainer_state.json").string(), j.dump(2) + "\n");
      count_file("trainer_state.json");
    }
    if (r.before_rename) r.before_rename(tmp.string());
    fsync_dir(tmp);
    // Swap into place: an existing directory of the same name is moved aside first, then removed.
    if (fs::exists(final_dir)) {
      const fs::path old = parent / (".old-" + final_dir.filename().string() + "." + std::to_string(getpid()));
      fs::remove_all(old);
      fs::rename(final_dir, old);
      fs::rename(tmp, final_dir);
      fs::remove_all(old);
    } else {
      fs::rename(tmp, final_dir);
    }
    fsync_dir(parent);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

LoadedState load_checkpoint(const std::string& dir, const ParamSet& weights, const ParamSet& exp_avg,
                            const ParamSet& exp_avg_sq, Backend* backend, const ParamSet* master) {
  std::vector<uint8_t> staging;
  // Reads a tensor through a host view of its destination (a device tensor is uploaded afterwards).
  auto read_into = [&](auto& source, const std::string& name, const Tensor& t) {
    const Tensor h = host_view(backend, t, staging, /*download=*/false);
    source.read(name, h);
    store_host_view(backend, t, h);
  };
  const fs::path d(dir);
  MS_CHECK(fs::is_directory(d), dir, ": checkpoint directory does not exist");
  const fs::path state_path = d / "trainer_state.json";
  const fs::path opt_path = d / "optimizer.safetensors";
  MS_CHECK(fs::exists(state_path) && fs::exists(opt_path), dir,
           ": not a miniseq checkpoint (needs trainer_state.json and optimizer.safetensors)");
  SafetensorsFile opt(opt_path.string());
  const ParamSet& target = master ? *master : weights;  // where the weights go
  const bool has_master = opt.find("master." + weights.specs().front().name) != nullptr;
  if (has_master) {
    target.for_each([&](const ParamSpec& s, const Tensor& t) {
      MS_CHECK(opt.find("master." + s.name), opt_path.string(), ": no master weight for '", s.name, "'");
      read_into(opt, "master." + s.name, t);
    });
  } else if (fs::exists(d / kAdapterWeightsFile)) {
    // A LoRA checkpoint: the LoRA tensors from the adapter, the trained base tensors from trainable_params.
    const SafetensorsFile adapter((d / kAdapterWeightsFile).string());
    std::optional<SafetensorsFile> trainable;
    if (fs::exists(d / kTrainableParamsFile)) trainable.emplace((d / kTrainableParamsFile).string());
    target.for_each([&](const ParamSpec& s, const Tensor& t) {
      const bool in_adapter = s.role == ParamRole::LoraA || s.role == ParamRole::LoraB;
      const fs::path file = d / (in_adapter ? kAdapterWeightsFile : kTrainableParamsFile);
      const SafetensorsFile* src = in_adapter ? &adapter : trainable ? &*trainable : nullptr;
      MS_CHECK(
          src && src->find(s.name), file.string(), ": no tensor '", s.name,
          "'; the checkpoint was written with other LoRA flags (--lora_target_modules, --trainable_params)");
      read_into(*src, s.name, t);
    });
  } else {
    SafetensorsModel model(dir);
    target.for_each([&](const ParamSpec& s, const Tensor& t) {
      MS_CHECK(model.find(s.name), dir, ": the checkpoint has no tensor '", s.name,
               "'; it was written for another model or vocabulary size");
      read_into(model, s.name, t);
    });
  }
  exp_avg.for_each([&](const ParamSpec& s, const Tensor& t) {
    MS_CHECK(opt.find("exp_avg." + s.name), opt_path.string(), ": no optimizer state for '", s.name, "'");
    read_into(opt, "exp_avg." + s.name, t);
  });
  exp_avg_sq.for_each([&](const ParamSpec& s, const Tensor& t) {
    MS_CHECK(opt.find("exp_avg_sq." + s.name), opt_path.string(), ": no optimizer state for '", s.name, "'");
    read_into(opt, "exp_avg_sq." + s.name, t);
  });
  LoadedState st;
  st.progress = parse_trainer_state(read_file(state_path), state_path.string());
  return st;
}

std::string recorded_model_path(const std::string& model_dir) {
  return model_dir.empty() ? "" : fs::absolute(model_dir).lexically_normal().string();
}

void check_resumable(const std::string& dir, const LoraConfig& lora, const std::string& model_dir) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) return;  // load_checkpoint says so
  const bool lora_checkpoint = fs::exists(d / kAdapterConfigFile);
  MS_CHECK(lora.enabled || !lora_checkpoint, dir, " is a LoRA checkpoint (", kAdapterConfigFile,
           "): resume it with --low_rank_training True and the LoRA flags it was trained with");
  if (!lora.enabled) return;
  MS_CHECK(lora_checkpoint, dir, " is a full fine-tuning checkpoint (no ", kAdapterConfigFile,
           "): resume it with --low_rank_training False (LoRA is the default of `miniseq train`)");
  const LoraConfig saved = read_adapter_config(dir);
  const std::string config_path = (d / kAdapterConfigFile).string();
  MS_CHECK(saved.r == lora.r && saved.alpha == lora.alpha && saved.target_modules == lora.target_modules,
           config_path, ": the checkpoint's adapter has r ", saved.r, ", lora_alpha ", saved.alpha,
           " and target_modules ", join_list(saved.target_modules), "; this run has --lora_r ", lora.r,
           " --lora_alpha ", lora.alpha, " --lora_target_modules ", join_list(lora.target_modules),
           ": resume with the checkpoint's values");
  const fs::path state_path = d / "trainer_state.json";
  if (!fs::exists(state_path)) return;  // load_checkpoint says so
  const TrainProgress p = parse_trainer_state(read_file(state_path), state_path.string());
  MS_CHECK(p.trainable_params == lora.trainable_params, state_path.string(),
           ": the checkpoint was trained with "
           "--trainable_params '",
           join_list(p.trainable_params), "', this run has '", join_list(lora.trainable_params),
           "': resume with the checkpoint's value");
  const std::string now = recorded_model_path(model_dir);
  auto same = [](const std::string& x, const std::string& y) {
    if (x.empty() || y.empty()) return x == y;
    std::error_code e1, e2;
    const fs::path cx = fs::weakly_canonical(x, e1), cy = fs::weakly_canonical(y, e2);
    return e1 || e2 ? x == y : cx == cy;
  };
  MS_CHECK(same(p.model_name_or_path, now), state_path.string(),
           ": this LoRA checkpoint holds only the adapter and the trainable parameters of the base model '",
           p.model_name_or_path.empty() ? "(a built-in preset)" : p.model_name_or_path,
           "' (its model_name_or_path); this run's --model_name_or_path is '",
           now.empty() ? "(a built-in preset)" : now,
           "'. Resume with the base model the checkpoint was trained on (if that directory moved, set "
           "model_name_or_path in this file to its new place)");
}

TrainProgress parse_trainer_state(const std::string& text, const std::string& where) {
  const nlohmann::json j = jsonio::parse(text, where);
  const jsonio::Obj o(j, where, /*file_level=*/true);
  TrainProgress p;
  p.global_step = o.integer("global_step", 0);
  p.epoch = o.integer("epoch", 0);
  p.micro_in_epoch = o.integer("micro_in_epoch", 0);
  p.total_steps = o.integer("total_steps", 0);
  const nlohmann::json& seed = o.get("seed");
  MS_CHECK(seed.is_number_unsigned() || (seed.is_number_integer() && seed.get<int64_t>() >= 0), o.at("seed"),
           ": expected a non-negative integer, found ", jsonio::describe(seed));
  p.seed = seed.get<uint64_t>();
  p.tokens_seen = o.integer_or("tokens_seen", 0, 0);
  p.micro_batch_blocks = o.integer_or("micro_batch_blocks", 0, 0);
  p.model_name_or_path = o.str("model_name_or_path", "");
  p.low_rank_training = o.boolean("low_rank_training", false);
  if (o.has("trainable_params")) {
    const nlohmann::json& tp = jsonio::as_array(o.get("trainable_params"), o.at("trainable_params"));
    for (size_t i = 0; i < tp.size(); ++i)
      p.trainable_params.push_back(
          jsonio::as_string(tp[i], o.at("trainable_params") + "[" + std::to_string(i) + "]"));
  }
  p.log_history = o.has("log_history") ? o.array("log_history") : nlohmann::json::array();
  // The records are drawn again (train/metrics.cpp): each is an object whose step and numbers are numbers.
  for (size_t i = 0; i < p.log_history.size(); ++i) {
    const jsonio::Obj rec(p.log_history[i], o.at("log_history[") + std::to_string(i) + "]");
    if (rec.has("loss")) rec.get("step");  // a loss needs its step
    for (const char* key : {"step", "loss", "peak_memory_bytes"}) rec.opt_number(key);
  }
  return p;
}

}  // namespace miniseq
