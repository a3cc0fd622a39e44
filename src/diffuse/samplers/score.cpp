#include "diffuse/samplers/score.h"

#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {

double sigma_of_alpha_bar(double abar) {
  check(abar > 0.0 && abar <= 1.0, "sigma: abar must be in (0, 1], got ", abar);
  return std::sqrt((1.0 - abar) / abar);
}

double alpha_bar_of_sigma(double sigma) {
  check(sigma >= 0.0 && std::isfinite(sigma), "abar: sigma must be finite and >= 0, got ", sigma);
  return 1.0 / (1.0 + sigma * sigma);
}

torch::Tensor to_variance_exploding(const torch::Tensor& x_t, double abar) {
  return x_t * (1.0 / std::sqrt(abar));
}

torch::Tensor to_variance_preserving(const torch::Tensor& x_sigma, double abar) {
  return x_sigma * std::sqrt(abar);
}

torch::Tensor score_from_eps(const torch::Tensor& eps, double abar) {
  check(abar < 1.0, "score: undefined at abar = 1 (no noise)");
  return eps * (-1.0 / std::sqrt(1.0 - abar));
}

torch::Tensor eps_from_score(const torch::Tensor& score, double abar) {
  return score * -std::sqrt(1.0 - abar);
}

torch::Tensor denoised_from_eps(const torch::Tensor& x_sigma, const torch::Tensor& eps,
                                double sigma) {
  return x_sigma - sigma * eps;
}

torch::Tensor eps_from_denoised(const torch::Tensor& x_sigma, const torch::Tensor& denoised,
                                double sigma) {
  check(sigma > 0.0, "eps from D: undefined at sigma = 0");
  return (x_sigma - denoised) * (1.0 / sigma);
}

torch::Tensor ve_score_from_denoised(const torch::Tensor& x_sigma, const torch::Tensor& denoised,
                                     double sigma) {
  check(sigma > 0.0, "score from D: undefined at sigma = 0");
  return (denoised - x_sigma) * (1.0 / (sigma * sigma));
}

torch::Tensor edm_denoised(const Denoiser& denoiser, const torch::Tensor& x_sigma, int64_t t) {
  return denoiser(to_variance_preserving(x_sigma, denoiser.alpha_bar(t)), t).x0;
}

}  // namespace diffuse
