// DPM-Solver++ 2M (Lu et al. 2022, "DPM-Solver++", Algorithm 2): multistep, data prediction,
// second order, in lambda = log(alpha / sigma) with alpha = sqrt(abar), sigma = sqrt(1 - abar).
// clang-format off
//   h_i = lambda_{i+1} - lambda_i,   r_i = h_{i-1} / h_i,
//   D_i = (1 + 1 / (2 r_i)) x0_i - 1 / (2 r_i) x0_{i-1}        (x0_i alone at i = 0)
//   x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h_i} - 1) D_i
// clang-format on
// The first step (no history yet) and the last step are first order (= DDIM); the last lands on
// sigma = 0, where the update is x0 itself. Deterministic: no noise is drawn.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

torch::Tensor sample_dpmpp_2m(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);

}  // namespace diffuse
