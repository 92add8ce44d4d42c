#include "miniseq/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace miniseq {

int64_t warmup_steps_for(const TrainArgs& a, int64_t total_steps) {
  if (a.warmup_steps > 0) return a.warmup_steps;
  return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * a.warmup_ratio));
}

double lr_multiplier(Schedule s, int64_t step, int64_t warmup, int64_t total) {
  const double t = static_cast<double>(step);
  const double w = static_cast<double>(std::max<int64_t>(1, warmup));
  switch (s) {
    case Schedule::Constant: return 1.0;
    case Schedule::ConstantWithWarmup: return step < warmup ? t / w : 1.0;
    case Schedule::Linear:
      if (step < warmup) return t / w;
      return std::max(0.0, static_cast<double>(total - step) / static_cast<double>(std::max<int64_t>(1, total - warmup)));
    case Schedule::Cosine: {
      if (step < warmup) return t / w;
      const double progress =
          static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
      return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));  // num_cycles = 0.5
    }
  }
  return 1.0;
}

}  // namespace miniseq
