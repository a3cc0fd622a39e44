#include "diffuse/samplers/deis.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "diffuse/samplers/score.h"

namespace diffuse {
namespace {

// Antiderivatives in t of the Lagrange basis in log t: (log t - log c) / (log b - log c), and
// (log t - log c)(log t - log d) / ((log b - log c)(log b - log d)).
double basis2(double t, double b, double c) {
  return t * (std::log(t) - std::log(c) - 1.0) / (std::log(b) - std::log(c));
}
double basis3(double t, double b, double c, double d) {
  const double lt = std::log(t), lc = std::log(c), ld = std::log(d);
  const double num = t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0);
  return num / ((std::log(b) - lc) * (std::log(b) - ld));
}

// The coefficients c_j of eps_{i-j} for a step from rho[0] to rho_t, order = rho.size().
std::vector<double> deis_coefficients(const std::vector<double>& rho, double rho_t) {
  const double r0 = rho[0];
  if (rho.size() == 1) return {rho_t - r0};
  if (rho.size() == 2) {
    const double r1 = rho[1];
    return {basis2(rho_t, r0, r1) - basis2(r0, r0, r1), basis2(rho_t, r1, r0) - basis2(r0, r1, r0)};
  }
  const double r1 = rho[1], r2 = rho[2];
  return {basis3(rho_t, r0, r1, r2) - basis3(r0, r0, r1, r2),
          basis3(rho_t, r1, r2, r0) - basis3(r0, r1, r2, r0),
          basis3(rho_t, r2, r0, r1) - basis3(r0, r2, r0, r1)};
}

// The order at step i of S (diffusers' warm-up and lower_order_final).
size_t deis_order(size_t i, size_t S) {
  if (S < 15 && i + 1 == S) return 1;
  if (S < 15 && i + 2 == S) return std::min<size_t>(2, i + 1);
  return std::min<size_t>(3, i + 1);
}

}  // namespace

torch::Tensor sample_deis(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  const auto S = run.timesteps.size();
  const bool to_data = run.timesteps.back() == 0;
  std::vector<double> abar(S + 1);
  for (size_t i = 0; i < S; ++i) abar[i] = run.alpha_bar(denoiser, i);
  abar[S] = denoiser.alpha_bar(to_data ? -1 : 0);
  std::vector<torch::Tensor> eps;  // eps at levels i, i-1, i-2
  for (size_t i = 0; i < S; ++i) {
    const auto d = denoiser(x, run.timesteps[i]);
    eps.insert(eps.begin(), d.eps);
    if (eps.size() > 3) eps.pop_back();
    torch::Tensor next = d.x0;
    if (!(to_data && i + 1 == S)) {
      const size_t order = deis_order(i, S);
      std::vector<double> rho;
      for (size_t j = 0; j < order; ++j) rho.push_back(sigma_of_alpha_bar(abar[i - j]));
      const auto c = deis_coefficients(rho, sigma_of_alpha_bar(abar[i + 1]));
      auto sum = x * (1.0 / std::sqrt(abar[i]));
      for (size_t j = 0; j < order; ++j) sum = sum + c[j] * eps[j];
      next = std::sqrt(abar[i + 1]) * sum;
    }
    run.step_done(i, x, d.x0);
    x = std::move(next);
  }
  return x;
}

}  // namespace diffuse
