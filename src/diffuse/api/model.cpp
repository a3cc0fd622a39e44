// The C++ API (include/diffuse/diffuse.h) over the pipeline and io modules: the calls `diffuse
// sample / encode / interpolate` make, with Images in place of tensors.
#include <cmath>
#include <utility>

#include "diffuse/api/guarded.h"
#include "diffuse/core/compat.h"
#include "diffuse/core/device.h"
#include "diffuse/diffuse.h"
#include "diffuse/io/image.h"
#include "diffuse/io/npy.h"
#include "diffuse/models/class_labels.h"
#include "diffuse/pipeline/generate.h"
#include "diffuse/pipeline/load_model.h"
#include "diffuse/samplers/inversion.h"

namespace diffuse {

using api::guarded;

namespace {

void check_shape(const Images& im, const char* what) {
  check(im.n >= 1 && im.channels >= 1 && im.height >= 1 && im.width >= 1, what,
        ": images must have n, channels, height and width >= 1, got (", im.n, ", ", im.channels,
        ", ", im.height, ", ", im.width, ")");
  check(static_cast<int64_t>(im.data.size()) == im.size(), what, ": shape (", im.n, ", ",
        im.channels, ", ", im.height, ", ", im.width, ") needs ", im.size(), " values, data holds ",
        im.data.size());
}

torch::Tensor to_tensor(const Images& im, const char* what) {
  check_shape(im, what);
  return torch::from_blob(const_cast<float*>(im.data.data()),
                          {im.n, im.channels, im.height, im.width}, torch::kFloat32)
      .clone();
}

Images from_tensor(const torch::Tensor& t) {
  auto x = t.to(torch::kCPU, torch::kFloat32).contiguous();
  if (x.dim() == 3) x = x.unsqueeze(0);
  check(x.dim() == 4, "expected (n, channels, height, width) images, got shape ", x.sizes());
  Images out(x.size(0), x.size(1), x.size(2), x.size(3));
  std::copy(x.data_ptr<float>(), x.data_ptr<float>() + x.numel(), out.data.begin());
  return out;
}

std::string join_classes(const std::vector<int64_t>& classes) {
  std::string s;
  for (auto k : classes) s += (s.empty() ? "" : ",") + std::to_string(k);
  return s;
}

}  // namespace

const char* version() {
  return DIFFUSE_VERSION_STRING;
}

std::string torch_version_string() {
  return torch_version();
}

Images::Images(int64_t n_, int64_t channels_, int64_t height_, int64_t width_)
    : n(n_), channels(channels_), height(height_), width(width_) {
  check(n >= 0 && channels >= 0 && height >= 0 && width >= 0,
        "Images: dimensions must be >= 0, got (", n, ", ", channels, ", ", height, ", ", width,
        ")");
  data.assign(static_cast<size_t>(size()), 0.0f);
}

struct Model::Impl {
  LoadedModel lm;
  torch::Device device{torch::kCPU};
  Precision precision = Precision::FP32;

