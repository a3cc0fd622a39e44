#include "diffuse/samplers/sample_loop.h"

#include "diffuse/core/error.h"
#include "diffuse/core/progress.h"

namespace diffuse {

torch::Tensor sample(Sampler& sampler, const Denoiser& denoiser, torch::Tensor x_T,
                     NoiseSource& noise, const SampleCallbacks& callbacks) {
  check(static_cast<bool>(denoiser), sampler.name(), ": no denoiser given");
  check(x_T.defined() && x_T.dim() >= 2, sampler.name(), ": x_T must be (B, C, ...)");
  c10::InferenceMode guard;
  const auto& ts = sampler.timesteps();
  ProgressBar bar(static_cast<int64_t>(ts.size()), callbacks.label, "step",
                  callbacks.show_progress);
  auto x = std::move(x_T);
  for (size_t i = 0; i < ts.size(); ++i) {
    auto result = sampler.step_full(denoiser(x, ts[i]), i, x, noise);
    if (callbacks.on_step) callbacks.on_step(i, ts[i], x, result.pred_x0);
    x = std::move(result.prev);
    bar.update();
  }
  bar.finish();
  return x;
}

}  // namespace diffuse
