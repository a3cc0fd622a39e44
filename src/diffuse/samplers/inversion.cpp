#include "diffuse/samplers/inversion.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/core/progress.h"
#include "diffuse/samplers/ddim.h"
#include "diffuse/samplers/timesteps.h"

namespace diffuse {
namespace {

struct Plan {
  std::vector<int64_t> timesteps;  // descending
  VarianceType variance;
};

Plan plan_for(const Schedule& schedule, const SamplerOptions& o) {
  check(o.kind.empty() || o.kind == "ddim", "--sampler ", o.kind,
        ": DDIM inversion needs --sampler ddim (the deterministic ODE)");
  check(o.eta == 0.0, "--eta ", o.eta, ": DDIM inversion needs --eta 0 (the deterministic ODE)");
  SamplerOptions ddim = o;
  ddim.kind = "ddim";
  // Validates steps, spacing and variance with the sampler's messages.
  auto sampler = make_sampler(ddim, schedule);
  return {sampler->timesteps(), sampler->variance()};
}

}  // namespace

torch::Tensor encode(const Denoiser& denoiser, const Schedule& schedule,
                     const SamplerOptions& options, torch::Tensor x0,
                     const SampleCallbacks& callbacks) {
  check(static_cast<bool>(denoiser), "inversion: no denoiser given");
  check(x0.defined() && x0.dim() >= 2, "inversion: x0 must be (B, C, ...)");
  const auto plan = plan_for(schedule, options);
  const auto& ts = plan.timesteps;
  const auto S = ts.size();
  const auto& abar = schedule.alphas_cumprod;
  const int64_t C = x0.size(1);
  const auto scalar = torch::TensorOptions().dtype(torch::kFloat64);

  c10::InferenceMode guard;
  ProgressBar bar(static_cast<int64_t>(S), callbacks.label, "step", callbacks.show_progress);
  auto x = std::move(x0);
  double abar_from = 1.0;  // the data
  // Step k goes up from level ts[k + 1] (the data for k = S - 1) to level ts[k].
  for (size_t n = 0; n < S; ++n) {
    const size_t k = S - 1 - n;
    const int64_t t_eval = k + 1 < S ? ts[k + 1] : ts[S - 1];
    const double abar_eval = abar[t_eval], abar_to = abar[ts[k]];
    auto out = denoiser(x, t_eval);
    check_model_output(out, x, plan.variance, "inversion");
    const auto pred = out.narrow(1, 0, C).to(x.scalar_type());
    const auto a = torch::scalar_tensor(std::sqrt(abar_eval), scalar);
    const auto s = torch::scalar_tensor(std::sqrt(1.0 - abar_eval), scalar);
    const auto split = options.clip_x0 ? split_prediction_clipped(options.prediction, pred, x, a, s)
                                       : split_prediction(options.prediction, pred, x, a, s);
    // DDIM eq. 13 in x / sqrt(abar) and sqrt(1/abar - 1).
    const double gain = std::sqrt(abar_to / abar_from);
    const double drift =
        std::sqrt(abar_to) * (std::sqrt(1.0 / abar_to - 1.0) - std::sqrt(1.0 / abar_from - 1.0));
    if (callbacks.on_step) callbacks.on_step(n, t_eval, x, split.x0);
    x = gain * x + drift * split.eps;
    abar_from = abar_to;
    bar.update();
  }
  bar.finish();
  return x;
}

torch::Tensor decode(const Denoiser& denoiser, const Schedule& schedule,
                     const SamplerOptions& options, torch::Tensor x_T,
                     const SampleCallbacks& callbacks) {
  const auto plan = plan_for(schedule, options);
  DdimSampler sampler(schedule, plan.timesteps, 0.0, options.prediction, plan.variance,
                      options.clip_x0);
  NoiseSource unused(0);  // eta = 0 draws nothing
  return sample(sampler, denoiser, std::move(x_T), unused, callbacks);
}

torch::Tensor slerp(const torch::Tensor& a, const torch::Tensor& b, double alpha) {
  check(a.defined() && b.defined() && a.sizes() == b.sizes() && a.dim() >= 1,
        "slerp: latents must have the same shape (B, ...), got ",
        a.defined() ? a.sizes() : c10::IntArrayRef{}, " and ",
        b.defined() ? b.sizes() : c10::IntArrayRef{});
  check(alpha >= 0.0 && alpha <= 1.0, "slerp: alpha must be in [0, 1], got ", alpha);
  const auto fa = a.reshape({a.size(0), -1}).to(torch::kFloat64);
  const auto fb = b.reshape({b.size(0), -1}).to(torch::kFloat64);
  const auto norms = fa.norm(2, 1, true) * fb.norm(2, 1, true);
  // cos is 1 (lerp) when either latent is zero.
  const auto cos = torch::where(norms > 0, (fa * fb).sum(1, true) / norms.clamp_min(1e-300),
                                torch::ones_like(norms))
                       .clamp(-1.0, 1.0);
  const auto theta = torch::acos(cos);
  const auto sin_theta = torch::sin(theta);
  const auto parallel = cos.abs() > 0.9995;
  const auto safe_sin = torch::where(parallel, torch::ones_like(sin_theta), sin_theta);
  const auto wa = torch::where(parallel, torch::full_like(cos, 1.0 - alpha),
                               torch::sin((1.0 - alpha) * theta) / safe_sin);
  const auto wb =
      torch::where(parallel, torch::full_like(cos, alpha), torch::sin(alpha * theta) / safe_sin);
  return (wa * fa + wb * fb).reshape(a.sizes()).to(a.scalar_type());
}

torch::Tensor interpolate(const torch::Tensor& za, const torch::Tensor& zb, int64_t frames) {
  check(frames >= 1, "interpolate: frames must be >= 1, got ", frames);
  check(za.defined() && zb.defined() && za.sizes() == zb.sizes(),
        "interpolate: the two latents must have the same shape");
  check(za.dim() == 3 || (za.dim() == 4 && za.size(0) == 1),
        "interpolate: latents must be (C, H, W) or (1, C, H, W), got ", za.sizes());
  const auto a = za.dim() == 3 ? za.unsqueeze(0) : za;
  const auto b = zb.dim() == 3 ? zb.unsqueeze(0) : zb;
  std::vector<torch::Tensor> out;
  for (int64_t f = 0; f < frames; ++f) {
    const double alpha =
        frames == 1 ? 0.0 : static_cast<double>(f) / static_cast<double>(frames - 1);
    out.push_back(slerp(a, b, alpha));
  }
  return torch::cat(out, 0);
}

}  // namespace diffuse