  SamplerOptions ddim(const InversionOptions& o) const {
    auto s = sampler_options(lm.process, "ddim", o.steps, 0.0, o.spacing);
    s.eta = 0;
    return s;
  }
  // Decodes or encodes x in batches of o.batch on the model's device.
  torch::Tensor invert(const torch::Tensor& x, const InversionOptions& o, bool to_latent) const {
    check(o.batch >= 1, "--batch must be >= 1, got ", o.batch);
    check(o.steps >= 1, "--steps must be >= 1, got ", o.steps);
    const auto& cfg = lm.model->config();
    check(x.size(1) == cfg.in_channels, "images have ", x.size(1), " channels, the model takes ",
          cfg.in_channels);
    check(x.size(2) % cfg.size_multiple() == 0 && x.size(3) % cfg.size_multiple() == 0,
          "image size ", x.size(2), "x", x.size(3), " is not a multiple of ", cfg.size_multiple(),
          " as the model needs");
    const auto sopts = ddim(o);
    const auto diffusion = lm.process.make_diffusion();
    auto denoise = unet_model_fn(lm.model, autocast_bf16(precision));
    SampleCallbacks cb;
    cb.show_progress = o.progress;
    cb.label = to_latent ? "encode" : "decode";
    std::vector<torch::Tensor> out;
    for (int64_t s = 0; s < x.size(0); s += o.batch) {
      auto xb = x.narrow(0, s, std::min(o.batch, x.size(0) - s)).to(device);
      out.push_back((to_latent ? diffuse::encode(denoise, diffusion.schedule(), sopts, xb, cb)
                               : diffuse::decode(denoise, diffusion.schedule(), sopts, xb, cb))
                        .to(torch::kCPU));
    }
    return torch::cat(out);
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::load(const std::string& spec, const LoadOptions& options) {
  return guarded([&] {
    auto impl = std::make_unique<Impl>();
    impl->device = parse_device(options.device);
    impl->precision = parse_precision(options.precision, impl->device);
    check(options.threads >= 0, "--threads must be >= 0, got ", options.threads);
    configure_runtime(impl->device, impl->precision);
    if (options.threads > 0) torch::set_num_threads(options.threads);
    impl->lm = load_model(spec, impl->device, options.ema);
    impl->lm.model->eval();
    return Model(std::move(impl));
  });
}

ModelInfo Model::info() const {
  const auto& lm = impl_->lm;
  const auto& cfg = lm.model->config();
  ModelInfo i;
  i.description = lm.description;
  i.step = lm.step;
  i.channels = cfg.in_channels;
  i.height = i.width = cfg.sample_size;
  i.num_classes = num_classes(cfg);
  i.timesteps = lm.process.timesteps;
  i.device = impl_->device.str();
  return i;
}

Images Model::sample(const SampleOptions& o) const {
  return guarded([&] {
    auto& lm = impl_->lm;
    const auto steps = o.steps > 0 ? o.steps : sampler_kind(o.sampler).default_steps;
    const auto sopts = sampler_options(lm.process, o.sampler, steps, o.eta, o.spacing, o.clip_x0);
    GenerateOptions g;
    g.n = o.n;
    g.batch = o.batch;
    g.seed = o.seed;
    g.bf16 = autocast_bf16(impl_->precision);
    g.progress = o.progress;
    g.callbacks.show_progress = o.progress;
    g.guidance = o.guidance;
    const int64_t classes = num_classes(lm.model->config());
    if (!o.classes.empty() || classes > 0) {
      const auto list =
          parse_class_list(o.classes.empty() ? "all" : join_classes(o.classes), classes);
      g.class_labels = cycle_labels(list, g.n);
    }
    return from_tensor(generate(lm.model, lm.process, sopts, g, impl_->device));
  });
}

Images Model::encode(const Images& images, const InversionOptions& o) const {
  return guarded([&] { return from_tensor(impl_->invert(to_tensor(images, "encode"), o, true)); });
}

Images Model::decode(const Images& latents, const InversionOptions& o) const {
  return guarded(
      [&] { return from_tensor(impl_->invert(to_tensor(latents, "decode"), o, false)); });
}

Images Model::interpolate(const Images& a, const Images& b, int64_t frames,
                          const InversionOptions& o) const {
  return guarded([&] {
    auto za = to_tensor(a, "interpolate (from)"), zb = to_tensor(b, "interpolate (to)");
    check(za.size(0) == 1 && zb.size(0) == 1, "interpolate: expected one latent each, got ",
          za.size(0), " and ", zb.size(0));
    check(za.sizes() == zb.sizes(), "--from and --to latents differ in shape: ", za.sizes(), " vs ",
          zb.sizes());
    check(frames >= 2, "--frames must be >= 2, got ", frames);
    return from_tensor(impl_->invert(diffuse::interpolate(za, zb, frames), o, false));
  });
}

void save_png_grid(const std::string& path, const Images& images, int64_t columns) {
  guarded([&] {
    check(columns >= 0, path, ": columns must be >= 0, got ", columns);
    const auto cols =
        columns > 0
            ? columns
            : std::max<int64_t>(
                  1, static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(images.n)))));
    save_grid_png(path, to_tensor(images, path.c_str()), cols);
  });
}

void save_npy(const std::string& path, const Images& images) {
  guarded([&] { diffuse::save_npy(path, to_tensor(images, path.c_str())); });
}

Images load_npy_images(const std::string& path) {
  return guarded([&] {
    auto x = diffuse::load_npy(path);
    if (x.dim() == 3) x = x.unsqueeze(0);
    check(x.dim() == 4, path, ": expected (N, C, H, W) images, got shape ", x.sizes());
    if (x.scalar_type() == torch::kUInt8) x = x.to(torch::kFloat32) / 127.5 - 1.0;
    return from_tensor(x);
  });
}

}  // namespace diffuse
