#include "diffuse/samplers/ipndm.h"

#include <deque>

#include "diffuse/samplers/score.h"

namespace diffuse {
namespace {

// The Adams-Bashforth combination of e (newest first) at order e.size().
torch::Tensor adams_bashforth(const std::deque<torch::Tensor>& e) {
  switch (e.size()) {
    case 1:
      return e[0];
    case 2:
      return (3.0 * e[0] - e[1]) * 0.5;
    case 3:
      return (23.0 * e[0] - 16.0 * e[1] + 5.0 * e[2]) * (1.0 / 12.0);
    default:
      return (55.0 * e[0] - 59.0 * e[1] + 37.0 * e[2] - 9.0 * e[3]) * (1.0 / 24.0);
  }
}

}  // namespace

torch::Tensor sample_ipndm(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  std::deque<torch::Tensor> history;  // eps at levels i, i-1, ..., newest first
  for (size_t i = 0; i < run.timesteps.size(); ++i) {
    const double abar = run.alpha_bar(denoiser, i), abar_next = run.alpha_bar_next(denoiser, i);
    const double sigma = sigma_of_alpha_bar(abar), sigma_next = sigma_of_alpha_bar(abar_next);
    const auto d = denoiser(x, run.timesteps[i]);
    history.push_front(d.eps);
    if (history.size() > 4) history.pop_back();
    const auto x_next =
        to_variance_exploding(x, abar) + (sigma_next - sigma) * adams_bashforth(history);
    run.step_done(i, x, d.x0);
    x = to_variance_preserving(x_next, abar_next);
  }
  return x;
}

}  // namespace diffuse
