#include "diffuse/samplers/guidance.h"

#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {

ModelFn classifier_free_guidance(ModelFn doubled, double scale) {
  check(static_cast<bool>(doubled), "classifier-free guidance: no model given");
  check(std::isfinite(scale), "--guidance must be finite, got ", scale);
  return [doubled = std::move(doubled), scale](const torch::Tensor& x, const torch::Tensor& t) {
    const int64_t B = x.size(0), C = x.size(1);
    auto both = doubled(torch::cat({x, x}), torch::cat({t, t}));  // (2B, C', H, W)
    auto cond = both.narrow(0, 0, B), uncond = both.narrow(0, B, B);
    auto guided = uncond.narrow(1, 0, C) + scale * (cond.narrow(1, 0, C) - uncond.narrow(1, 0, C));
    if (cond.size(1) == C) return guided;
    return torch::cat({guided, cond.narrow(1, C, cond.size(1) - C)}, 1);
  };
}

}  // namespace diffuse
