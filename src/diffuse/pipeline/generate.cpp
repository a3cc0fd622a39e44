#include "diffuse/pipeline/generate.h"

#include "diffuse/core/error.h"

namespace diffuse {
namespace {

void check_init_noise(const torch::Tensor& z, int64_t n, const UNetConfig& cfg) {
  check(z.dim() == 4 && z.size(0) == n && z.size(1) == cfg.in_channels &&
            z.size(2) % cfg.size_multiple() == 0 && z.size(3) % cfg.size_multiple() == 0,
        "initial noise has shape ", z.sizes(), "; the model needs (N, ", cfg.in_channels,
        ", H, W) with H and W multiples of ", cfg.size_multiple(), " (its sample_size is ",
        cfg.sample_size, ")");
}

// (n) labels of a class-conditional model (every class in turn unless given); undefined for an
// unconditional one, which takes none.
torch::Tensor labels_for(const UNetConfig& cfg, const GenerateOptions& o) {
  if (num_classes(cfg) == 0) {
    check(!o.class_labels.defined(),
          "--class: the model is not class-conditional (its config.json has no num_class_embeds)");
    return {};
  }
  auto labels = o.class_labels.defined()
                    ? o.class_labels.to(torch::kInt64)
                    : cycle_labels(parse_class_list("all", num_classes(cfg)), o.n);
  check(labels.dim() == 1 && labels.size(0) == o.n, "class labels: ", labels.numel(),
        " labels for ", o.n, " images");
  return labels;
}

std::string batch_label(int64_t start, int64_t b, const GenerateOptions& o) {
  if (o.n <= b) return o.callbacks.label;
  return o.callbacks.label + " " + std::to_string(start / o.batch + 1) + "/" +
         std::to_string((o.n + o.batch - 1) / o.batch);
}

}  // namespace

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

torch::Tensor generate(UNet2DModel& model, const ProcessConfig& process,
                       const SamplerOptions& sampler_opts, const GenerateOptions& o,
                       const torch::Device& device) {
  check(o.n >= 1, "--n must be >= 1, got ", o.n);
  check(o.batch >= 1, "--batch must be >= 1, got ", o.batch);
  const auto& cfg = model->config();
  const int64_t C = cfg.in_channels, S = cfg.sample_size;
  if (o.init_noise.defined()) check_init_noise(o.init_noise, o.n, cfg);
  const auto sampler = make_sampler(sampler_opts, process.make_diffusion().schedule());
  model->eval();
  const auto labels = labels_for(cfg, o);
  // Conditional models are guided batch by batch below (eagerly: the graph takes no labels).
  ModelFn shared = o.model_fn;
  if (!shared && !labels.defined())
    shared = o.cuda_graph && device.is_cuda()
                 ? graphed_unet_model_fn(model, {std::min(o.batch, o.n), C, S, S}, o.bf16)
                 : unet_model_fn(model, o.bf16);
  std::vector<torch::Tensor> out;
  for (int64_t start = 0; start < o.n; start += o.batch) {
    const int64_t b = std::min(o.batch, o.n - start);
    NoiseSource noise(o.seed, start);
    torch::Tensor x_T = o.init_noise.defined()
                            ? o.init_noise.narrow(0, start, b).to(device, torch::kFloat32)
                            : noise.randn({b, C, S, S}, torch::TensorOptions().device(device));
    auto cb = o.callbacks;
    cb.show_progress = o.progress;
    cb.label = batch_label(start, b, o);
    const auto model_fn = shared
                              ? shared
                              : guided_unet_model_fn(model, labels.narrow(0, start, b).to(device),
                                                     o.guidance, o.bf16);
    auto x = o.run_batch ? o.run_batch(*sampler, model_fn, x_T, noise, cb, start)
                         : sampler->sample(model_fn, x_T, noise, cb);
    out.push_back(x.to(torch::kCPU));
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
