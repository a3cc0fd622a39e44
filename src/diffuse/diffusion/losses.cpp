#include "diffuse/diffusion/losses.h"

#include <algorithm>
#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {

torch::Tensor normal_kl(const torch::Tensor& mean1, const torch::Tensor& logvar1,
                        const torch::Tensor& mean2, const torch::Tensor& logvar2) {
  return 0.5 * (-1.0 + logvar2 - logvar1 + torch::exp(logvar1 - logvar2) +
                (mean1 - mean2).pow(2) * torch::exp(-logvar2));
}

torch::Tensor standard_normal_cdf(const torch::Tensor& x) {
  return 0.5 * torch::erfc(-x / std::sqrt(2.0));
}

torch::Tensor discretized_gaussian_log_likelihood(const torch::Tensor& x, const torch::Tensor& mean,
                                                  const torch::Tensor& log_scale) {
  const double half_bin = 1.0 / 255.0;
  const auto centered = x - mean;
  const auto inv_std = torch::exp(-log_scale);
  const auto upper = inv_std * (centered + half_bin);
  const auto lower = inv_std * (centered - half_bin);
  const auto cdf_upper = standard_normal_cdf(upper);
  // 1 - Phi(lower) = Phi(-lower), exact in the upper tail.
  const auto sf_lower = standard_normal_cdf(-lower);
  const auto log_cdf_upper = torch::log(cdf_upper.clamp_min(1e-12));
  const auto log_sf_lower = torch::log(sf_lower.clamp_min(1e-12));
  // For the middle bins take the smaller tail mass difference, which avoids cancelling near 1.
  const auto delta = torch::where(lower > 0, sf_lower - standard_normal_cdf(-upper),
                                  cdf_upper - standard_normal_cdf(lower));
  const auto log_delta = torch::log(delta.clamp_min(1e-12));
  return torch::where(x < -0.999, log_cdf_upper, torch::where(x > 0.999, log_sf_lower, log_delta));
}

torch::Tensor mean_flat(const torch::Tensor& x) {
  if (x.dim() <= 1) return x;
  return x.flatten(1).mean(1);
}

LossWeighting parse_loss_weighting(const std::string& name) {
  if (name == "simple") return LossWeighting::Simple;
  if (name == "snr") return LossWeighting::Snr;
  if (name == "min-snr-5" || name == "min_snr_5") return LossWeighting::MinSnr5;
  if (name == "vlb") return LossWeighting::Vlb;
  fail("--loss-weighting: unknown '", name, "' (expected simple, snr, min-snr-5 or vlb)");
}

std::string to_string(LossWeighting w) {
  switch (w) {
    case LossWeighting::Simple:
      return "simple";
    case LossWeighting::Snr:
      return "snr";
    case LossWeighting::MinSnr5:
      return "min-snr-5";
    case LossWeighting::Vlb:
      return "vlb";
  }
  return "?";
}

std::vector<double> loss_weights(LossWeighting weighting, const Schedule& schedule,
                                 PredictionType prediction,
                                 const std::vector<double>& reverse_variance) {
  const int64_t T = schedule.num_timesteps();
  std::vector<double> w(T, 1.0);
  if (weighting == LossWeighting::Simple) return w;
  check(weighting != LossWeighting::Vlb || static_cast<int64_t>(reverse_variance.size()) == T,
        "--loss-weighting vlb needs a fixed reverse variance (--variance fixed-small or "
        "fixed-large)");
  for (int64_t t = 0; t < T; ++t) {
    const double abar = schedule.alphas_cumprod[t];
    const double snr = abar / (1.0 - abar);
    double lambda = snr;  // weight on the x_0 error
    if (weighting == LossWeighting::MinSnr5) lambda = std::min(snr, 5.0);
    if (weighting == LossWeighting::Vlb) {
      const double beta = schedule.betas[t], alpha = schedule.alphas[t];
      const double eps_weight = beta * beta / (2.0 * reverse_variance[t] * alpha * (1.0 - abar));
      lambda = eps_weight * snr;
    }
    switch (prediction) {
      case PredictionType::Epsilon:
        w[t] = lambda / snr;
        break;
      case PredictionType::Sample:
        w[t] = lambda;
        break;
      case PredictionType::V:
        w[t] = lambda / (snr + 1.0);
        break;
    }
  }
  return w;
}

}  // namespace diffuse
