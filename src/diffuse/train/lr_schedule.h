// The learning rate over a training budget: linear warmup times a decay that knows where the
// budget ends (at --steps or at --time-limit, whichever comes first).
// clang-format off
//   progress    p = max(step / steps, time fraction)   in [0, 1], over the whole budget
//   warmup      w = min(1, (step + 1) / warmup)        (1 without warmup; DDPM's linear warmup)
//   constant    m = 1                                  (DDPM, diffusers' train_unconditional default)
//   cosine      m = (1 + cos(pi p)) / 2                (SGDR, Loshchilov & Hutter 2017, eq. 5, one
//                                                       cycle, eta_min = 0)
//   wsd         m = 1 for p < 1 - d, else (1 - p) / d  (warmup-stable-decay: Zhai et al. 2022,
//                                                       Haegele et al. 2024, linear cool-down over
//                                                       the last fraction d of the budget)
//   lr = base_lr * w * m
// clang-format on
// step counts the steps taken before the one the rate is for (0 for the first), so a steps budget
// makes the rate a function of the step alone and a resumed run sees the same rates.
#pragma once
#include <cstdint>
#include <string>

namespace diffuse {

enum class LrScheduleKind { Constant, Cosine, Wsd };

// "constant", "cosine", "wsd"; anything else is an error naming --lr-schedule.
LrScheduleKind parse_lr_schedule(const std::string& name);

struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::Constant;
  double base_lr = 2e-4;
  int64_t warmup = 0;
  int64_t steps = 1;            // the budget in steps
  double decay_fraction = 0.2;  // wsd: d, the cool-down's share of the budget

  // p for the step about to be taken; time_fraction: the share of the time budget spent (0 when
  // there is none).
  double progress(int64_t step, double time_fraction = 0) const;
  double lr(int64_t step, double time_fraction = 0) const;
};

}  // namespace diffuse
