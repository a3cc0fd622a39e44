// Noise schedules and every coefficient the DDPM process needs, computed once in float64 and named
// as in the papers (Ho et al. 2020; Nichol & Dhariwal 2021). Index t is 0-based: t = 0 is the
// paper's step 1, t = T-1 the paper's step T.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

// Linear betas from 1e-4 to 0.02 at T = 1000, scaled by 1000/T for other T (improved-diffusion).
std::vector<double> linear_betas(int64_t T);
// Cosine schedule: abar(t) = cos^2(((t/T + s)/(1 + s)) pi/2), betas capped at max_beta.
std::vector<double> cosine_betas(int64_t T, double s = 0.008, double max_beta = 0.999);
// Throws diffuse::Error if T < 1 or any beta is not finite or not in (0, 1).
void validate_betas(const std::vector<double>& betas, const std::string& what = "betas");

struct Schedule {
  std::string name;  // "linear", "cosine" or "custom"
  std::vector<double> betas;
  std::vector<double> alphas;               // 1 - beta_t
  std::vector<double> alphas_cumprod;       // abar_t = prod_{s<=t} alpha_s
  std::vector<double> alphas_cumprod_prev;  // abar_{t-1}, with abar_{-1} = 1
  std::vector<double> alphas_cumprod_next;  // abar_{t+1}, with abar_T = 0
  std::vector<double> sqrt_alphas_cumprod;
  std::vector<double> sqrt_one_minus_alphas_cumprod;
  std::vector<double> log_one_minus_alphas_cumprod;
  std::vector<double> sqrt_recip_alphas_cumprod;    // 1 / sqrt(abar_t)
  std::vector<double> sqrt_recipm1_alphas_cumprod;  // sqrt(1 / abar_t - 1)
  // q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta~_t)   (Ho et al. eq. 6-7)
  std::vector<double> posterior_variance;  // beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
  // log beta~_t with beta~_0 = 0 replaced by beta~_1, so the log stays finite.
  std::vector<double> posterior_log_variance_clipped;
  std::vector<double> posterior_mean_coef1;  // beta_t sqrt(abar_{t-1}) / (1 - abar_t)
  std::vector<double> posterior_mean_coef2;  // (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)

  int64_t num_timesteps() const { return static_cast<int64_t>(betas.size()); }

  static Schedule from_betas(std::vector<double> betas, std::string name = "custom");
  static Schedule linear(int64_t T) { return from_betas(linear_betas(T), "linear"); }
  static Schedule cosine(int64_t T) { return from_betas(cosine_betas(T), "cosine"); }
  // "linear" or "cosine"; anything else is an error naming the accepted values.
  static Schedule by_name(const std::string& name, int64_t T);

  // The schedule restricted to increasing timesteps `kept` (improved-diffusion's respacing):
  // beta'_i = 1 - abar[kept_i] / abar[kept_{i-1}], so the respaced abar equals abar at the kept
  // steps.
  Schedule respaced(const std::vector<int64_t>& kept) const;
};

}  // namespace diffuse
