// Heun's second-order method on the probability-flow ODE in sigma (Karras et al. 2022, Algorithm
// 1, deterministic), in x_sigma = x_t / sqrt(abar) where dx/dsigma = eps (score.h). For noise
// levels sigma_0 > ... > sigma_{N-1} > sigma_N = 0, step i reads as the algorithm's lines 4-8:
// clang-format off
//   d_cur   = eps(x_cur, sigma_i)                                  (line 4)
//   x_next  = x_cur + (sigma_{i+1} - sigma_i) d_cur                (line 5, Euler)
//   d_prime = eps(x_next, sigma_{i+1})                             (line 7)
//   x_next  = x_cur + (sigma_{i+1} - sigma_i) (d_cur + d_prime) / 2   (line 8, the trapezoid)
// clang-format on
// with the correction skipped on the last step (to sigma = 0), so N levels cost 2N - 1 network
// evaluations. The levels are timesteps, the network is evaluated at each one's exact sigma.
// With run.churn (sampler.h) this is Algorithm 2: before level i the noise is raised (lines 5-6)
//   sigma_hat = (1 + gamma_i) sigma_i,   x_hat = x + sqrt(sigma_hat^2 - sigma_i^2) s_noise z,
// where sigma_hat is rounded to the nearest timestep (at or above timesteps[i]) and taken at that
// timestep's exact sigma, so the network still sees only trained timesteps; the step then runs
// from sigma_hat. Where the rounding gives timesteps[i] itself nothing is added; churn 0 is
// Algorithm 1 exactly and draws no noise.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

torch::Tensor sample_heun(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);

}  // namespace diffuse
