// Classifier-free guidance (Ho & Salimans 2022) over any ModelFn, in diffusers' guidance_scale
// convention:
//   out = out(x, null) + s (out(x, class) - out(x, null)),
// so s = 1 is the conditional model alone, s = 0 the unconditional one (the null class), s > 1
// extrapolates away from the unconditional prediction. The weights sum to 1, so guiding the eps,
// x_0 or v output is the same (each is affine in the others at fixed x_t); a learned variance is
// taken from the conditional output.
#pragma once
#include "diffuse/diffusion/model_fn.h"

namespace diffuse {

// doubled: the network on the batch [x, x] with the class labels on its first half and the null
// class on its second (so one forward evaluates both). Returns the guided model of batch x.
ModelFn classifier_free_guidance(ModelFn doubled, double scale);

}  // namespace diffuse
