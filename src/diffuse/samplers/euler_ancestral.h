// Euler ancestral (the ancestral sampler of Crowson's k-diffusion, sample_euler_ancestral with
// eta = 1): from sigma to sigma' < sigma in x_sigma = x_t / sqrt(abar) (score.h),
// clang-format off
//   sigma_up   = min(sigma', sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)),
//   sigma_down = sqrt(sigma'^2 - sigma_up^2),
//   x_sigma'   = x_sigma + (sigma_down - sigma) eps + sigma_up z,   z ~ N(0, I),
// clang-format on
// an Euler step down to sigma_down and fresh noise back up to sigma'; no noise after the last step
// (sigma' = 0). sigma_up is DDIM's eta = 1 sigma (eq. 16) in this scaling, so on the same
// timesteps this is the DDPM ancestral step with the respaced posterior variance.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

struct AncestralStep {
  double sigma_down, sigma_up;
};
AncestralStep ancestral_step(double sigma, double sigma_next);

torch::Tensor sample_euler_ancestral(const Denoiser& denoiser, torch::Tensor x,
                                     const SamplerRun& run);

}  // namespace diffuse
