// DEIS (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator"): the
// multistep exponential integrator in rho = sigma / alpha (the variance-exploding sigma) with a
// polynomial extrapolation of eps in log rho ("logrho", diffusers' DEISMultistepScheduler),
// order 3 (the tAB3 of the paper's Table 3). From level s = i to t = i + 1 with eps_i, eps_{i-1},
// eps_{i-2} at rho_0 > rho_1 > rho_2 ... (rho_0 = rho_s):
// clang-format off
//   x_t = alpha_t (x_s / alpha_s + sum_j c_j eps_{i-j}),
//   c_j = integral from rho_s to rho_t of the Lagrange basis polynomial l_j(log rho) d rho
// clang-format on
// (the paper's eq. 15 with the exact integrals of sec. 4's logrho parametrisation); first order is
// DDIM. Orders rise 1, 2, 3 at the start; with fewer than 15 steps the last two steps are first
// and second order. As diffusers, the last step lands on timestep 0's noise level (its
// final_sigmas_type "sigma_min"), not on sigma = 0, unless the last timestep is 0 itself, where
// the last step gives the x_0 prediction.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

torch::Tensor sample_deis(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);

}  // namespace diffuse
