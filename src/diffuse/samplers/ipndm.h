// iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator",
// sec. 5 and App. B: PNDM's pseudo linear multistep with its Runge-Kutta warm-up replaced by
// lower-order multistep steps): fourth-order Adams-Bashforth on the probability-flow ODE in sigma,
// dx_sigma / dsigma = eps (score.h), with the fixed (equal-step) coefficients
// clang-format off
//   order 1: d = e_i
//   order 2: d = (3 e_i - e_{i-1}) / 2
//   order 3: d = (23 e_i - 16 e_{i-1} + 5 e_{i-2}) / 12
//   order 4: d = (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24
//   x_{sigma_{i+1}} = x_{sigma_i} + (sigma_{i+1} - sigma_i) d,   order min(4, i + 1)
// clang-format on
// on the Karras levels rounded to timesteps as heun uses them (timesteps.h), the last step onto
// sigma = 0. One network evaluation per level; deterministic.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

torch::Tensor sample_ipndm(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);

}  // namespace diffuse
