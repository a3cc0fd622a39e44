#include "diffuse/diffusion/losses.h"

#include <cmath>

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

}  // namespace diffuse
