#include "diffuse/diffusion/likelihood.h"

#include <cmath>

#include "diffuse/core/progress.h"
#include "diffuse/diffusion/losses.h"

namespace diffuse {

std::vector<int64_t> bpd_timesteps(int64_t T, int64_t K) {
  std::vector<int64_t> ts;
  if (K <= 0 || K >= T) {
    for (int64_t t = 0; t < T; ++t) ts.push_back(t);
    return ts;
  }
  ts.push_back(0);
  for (int64_t k = 0; k < K - 1; ++k) {
    const double u = K > 2 ? static_cast<double>(k) / (K - 2) : 0.0;
    const auto t = 1 + static_cast<int64_t>(std::llround(u * u * (T - 2)));
    if (t > ts.back()) ts.push_back(std::min(t, T - 1));
  }
  return ts;
}

std::vector<double> bpd_weights(int64_t T, const std::vector<int64_t>& ts) {
  std::vector<double> w(ts.size(), 1.0);
  if (static_cast<int64_t>(ts.size()) >= T) return w;
  // Cell of ts[k] (k >= 1): from the midpoint with its left neighbour to the midpoint with its
  // right one, the outer cells closed at 1 and T - 1.
  for (size_t k = 1; k < ts.size(); ++k) {
    const double lo = k == 1 ? 0.5 : 0.5 * (ts[k - 1] + ts[k]);
    const double hi = k + 1 == ts.size() ? T - 0.5 : 0.5 * (ts[k] + ts[k + 1]);
    w[k] = hi - lo;
  }
  return w;
}

BpdResult calc_bpd_loop(const GaussianDiffusion& diffusion, const ModelFn& model,
                        const torch::Tensor& x0, const BpdOptions& options) {
  const int64_t T = diffusion.num_timesteps(), B = x0.size(0);
  BpdResult r;
  r.timesteps = bpd_timesteps(T, options.terms);
  const auto K = static_cast<int64_t>(r.timesteps.size());
  r.estimate = K < T;
  auto gen = at::detail::createCPUGenerator(options.seed);
  auto terms = torch::zeros({B, K}, x0.options());
  auto mse = torch::zeros({B, K}, x0.options());
  ProgressBar bar(K, "nll", "term", options.progress);
  for (int64_t k = K - 1; k >= 0; --k) {
    auto t = torch::full({B}, r.timesteps[k],
                         torch::TensorOptions().dtype(torch::kLong).device(x0.device()));
    auto noise = at::randn(x0.sizes(), gen, torch::kFloat64).to(x0.options());
    auto x_t = diffusion.q_sample(x0, t, noise);
    torch::Tensor pred_x0;
    auto out = model(x_t, t).to(x0.scalar_type());
    terms.select(1, k).copy_(diffusion.vb_terms_bpd(out, x0, x_t, t, options.clip_x0, &pred_x0));
    mse.select(1, k).copy_(mean_flat((pred_x0 - x0).pow(2)));
    bar.update(1);
  }
  r.prior_bpd = diffusion.prior_bpd(x0);
  r.terms_bpd = terms;
  r.x0_mse = mse;
  r.weights = bpd_weights(T, r.timesteps);
  auto w = torch::tensor(r.weights, torch::kFloat64).to(x0.options());
  r.total_bpd = (terms * w).sum(1) + r.prior_bpd;
  return r;
}

}  // namespace diffuse
