// A set of tensors laid out by the parameter table: the weights, and with the same walk their gradients and
// optimizer moments. Every tensor is a Buffer of the memory plan.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "miniseq/core/memory_plan.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/model/param_spec.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

class ParamSet {
 public:
  // One buffer per spec, named "<prefix><HF name>", in the given category and dtype (not initialized).
  ParamSet(MemoryPlan& plan, const std::vector<ParamSpec>& specs, DType dtype, MemCategory category,
           const std::string& prefix = "");
  // A view of the tensors of `src` that `specs` names, in specs' order (no buffers of its own: valid while `src`
  // lives). E.g. the trained subset of a LoRA run's weights (Decoder::trained_weights), which the optimizer walks
  // in step with the gradients.
  static ParamSet view_of(const ParamSet& src, const std::vector<ParamSpec>& specs);

  const std::vector<ParamSpec>& specs() const { return specs_; }
  size_t size() const { return specs_.size(); }
  const Tensor& operator[](size_t i) const { return tensors_[i]; }
  const Tensor& get(const std::string& hf_name) const;  // throws when absent
  const Tensor* find(const std::string& hf_name) const;  // null when absent
  size_t bytes() const;

  // The visitor: f(spec, tensor) over every parameter, in table order.
  void for_each(const std::function<void(const ParamSpec&, const Tensor&)>& f) const;

 private:
  std::vector<ParamSpec> specs_;
  ParamSet() = default;
  std::vector<Buffer> buffers_;  // owned storage (empty for a view)
  std::vector<Tensor> tensors_;  // [i]: the tensor of specs_[i]
  std::map<std::string, size_t> index_;
};

// Every disagreement between the files of a model directory and the parameter table, one line each: missing
// tensors, unexpected tensors, wrong shapes, non-float dtypes. Empty when the files match.
std::vector<std::string> check_model_files(const SafetensorsModel& files, const std::vector<ParamSpec>& specs,
                                           const ModelConfig& config);

// Reads every parameter from the files into `params` (converting dtypes); fails on the first mismatch listed by
// check_model_files. LoRA tensors (roles LoraA / LoraB) are not part of a model directory: both skip them
// (model/adapter.h loads or initializes them). Parameters on a device go through a host staging buffer and `backend->upload`.
void load_params(const SafetensorsModel& files, const ModelConfig& config, const ParamSet& params,
                 Backend* backend = nullptr);

// A host (CPU) view of `t`: t itself on the CPU; otherwise a copy downloaded into `storage` (when `download`) or an
// uninitialized host buffer of the same shape and dtype.
Tensor host_view(Backend* backend, const Tensor& t, std::vector<uint8_t>& storage, bool download = true);
// Writes a host tensor made by host_view back to `t` (nothing to do on the CPU).
void store_host_view(Backend* backend, const Tensor& t, const Tensor& host);

}  // namespace miniseq
