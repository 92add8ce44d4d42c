// Flags shared by the inference commands (eval, passkey, generate): model, PEFT adapter, device, RoPE scaling
// and the forward pass's MsT chunking. Declared once here; each command appends its own.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "miniseq/cli/flags.h"
#include "miniseq/model/step_policy.h"
#include "miniseq/ops/backend.h"

namespace miniseq::cli {

std::vector<FlagSpec> inference_flags(std::vector<FlagSpec> own);

// The model directory and the PEFT adapter to run over it: --model and --peft_model as given, or, when
// --model is an adapter directory (adapter_config.json, no config.json: what `miniseq train` writes with
// LoRA), its base model (adapter_config.json's base_model_name_or_path, as peft's AutoPeftModelForCausalLM
// resolves it) with
// --model as the adapter. `command` names the command in messages.
struct ModelSource {
  std::string model, peft;
};
ModelSource inference_model_source(const Flags& f, const char* command);
StepPolicy inference_policy(const Flags& f);
std::unique_ptr<Backend> inference_backend(const Flags& f);  // --device cpu|cuda

}  // namespace miniseq::cli
