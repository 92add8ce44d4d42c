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
StepPolicy inference_policy(const Flags& f);
std::unique_ptr<Backend> inference_backend(const Flags& f);  // --device cpu|cuda

}  // namespace miniseq::cli
