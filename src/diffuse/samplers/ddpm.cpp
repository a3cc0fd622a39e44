#include "diffuse/samplers/ddpm.h"

#include <algorithm>

#include "diffuse/samplers/timesteps.h"

namespace diffuse {

GaussianDiffusion respaced_process(const Schedule& schedule, std::vector<int64_t> timesteps,
                                   PredictionType prediction, VarianceType variance) {
  validate_timesteps(timesteps, schedule.num_timesteps());
  std::reverse(timesteps.begin(), timesteps.end());
  return GaussianDiffusion(schedule.respaced(timesteps), prediction, variance);
}

torch::Tensor sample_ddpm(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  const auto process = respaced_process(denoiser.schedule(), run.timesteps, denoiser.prediction(),
                                        denoiser.variance());
  const auto S = run.timesteps.size();
  for (size_t i = 0; i < S; ++i) {
    const auto d = denoiser(x, run.timesteps[i]);
    const auto j = static_cast<int64_t>(S - 1 - i);
    const auto tj = torch::full({x.size(0)}, j, torch::TensorOptions().dtype(torch::kLong));
    auto p = process.p_mean_variance(d.output, x, tj, denoiser.clip_x0());
    auto next =
        j == 0 ? p.mean : p.mean + torch::exp(0.5 * p.log_variance) * run.noise->randn_like(x);
    run.step_done(i, x, p.pred_x0);
    x = std::move(next);
  }
  return x;
}

}  // namespace diffuse
