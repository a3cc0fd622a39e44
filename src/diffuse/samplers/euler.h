// Euler's method on the probability-flow ODE in sigma (Karras et al. 2022, Algorithm 1 lines 3-4,
// without the second-order correction): with x_sigma = x_t / sqrt(abar) and d = dx/dsigma = eps
// (score.h),
//   x_sigma' = x_sigma + (sigma' - sigma) eps,
// from the noise level of timesteps[i] to that of timesteps[i + 1], and to sigma = 0 (the sample,
// D) after the last. Written in the VP scaling this is DDIM with eta = 0 (Song et al. 2021, eq.
// 13), so the two agree on the same timesteps. Deterministic.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

torch::Tensor sample_euler(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);

}  // namespace diffuse
