// DDIM (Song et al. 2021, eq. 12): with abar = abar_t and abar' = abar at the next timestep,
// clang-format off
//   x' = sqrt(abar') x0 + sqrt(1 - abar' - sigma^2) eps + sigma z,
//   sigma(eta) = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar')      (eq. 16),
// clang-format on
// where (x0, eps) come from the model output at x_t. abar' = 1 after the last step, so the sample
// is the last x0. eta = 0 is the deterministic ODE; eta = 1 is the DDPM posterior on the respaced
// schedule. Run with abar' > abar the same step is DDIM inversion (inversion.h).
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

// sigma_t(eta) of eq. 16 for a step from abar to abar_next.
double ddim_sigma(double abar, double abar_next, double eta);

// Eq. 12 from the (x0, eps) pair to the level abar_next; z is drawn from noise when sigma > 0.
torch::Tensor ddim_step(const torch::Tensor& x0, const torch::Tensor& eps, double abar_next,
                        double sigma, NoiseSource* noise);

torch::Tensor sample_ddim(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);

}  // namespace diffuse
