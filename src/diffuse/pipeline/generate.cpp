#include "diffuse/pipeline/generate.h"

#include <cmath>
#include <sstream>

#include "diffuse/core/compat.h"
#include "diffuse/core/error.h"
#include "diffuse/pipeline/cuda_graph.h"

namespace diffuse {

Denoiser unet_denoiser(UNet2DModel model, bool bf16) {
  return [model, bf16](const torch::Tensor& x, int64_t t) mutable {
    auto tt =
        torch::full({x.size(0)}, t, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    AutocastGuard autocast(bf16 && x.is_cuda());
    return model->forward(x, tt).to(torch::kFloat32);
  };
}

Denoiser guided_unet_denoiser(UNet2DModel model, torch::Tensor labels, double guidance, bool bf16) {
  check(num_classes(model->config()) > 0,
        "classifier-free guidance: the model is not class-conditional");
  check(std::isfinite(guidance), "--guidance must be finite, got ", guidance);
  const int64_t null_label = null_class(model->config());
  return [model, labels, guidance, bf16, null_label](const torch::Tensor& x, int64_t t) mutable {
    const int64_t B = x.size(0);
    check(labels.dim() == 1 && labels.size(0) == B, "classifier-free guidance: ", labels.numel(),
          " labels for a batch of ", B);
    if (labels.device() != x.device()) labels = labels.to(x.device());
    auto forward = [&](const torch::Tensor& xs, const torch::Tensor& ys) {
      auto tt = torch::full({xs.size(0)}, t,
                            torch::TensorOptions().dtype(torch::kLong).device(xs.device()));
      AutocastGuard autocast(bf16 && xs.is_cuda());
      return model->forward(xs, tt, ys).to(torch::kFloat32);
    };
    const auto null = torch::full_like(labels, null_label);
    if (guidance == 1.0) return forward(x, labels);
    if (guidance == 0.0) return forward(x, null);
    auto both = forward(torch::cat({x, x}), torch::cat({labels, null}));  // (2B, C', H, W)
    auto cond = both.narrow(0, 0, B), uncond = both.narrow(0, B, B);
    const int64_t C = x.size(1);
    auto guided =
        uncond.narrow(1, 0, C) + guidance * (cond.narrow(1, 0, C) - uncond.narrow(1, 0, C));
    if (cond.size(1) == C) return guided;
    return torch::cat({guided, cond.narrow(1, C, cond.size(1) - C)}, 1);
  };
}

SamplerOptions sampler_options(const ProcessConfig& process, const std::string& kind, int64_t steps,
                               double eta, const std::string& spacing, bool clip_x0) {
  SamplerOptions o;
  o.kind = kind;
  o.steps = steps;
  o.eta = eta;
  o.spacing = spacing;
  o.prediction = parse_prediction_type(process.prediction);
  o.variance = process.variance;
  o.clip_x0 = clip_x0;
  return o;
}

Denoiser graphed_unet_denoiser(UNet2DModel model, std::vector<int64_t> x_shape, bool bf16) {
  auto graphed = std::make_shared<GraphedForward>(std::move(model), std::move(x_shape), bf16);
  return [graphed](const torch::Tensor& x, int64_t t) {
    auto tt =
        torch::full({x.size(0)}, t, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    // The graph's output buffer is reused by the next replay: samplers may keep it.
    return (*graphed)(x, tt).clone();
  };
}

torch::Tensor generate(UNet2DModel& model, const ProcessConfig& process,
                       const SamplerOptions& sampler_opts, const GenerateOptions& o,
                       const torch::Device& device) {
  check(o.n >= 1, "--n must be >= 1, got ", o.n);
  check(o.batch >= 1, "--batch must be >= 1, got ", o.batch);
  const auto& cfg = model->config();
  const int64_t C = cfg.in_channels, S = cfg.sample_size;
  if (o.init_noise.defined())
    check(o.init_noise.dim() == 4 && o.init_noise.size(0) == o.n && o.init_noise.size(1) == C &&
              o.init_noise.size(2) % cfg.size_multiple() == 0 &&
              o.init_noise.size(3) % cfg.size_multiple() == 0,
          "initial noise has shape ", o.init_noise.sizes(), "; the model needs (N, ", C,
          ", H, W) with H and W multiples of ", cfg.size_multiple(), " (its sample_size is ", S,
          ")");
  const auto diffusion = process.make_diffusion();
  make_sampler(sampler_opts, diffusion.schedule());  // rejects bad options before any work
  model->eval();
  torch::Tensor labels;
  if (num_classes(cfg) > 0) {
    labels = o.class_labels.defined()
                 ? o.class_labels.to(torch::kInt64)
                 : cycle_labels(parse_class_list("all", num_classes(cfg)), o.n);
    check(labels.dim() == 1 && labels.size(0) == o.n, "class labels: ", labels.numel(),
          " labels for ", o.n, " images");
  } else {
    check(!o.class_labels.defined(),
          "--class: the model is not class-conditional (its config.json has no num_class_embeds)");
  }
  // Conditional models are guided batch by batch below (eagerly: the graph takes no labels).
  Denoiser denoise = o.denoiser         ? o.denoiser
                     : labels.defined() ? Denoiser()
                     : o.cuda_graph && device.is_cuda()
                         ? graphed_unet_denoiser(model, {std::min(o.batch, o.n), C, S, S}, o.bf16)
                         : unet_denoiser(model, o.bf16);
  NoiseSource noise(o.seed);
  std::vector<torch::Tensor> out;
  for (int64_t start = 0; start < o.n; start += o.batch) {
    const int64_t b = std::min(o.batch, o.n - start);
    torch::Tensor x_T = o.init_noise.defined()
                            ? o.init_noise.narrow(0, start, b).to(device, torch::kFloat32)
                            : noise.randn({b, C, S, S}, torch::TensorOptions().device(device));
    SampleCallbacks cb;
    cb.show_progress = o.progress;
    cb.label = o.n > b ? "sample " + std::to_string(start / o.batch + 1) + "/" +
                             std::to_string((o.n + o.batch - 1) / o.batch)
                       : "sample";
    auto fresh = make_sampler(sampler_opts, diffusion.schedule());
    const auto& batch_denoise =
        labels.defined() && !o.denoiser
            ? guided_unet_denoiser(model, labels.narrow(0, start, b).to(device), o.guidance, o.bf16)
            : denoise;
    out.push_back(sample(*fresh, batch_denoise, x_T, noise, cb).to(torch::kCPU));
  }
  return torch::cat(out, 0);
}

torch::Tensor preview_samples(UNet2DModel& model, const ProcessConfig& process, int64_t n,
                              int64_t steps, uint64_t seed, const torch::Device& device) {
  GenerateOptions o;
  o.n = n;
  o.batch = n;
  o.seed = seed;
  o.progress = false;
  return generate(model, process,
                  sampler_options(process, "ddim", steps, 0.0, "", /*clip_x0=*/true), o, device);
}

}  // namespace diffuse
