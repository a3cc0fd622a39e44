#include "diffuse/samplers/inversion.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/core/progress.h"
#include "diffuse/samplers/ddim.h"
#include "diffuse/samplers/timesteps.h"

namespace diffuse {
namespace {

// The deterministic DDIM these options name (validated with the sampler's messages).
std::unique_ptr<Sampler> ddim_for(const Schedule& schedule, const SamplerOptions& o) {
  check(o.kind.empty() || o.kind == "ddim", "--sampler ", o.kind,
        ": DDIM inversion needs --sampler ddim (the deterministic ODE)");
  check(o.eta == 0.0, "--eta ", o.eta, ": DDIM inversion needs --eta 0 (the deterministic ODE)");
  SamplerOptions ddim = o;
  ddim.kind = "ddim";
  return make_sampler(ddim, schedule);
}

}  // namespace

torch::Tensor encode(const ModelFn& model, const Schedule& schedule, const SamplerOptions& options,
                     torch::Tensor x0, const SampleCallbacks& callbacks) {
  check(x0.defined() && x0.dim() >= 2, "inversion: x0 must be (B, C, ...)");
  const auto sampler = ddim_for(schedule, options);
  const auto& ts = sampler->timesteps();
  const auto S = ts.size();
  Denoiser denoiser(model, schedule, options.prediction, sampler->variance(), options.clip_x0,
                    "inversion");
  c10::InferenceMode guard;
  ProgressBar bar(static_cast<int64_t>(S), callbacks.label, "step", callbacks.show_progress);
  auto x = std::move(x0);
  // Step n goes up from level ts[k + 1] (the data for k = S - 1) to level ts[k], k = S - 1 - n.
  for (size_t n = 0; n < S; ++n) {
    const size_t k = S - 1 - n;
    const int64_t t_from = k + 1 < S ? ts[k + 1] : -1;
    const int64_t t_eval = k + 1 < S ? ts[k + 1] : ts[S - 1];
    const double abar_from = denoiser.alpha_bar(t_from);
    const auto d = denoiser(x, t_eval);
    // The x_0 of x at its own level: the data itself on the first step.
    const auto x0_at = (x - std::sqrt(1.0 - abar_from) * d.eps) / std::sqrt(abar_from);
    if (callbacks.on_step) callbacks.on_step(n, t_eval, x, d.x0);
    x = ddim_step(x0_at, d.eps, denoiser.alpha_bar(ts[k]), 0.0, nullptr);
    bar.update();
  }
  bar.finish();
  return x;
}

torch::Tensor decode(const ModelFn& model, const Schedule& schedule, const SamplerOptions& options,
                     torch::Tensor x_T, const SampleCallbacks& callbacks) {
  NoiseSource unused(0);  // eta = 0 draws nothing
  return ddim_for(schedule, options)->sample(model, std::move(x_T), unused, callbacks);
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
