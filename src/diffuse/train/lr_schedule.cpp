#include "diffuse/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {
constexpr double kPi = 3.14159265358979323846;
}  // namespace

LrScheduleKind parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrScheduleKind::Constant;
  if (name == "cosine") return LrScheduleKind::Cosine;
  if (name == "wsd") return LrScheduleKind::Wsd;
  fail("--lr-schedule: unknown '", name, "' (expected constant, cosine or wsd)");
}

double LrSchedule::progress(int64_t step, double time_fraction) const {
  const double by_steps =
      static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, steps));
  return std::clamp(std::max(by_steps, time_fraction), 0.0, 1.0);
}

double LrSchedule::lr(int64_t step, double time_fraction) const {
  const double w =
      warmup > 0 ? std::min(1.0, static_cast<double>(step + 1) / static_cast<double>(warmup)) : 1.0;
  const double p = progress(step, time_fraction);
  double m = 1.0;
  if (kind == LrScheduleKind::Cosine) m = 0.5 * (1.0 + std::cos(kPi * p));
  if (kind == LrScheduleKind::Wsd && p > 1.0 - decay_fraction) m = (1.0 - p) / decay_fraction;
  return base_lr * w * m;
}

}  // namespace diffuse
