// Ancestral sampling (Ho et al. 2020, Algorithm 2): x_{t-1} = mu_theta(x_t, t) + sigma_t z, with
// no noise at the last step. With S < T steps it runs on the respaced process (Nichol & Dhariwal
// 2021 sec. 4; improved-diffusion's SpacedDiffusion): a new process whose abar are the kept
// timesteps' own, so beta'_i = 1 - abar[kept_i] / abar[kept_{i-1}], and whose p(x_{t-1} | x_t) is
// GaussianDiffusion::p_mean_variance as it is, for every variance type.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

// The process on the kept timesteps (descending, as a sampler visits them); its index j is the
// kept timestep S-1-j.
GaussianDiffusion respaced_process(const Schedule& schedule, std::vector<int64_t> timesteps,
                                   PredictionType prediction, VarianceType variance);

torch::Tensor sample_ddpm(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);

}  // namespace diffuse
