#include "diffuse/train/generate.h"

#include "diffuse/core/compat.h"
#include "diffuse/core/error.h"
#include "diffuse/train/cuda_graph.h"

namespace diffuse {

Denoiser unet_denoiser(UNet2DModel model, bool bf16) {
  return [model, bf16](const torch::Tensor& x, int64_t t) mutable {
    auto tt =
        torch::full({x.size(0)}, t, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    AutocastGuard autocast(bf16 && x.is_cuda());
    return model->forward(x, tt).to(torch::kFloat32);
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
  Denoiser denoise = o.denoiser ? o.denoiser
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
    out.push_back(sample(*fresh, denoise, x_T, noise, cb).to(torch::kCPU));
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
