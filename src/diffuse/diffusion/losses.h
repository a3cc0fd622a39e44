// The likelihood pieces of the variational bound (Ho et al. eq. 5; Nichol & Dhariwal sec. 2-3).
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "diffuse/diffusion/prediction.h"
#include "diffuse/diffusion/schedule.h"

namespace diffuse {

// KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats.
torch::Tensor normal_kl(const torch::Tensor& mean1, const torch::Tensor& logvar1,
                        const torch::Tensor& mean2, const torch::Tensor& logvar2);

// Phi(x) of the standard normal, through erfc so that the tails keep their relative precision.
torch::Tensor standard_normal_cdf(const torch::Tensor& x);

// log p(x) of 8-bit data x in [-1, 1] under N(mean, exp(log_scale)^2) discretised into 256 bins of
// width 2/255 centred on the data values, the outer bins open to -inf and +inf (Ho et al. eq. 13).
// Elementwise, in nats.
torch::Tensor discretized_gaussian_log_likelihood(const torch::Tensor& x, const torch::Tensor& mean,
                                                  const torch::Tensor& log_scale);

// Mean over all but the batch dimension: (B, ...) -> (B).
torch::Tensor mean_flat(const torch::Tensor& x);

// Per-timestep weights w_t of the MSE on the network's prediction target, loss_t = w_t MSE_t.
// Every weighting but `simple` is defined, as in Hang et al. 2023 (Min-SNR), by a weight lambda_t
// on the x_0 error, lambda_t ||x_0 - x0_hat||^2, then expressed on the target the network
// predicts. With SNR_t = abar_t / (1 - abar_t) and x_t fixed, the errors are related by
// clang-format off
//   ||eps - eps_hat||^2 = SNR_t ||x_0 - x0_hat||^2,   ||v - v_hat||^2 = (SNR_t + 1) ||x_0 - x0_hat||^2,
// clang-format on
// so w_t = lambda_t / SNR_t (eps), lambda_t (x_0), lambda_t / (SNR_t + 1) (v).
//   simple     w_t = 1 on whatever the network predicts (Ho et al.'s L_simple).
//   snr        lambda_t = SNR_t: the eps-MSE whatever the network predicts (w_t = 1 for eps,
//              SNR_t for x_0, SNR_t / (SNR_t + 1) for v). For an eps model it is `simple`.
//   min-snr-5  lambda_t = min(SNR_t, 5): w_t = min(SNR_t, 5) / SNR_t (eps), min(SNR_t, 5) (x_0),
//              min(SNR_t, 5) / (SNR_t + 1) (v).
//   vlb        the weight that turns the eps-MSE into the bound's term L_{t-1} with the reverse
//              variance fixed at sigma_t^2: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) =
//              C_t + beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) ||eps - eps_hat||^2 / D
//              (nats per dimension; Ho et al. eq. 8-12), C_t the variance mismatch, which no
//              parameter changes (0 for fixed-small). At t = 0 the same weight gives the quadratic
//              part of the Gaussian decoder's -log N(x_0; mu, sigma_0^2). Defined for fixed
//              variances only (sigma_t^2 from the process: beta~_t or beta_t).
enum class LossWeighting { Simple, Snr, MinSnr5, Vlb };
// "simple", "snr", "min-snr-5" (also "min_snr_5"); anything else is an error naming
// --loss-weighting.
LossWeighting parse_loss_weighting(const std::string& name);
std::string to_string(LossWeighting w);

// w_t for t = 0 .. T-1, in float64. reverse_variance: sigma_t^2 of p(x_{t-1} | x_t), needed by
// `vlb` only (empty otherwise; `vlb` with an empty table is an error).
std::vector<double> loss_weights(LossWeighting weighting, const Schedule& schedule,
                                 PredictionType prediction,
                                 const std::vector<double>& reverse_variance = {});

}  // namespace diffuse
