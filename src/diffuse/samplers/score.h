// The network's prediction read as a score and as the denoiser of Karras et al. 2022 ("EDM",
// "Elucidating the Design Space of Diffusion-Based Generative Models"). The VP process
// x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps is EDM's variance-exploding x_sigma = x_0 + sigma n
// scaled by sqrt(abar):
//   sigma = sqrt((1 - abar) / abar),   abar = 1 / (1 + sigma^2),   x_sigma = x_t / sqrt(abar).
// Tweedie's formula ties the three views of one prediction together:
// clang-format off
//   score of x_t:      grad log p_t(x_t) = -eps / sqrt(1 - abar)   (eps = -sqrt(1 - abar) score)
//   denoiser:          D(x_sigma; sigma) = x_sigma - sigma eps = the x_0 prediction
//   score of x_sigma:  grad log p_sigma(x_sigma) = (D - x_sigma) / sigma^2 = -eps / sigma   (EDM eq. 3)
// and the probability-flow ODE in sigma (EDM eq. 4 with sigma(t) = t, s(t) = 1) is
//   dx_sigma / dsigma = -sigma grad log p_sigma = (x_sigma - D) / sigma = eps.
// clang-format on
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>

#include "diffuse/diffusion/prediction.h"
#include "diffuse/diffusion/schedule.h"
#include "diffuse/samplers/sampler.h"

namespace diffuse {

// sigma = sqrt((1 - abar) / abar); 0 at abar = 1 (the data).
double sigma_of_alpha_bar(double abar);
// abar = 1 / (1 + sigma^2).
double alpha_bar_of_sigma(double sigma);

// x_sigma = x_t / sqrt(abar) and back.
torch::Tensor to_variance_exploding(const torch::Tensor& x_t, double abar);
torch::Tensor to_variance_preserving(const torch::Tensor& x_sigma, double abar);

// grad_{x_t} log p_t = -eps / sqrt(1 - abar) and back (abar < 1).
torch::Tensor score_from_eps(const torch::Tensor& eps, double abar);
torch::Tensor eps_from_score(const torch::Tensor& score, double abar);

// D(x_sigma; sigma) = x_sigma - sigma eps and back (the latter for sigma > 0).
torch::Tensor denoised_from_eps(const torch::Tensor& x_sigma, const torch::Tensor& eps,
                                double sigma);
torch::Tensor eps_from_denoised(const torch::Tensor& x_sigma, const torch::Tensor& denoised,
                                double sigma);
// grad_{x_sigma} log p_sigma = (D - x_sigma) / sigma^2 (sigma > 0).
torch::Tensor ve_score_from_denoised(const torch::Tensor& x_sigma, const torch::Tensor& denoised,
                                     double sigma);

// EDM's D(x_sigma; sigma_t) from the denoiser at timestep t: x_sigma (B, C, ...) is scaled to x_t,
// the network called there, and its x_0 returned.
torch::Tensor edm_denoised(const Denoiser& denoiser, const torch::Tensor& x_sigma, int64_t t);

}  // namespace diffuse
