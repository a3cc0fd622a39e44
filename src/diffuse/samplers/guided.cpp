#include "diffuse/samplers/guided.h"

#include <cmath>
#include <map>

#include "diffuse/core/error.h"
#include "diffuse/samplers/ddim.h"

namespace diffuse {

void check_strength(double strength) {
  check(strength >= 0.0 && strength <= 1.0, "--strength must be in [0, 1], got ", strength);
}

std::vector<int64_t> sdedit_timesteps(const std::vector<int64_t>& ts, int64_t T, double strength) {
  check_strength(strength);
  std::vector<int64_t> kept;
  for (int64_t t : ts)
    if (static_cast<double>(t + 1) <= strength * static_cast<double>(T)) kept.push_back(t);
  return kept;
}

torch::Tensor sdedit(const Sampler& sampler, const ModelFn& model, const torch::Tensor& image,
                     double strength, NoiseSource& noise, const SampleCallbacks& callbacks) {
  const auto& sch = sampler.schedule();
  const auto ts = sdedit_timesteps(sampler.timesteps(), sch.num_timesteps(), strength);
  if (ts.empty()) return image.clone();
  const double abar = sch.alphas_cumprod[ts.front()];
  const auto x_t = std::sqrt(abar) * image + std::sqrt(1.0 - abar) * noise.randn_like(image);
  Sampler from_t(sampler.options(), sch, ts);
  return from_t.sample(model, x_t, noise, callbacks);
}

std::vector<int64_t> repaint_levels(int64_t S, const RePaintOptions& o) {
  check(o.jump_length >= 1, "--jump-length must be >= 1, got ", o.jump_length);
  check(o.jump_n_sample >= 1, "--jump-n-sample must be >= 1, got ", o.jump_n_sample);
  std::map<int64_t, int64_t> jumps;  // level -> jumps back up still to make there
  for (int64_t k = 0; k < S - o.jump_length; k += o.jump_length) jumps[k] = o.jump_n_sample - 1;
  std::vector<int64_t> levels{S};
  int64_t k = S;
  while (k >= 1) {
    levels.push_back(--k);
    auto it = jumps.find(k);
    if (it != jumps.end() && it->second > 0) {
      --it->second;
      for (int64_t j = 0; j < o.jump_length; ++j) levels.push_back(++k);
    }
  }
  return levels;
}

namespace {

torch::Tensor checked_mask(const torch::Tensor& mask, const torch::Tensor& image) {
  check(mask.defined() && mask.dim() == image.dim(), "--mask: expected ", image.dim(),
        " dimensions like the image ", image.sizes(), ", got ", mask.sizes());
  for (int64_t d = 0; d < image.dim(); ++d)
    check(mask.size(d) == image.size(d) || (d < 2 && mask.size(d) == 1), "--mask: shape ",
          mask.sizes(), " does not match the image's ", image.sizes(),
          " (batch and channels may be 1)");
  return mask.to(image.options());
}

}  // namespace

torch::Tensor repaint(const Denoiser& denoiser, const std::vector<int64_t>& timesteps,
                      torch::Tensor x, const torch::Tensor& image, const torch::Tensor& mask,
                      const RePaintOptions& options, NoiseSource& noise) {
  check(x.sizes() == image.sizes(), "repaint: x_T ", x.sizes(), " and image ", image.sizes(),
        " differ in shape");
  const auto m = checked_mask(mask, image);
  const auto S = static_cast<int64_t>(timesteps.size());
  const auto abar = [&](int64_t k) { return k == 0 ? 1.0 : denoiser.alpha_bar(timesteps[S - k]); };
  const auto levels = repaint_levels(S, options);
  for (size_t i = 1; i < levels.size(); ++i) {
    const int64_t from = levels[i - 1], to = levels[i];
    const double a_from = abar(from), a_to = abar(to);
    if (to > from) {  // a jump back up: q(x_to | x_from)
      const double ratio = a_to / a_from;
      x = std::sqrt(ratio) * x + std::sqrt(1.0 - ratio) * noise.randn_like(x);
      continue;
    }
    const auto d = denoiser(x, timesteps[S - from]);
    const auto unknown = ddim_step(d.x0, d.eps, a_to, ddim_sigma(a_from, a_to, 1.0), &noise);
    const auto known =
        to == 0 ? image : std::sqrt(a_to) * image + std::sqrt(1.0 - a_to) * noise.randn_like(x);
    x = m * known + (1.0 - m) * unknown;
  }
  return x;
}

}  // namespace diffuse
