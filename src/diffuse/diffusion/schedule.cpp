#include "diffuse/diffusion/schedule.h"

#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {

std::vector<double> linear_betas(int64_t T) {
  check(T >= 1, "schedule: number of timesteps T must be >= 1, got ", T);
  const double scale = 1000.0 / static_cast<double>(T);
  const double start = scale * 1e-4, end = scale * 0.02;
  std::vector<double> b(T);
  for (int64_t i = 0; i < T; ++i)
    b[i] = T == 1 ? start
                  : start + (end - start) * static_cast<double>(i) / static_cast<double>(T - 1);
  validate_betas(b, "linear schedule (T too small for the 1000/T scaling)");
  return b;
}

std::vector<double> cosine_betas(int64_t T, double s, double max_beta) {
  check(T >= 1, "schedule: number of timesteps T must be >= 1, got ", T);
  const double half_pi = std::acos(-1.0) / 2.0;
  auto abar = [&](double u) {
    const double c = std::cos((u + s) / (1.0 + s) * half_pi);
    return c * c;
  };
  std::vector<double> b(T);
  for (int64_t i = 0; i < T; ++i) {
    const double t1 = static_cast<double>(i) / T, t2 = static_cast<double>(i + 1) / T;
    b[i] = std::min(1.0 - abar(t2) / abar(t1), max_beta);
  }
  validate_betas(b, "cosine schedule");
  return b;
}

void validate_betas(const std::vector<double>& betas, const std::string& what) {
  check(!betas.empty(), what, ": needs at least one timestep (T >= 1)");
  for (size_t i = 0; i < betas.size(); ++i) {
    const double b = betas[i];
    check(std::isfinite(b), what, ": beta[", i, "] is not a finite number");
    check(b > 0.0 && b < 1.0, what, ": beta[", i, "] = ", b, " is outside (0, 1)");
  }
}

Schedule Schedule::from_betas(std::vector<double> betas, std::string name) {
  validate_betas(betas, name + " betas");
  Schedule s;
  s.name = std::move(name);
  const size_t T = betas.size();
  s.betas = std::move(betas);
  auto resize = [T](std::vector<double>& v) { v.resize(T); };
  for (auto* v :
       {&s.alphas, &s.alphas_cumprod, &s.alphas_cumprod_prev, &s.alphas_cumprod_next,
        &s.sqrt_alphas_cumprod, &s.sqrt_one_minus_alphas_cumprod, &s.log_one_minus_alphas_cumprod,
        &s.sqrt_recip_alphas_cumprod, &s.sqrt_recipm1_alphas_cumprod, &s.posterior_variance,
        &s.posterior_log_variance_clipped, &s.posterior_mean_coef1, &s.posterior_mean_coef2})
    resize(*v);
  double cum = 1.0;
  for (size_t t = 0; t < T; ++t) {
    s.alphas[t] = 1.0 - s.betas[t];
    s.alphas_cumprod_prev[t] = cum;
    cum *= s.alphas[t];
    s.alphas_cumprod[t] = cum;
  }
  for (size_t t = 0; t < T; ++t) {
    const double abar = s.alphas_cumprod[t], abar_prev = s.alphas_cumprod_prev[t];
    s.alphas_cumprod_next[t] = t + 1 < T ? s.alphas_cumprod[t + 1] : 0.0;
    s.sqrt_alphas_cumprod[t] = std::sqrt(abar);
    s.sqrt_one_minus_alphas_cumprod[t] = std::sqrt(1.0 - abar);
    s.log_one_minus_alphas_cumprod[t] = std::log1p(-abar);
    s.sqrt_recip_alphas_cumprod[t] = std::sqrt(1.0 / abar);
    s.sqrt_recipm1_alphas_cumprod[t] = std::sqrt(1.0 / abar - 1.0);
    s.posterior_variance[t] = s.betas[t] * (1.0 - abar_prev) / (1.0 - abar);
    s.posterior_mean_coef1[t] = s.betas[t] * std::sqrt(abar_prev) / (1.0 - abar);
    s.posterior_mean_coef2[t] = (1.0 - abar_prev) * std::sqrt(s.alphas[t]) / (1.0 - abar);
  }
  for (size_t t = 0; t < T; ++t) {
    // beta~_0 = 0; improved-diffusion uses beta~_1 there so the log (and learned range) stays
    // finite.
    const double v = (t == 0 && T > 1) ? s.posterior_variance[1] : s.posterior_variance[t];
    s.posterior_log_variance_clipped[t] = v > 0 ? std::log(v) : std::log(s.betas[t]);
  }
  return s;
}

Schedule Schedule::by_name(const std::string& name, int64_t T) {
  if (name == "linear") return linear(T);
  if (name == "cosine") return cosine(T);
  fail("schedule: unknown schedule '", name, "' (expected linear or cosine)");
}

Schedule Schedule::respaced(const std::vector<int64_t>& kept) const {
  check(!kept.empty(), "respacing: no timesteps kept");
  std::vector<double> b;
  double last = 1.0;
  int64_t prev = -1;
  for (int64_t t : kept) {
    check(t > prev && t < num_timesteps(), "respacing: timesteps must increase within [0, ",
          num_timesteps() - 1, "], got ", t, " after ", prev);
    b.push_back(1.0 - alphas_cumprod[t] / last);
    last = alphas_cumprod[t];
    prev = t;
  }
  return from_betas(std::move(b), name + "-respaced");
}

}  // namespace diffuse
