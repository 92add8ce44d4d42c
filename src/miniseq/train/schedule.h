// Learning-rate schedules exactly as Hugging Face's get_scheduler computes them (transformers/optimization.py):
// the multiplier applied to the peak learning rate at optimizer step `step` (0-based: the number of optimizer
// steps already taken when this one runs).
#pragma once

#include <cstdint>

#include "miniseq/train/train_args.h"

namespace miniseq {

// warmup_steps if > 0, else ceil(warmup_ratio * total_steps) (TrainingArguments.get_warmup_steps).
int64_t warmup_steps_for(const TrainArgs& a, int64_t total_steps);

double lr_multiplier(Schedule s, int64_t step, int64_t warmup, int64_t total_steps);

}  // namespace miniseq
