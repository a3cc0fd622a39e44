// DPM-Solver++ (Lu et al. 2022, "DPM-Solver++"): multistep solvers of the diffusion ODE (and SDE)
// in data prediction, in lambda = log(alpha / sigma) with alpha = sqrt(abar), sigma = sqrt(1 -
// abar), h_i = lambda_{i+1} - lambda_i, r_i = h_{i-1} / h_i and x0_i the model's x_0 at level i.
// clang-format off
// 2M (Algorithm 2):
//   D_i = (1 + 1 / (2 r_i)) x0_i - 1 / (2 r_i) x0_{i-1}        (x0_i alone at i = 0)
//   x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h_i} - 1) D_i
// 3M (the third-order multistep of the paper's Appendix B, as diffusers writes it), with
// D1_0 = (x0_i - x0_{i-1}) / r_0, D1_1 = (x0_{i-1} - x0_{i-2}) / r_1 (r_0 = h_{i-1} / h, r_1 = h_{i-2} / h):
//   D1 = D1_0 + r_0 / (r_0 + r_1) (D1_0 - D1_1),   D2 = (D1_0 - D1_1) / (r_0 + r_1),
//   x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha (e^{-h} - 1) x0_i + alpha ((e^{-h} - 1) / h + 1) D1
//             - alpha ((e^{-h} - 1 + h) / h^2 - 1/2) D2
// 2M SDE (the SDE-DPM-Solver++ of sec. 5, midpoint form), z ~ N(0, I):
//   x_{i+1} = (sigma_{i+1} / sigma_i) e^{-h} x_i + alpha (1 - e^{-2h}) (x0_i + (x0_i - x0_{i-1}) / (2 r_i))
//             + sigma_{i+1} sqrt(1 - e^{-2h}) z
// clang-format on
// Each starts at first order (no history yet), 3M goes through second order; the last step, onto
// sigma = 0, is x0 itself, and with fewer than 15 steps 3M's second-to-last step is second order
// (diffusers' lower_order_final). Only the SDE draws noise (one randn per step but the last).
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

torch::Tensor sample_dpmpp_2m(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);
torch::Tensor sample_dpmpp_3m(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);
torch::Tensor sample_dpmpp_2m_sde(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);

}  // namespace diffuse
