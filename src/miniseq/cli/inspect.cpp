// `miniseq inspect MODEL_DIR`: what a model directory holds (architecture, parameter counts per kind, dtypes,
// weight memory) and every disagreement between its files and its config.json, each reported as an error.
// `miniseq inspect config.json`: the same report from the config alone (no weight files to check).
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include "miniseq/cli/commands.h"
#include "miniseq/cli/flags.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/model/params.h"
#include "miniseq/model/rope_scaling.h"

namespace miniseq::cli {

namespace {
std::string with_commas(int64_t n) {
  const std::string digits = std::to_string(n);
  std::string s;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s.push_back(',');
    s.push_back(digits[i]);
  }
  return s;
}
std::string mib(double bytes) {
  char b[32];
  if (bytes >= (1ull << 30)) std::snprintf(b, sizeof b, "%.2f GiB", bytes / (1ull << 30));
  else std::snprintf(b, sizeof b, "%.2f MiB", bytes / (1ull << 20));
  return b;
}
// "llama3 x8 (original 8192, frequency factors 1 / 4), native context 131072".
std::string rope_summary(const ModelConfig& c) {
  const RopeScaling& r = c.rope;
  if (r.type == RopeType::Default) return "none";
  char b[256];
  int n = std::snprintf(b, sizeof b, "%s x%g", std::string(rope_type_name(r.type)).c_str(), r.factor);
  if (r.type == RopeType::Llama3)
    n += std::snprintf(b + n, sizeof b - static_cast<size_t>(n), " (original %lld, frequency factors %g / %g)",
                       (long long)r.original_max_position_embeddings, r.low_freq_factor, r.high_freq_factor);
  if (r.type == RopeType::Yarn) {
    const RopeParams p = rope_params(c, c.max_position_embeddings);
    n += std::snprintf(b + n, sizeof b - static_cast<size_t>(n), " (original %lld, attention factor %.6g)",
                       (long long)r.original_max_position_embeddings, static_cast<double>(p.attention_scaling));
  }
  if (r.type == RopeType::Dynamic)
    n += std::snprintf(b + n, sizeof b - static_cast<size_t>(n), " (NTK base grows past %lld tokens)",
                       (long long)c.max_position_embeddings);
  std::snprintf(b + n, sizeof b - static_cast<size_t>(n), ", native context %lld", (long long)c.native_context());
  return b;
}
}  // namespace

int cmd_inspect(const Args& args) {
  Flags f("inspect", "miniseq inspect MODEL_DIR|config.json", {});
  f.allow_positional(1);
  if (!f.parse(args)) return 0;
  MS_CHECK(f.positional().size() == 1,
           "inspect: give exactly one model directory or config.json (miniseq inspect MODEL_DIR)");
  const std::string dir = f.positional()[0];
  const ModelConfig c = load_model_config(dir);
  const auto specs = param_specs(c);
  const bool config_only = std::filesystem::is_regular_file(dir);
  std::optional<SafetensorsModel> files;
  if (!config_only) files.emplace(dir);

  std::printf("model       %s\n", dir.c_str());
  std::printf("arch        %s: %lld layers, hidden %lld, intermediate %lld, heads %lld (kv %lld, head_dim %lld), "
              "vocab %lld\n",
              std::string(arch_name(c.arch)).c_str(), (long long)c.num_hidden_layers, (long long)c.hidden_size,
              (long long)c.intermediate_size, (long long)c.num_attention_heads, (long long)c.num_key_value_heads,
              (long long)c.head_dim, (long long)c.vocab_size);
  std::printf("context     max_position_embeddings %lld, rope_theta %g, rope scaling %s, sliding window %s\n",
              (long long)c.max_position_embeddings, c.rope_theta,
              rope_summary(c).c_str(),
              c.max_sliding_window() ? std::to_string(c.max_sliding_window()).c_str() : "none");
  std::printf("options     tied embeddings %s, q/k/v bias %s, o bias %s, q/k norm %s, rms_norm_eps %g\n",
              c.tie_word_embeddings ? "yes" : "no", c.qkv_bias ? "yes" : "no", c.o_bias ? "yes" : "no",
              c.qk_norm ? "yes" : "no", c.rms_norm_eps);
  auto id = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("none"); };
  std::printf("tokens      bos %s, eos %s, pad %s\n", id(c.bos_token_id).c_str(), id(c.eos_token_id).c_str(),
              id(c.pad_token_id).c_str());
  if (files)
    std::printf("files       %zu safetensors file%s%s, %s of tensor data\n", files->files().size(),
                files->files().size() == 1 ? "" : "s", files->sharded() ? " (sharded, with index)" : "",
                mib(static_cast<double>(files->total_bytes())).c_str());
  else
    std::printf("files       none: config.json only\n");

  std::map<std::string, int64_t> per_kind;
  std::map<std::string, int64_t> per_dtype;
  for (const auto& s : specs) {
    per_kind[std::string(param_kind(s.role))] += s.shape.numel();
    if (const auto* e = files ? files->find(s.name) : nullptr) per_dtype[e->info->dtype_name] += s.shape.numel();
  }
  const int64_t total = param_count(specs);
  std::printf("parameters  %s total\n", with_commas(total).c_str());
  for (const char* k : {"embedding", "attention", "mlp", "norm", "lm_head"})
    if (per_kind.count(k))
      std::printf("  %-10s %15s  (%.1f%%)\n", k, with_commas(per_kind[k]).c_str(), 100.0 * per_kind[k] / total);
  std::string dtypes;
  for (const auto& [dt, n] : per_dtype) dtypes += (dtypes.empty() ? "" : ", ") + dt + " " + with_commas(n);
  std::printf("dtype       in files: %s; config torch_dtype %s\n", files ? dtypes.c_str() : "-",
              std::string(dtype_name(c.torch_dtype)).c_str());
  std::printf("memory      weights %s in bf16, %s in fp32\n", mib(2.0 * static_cast<double>(total)).c_str(),
              mib(4.0 * static_cast<double>(total)).c_str());

  if (!files) return 0;
  const auto problems = check_model_files(*files, specs, c);
  std::fflush(stdout);  // the report first, then the errors, in order on a shared terminal or pipe
  for (const auto& p : problems) std::fprintf(stderr, "miniseq: error: %s: %s\n", dir.c_str(), p.c_str());
  MS_CHECK(problems.empty(), dir, ": ", problems.size(), " mismatch", problems.size() == 1 ? "" : "es",
           " between the weight files and config.json (listed above)");
  std::printf("check       files match the config\n");
  return 0;
}

}  // namespace miniseq::cli
