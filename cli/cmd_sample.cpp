// diffuse sample / encode / interpolate: the generative process, DDIM inversion and latent
// interpolation, from a run folder, a checkpoint or a diffusers model.
#include <filesystem>
#include <iostream>
#include <set>

#include "commands.h"
#include "diffuse/core/error.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/data/dataset.h"
#include "diffuse/io/image.h"
#include "diffuse/io/npy.h"
#include "diffuse/pipeline/generate.h"
#include "diffuse/pipeline/load_model.h"
#include "diffuse/samplers/guided.h"
#include "diffuse/samplers/inversion.h"
#include "diffuse/samplers/timesteps.h"

namespace fs = std::filesystem;

namespace diffuse::cli {

namespace {

int64_t grid_columns(int64_t n) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n)))));
}

std::vector<Option> model_options() {
  return {{"model", "",
           "a diffuse run folder or checkpoint, or a diffusers UNet2DModel/pipeline folder", false,
           true},
          no_ema_option()};
}

SamplerOptions sampler_from_args(const Args& a, const ProcessConfig& process,
                                 const std::string& kind) {
  const auto steps = a.integer("steps") > 0 ? a.integer("steps") : sampler_kind(kind).default_steps;
  auto o = sampler_options(process, kind, steps, a.has("eta") ? a.number("eta") : 0.0,
                           a.has("spacing") ? a.str("spacing") : "", a.flag("clip-x0"));
  // EDM Algorithm 2's options; "" (s-tmax's default) keeps EdmChurn's default.
  const auto number_or = [&](const std::string& name, double fallback) {
    return a.has(name) && !a.str(name).empty() ? a.number(name) : fallback;
  };
  o.churn.churn = number_or("churn", o.churn.churn);
  o.churn.s_tmin = number_or("s-tmin", o.churn.s_tmin);
  o.churn.s_tmax = number_or("s-tmax", o.churn.s_tmax);
  o.churn.s_noise = number_or("s-noise", o.churn.s_noise);
  check_churn(o.churn, kind);
  return o;
}

// (N, C, H, W) float in [-1, 1] from an .npy of floats in [-1, 1] or uint8 pixels at the model's
// size, or from a folder of images resized to it.
torch::Tensor load_images_arg(const std::string& spec, const UNetConfig& cfg) {
  torch::Tensor x;
  const bool folder = fs::is_directory(spec);
  if (folder) {
    x = read_image_folder(spec, cfg.sample_size, cfg.in_channels).images;
  } else {
    x = load_npy(spec);
    if (x.dim() == 3) x = x.unsqueeze(0);
    check(x.dim() == 4, spec, ": expected (N, C, H, W) images, got shape ", x.sizes());
    check(x.scalar_type() == torch::kUInt8 || x.is_floating_point(), spec, ": dtype ",
          x.scalar_type(), "; images must be uint8 pixels or floats in [-1, 1]");
    check_finite(x, spec);
  }
  if (x.scalar_type() == torch::kUInt8) x = x.to(torch::kFloat32) / 127.5 - 1.0;
  x = x.to(torch::kFloat32);
  check(x.size(1) == cfg.in_channels, spec, ": images have ", x.size(1),
        " channels, the model takes ", cfg.in_channels);
  check(folder || (x.size(2) == cfg.sample_size && x.size(3) == cfg.sample_size), spec,
        ": images are ", x.size(2), "x", x.size(3), ", the model's sample_size is ",
        cfg.sample_size, " (a folder of images is resized to it; an .npy must match)");
  // Unclipped samples (`sample --save-npy`) stray a little past [-1, 1]; values past 1.5 are
  // another scale (pixels in [0, 255] stored as floats) and would be encoded as nonsense.
  const double lo = x.min().item<double>(), hi = x.max().item<double>();
  check(lo >= -1.5 && hi <= 1.5, spec, ": float images must lie in [-1, 1], these span [", lo, ", ",
        hi, "] (pixels in [0, 255] belong in a uint8 array)");
  return x;
}

torch::Tensor load_latent(const std::string& path, const UNetConfig& cfg) {
  auto raw = load_npy(path);
  check(raw.is_floating_point(), path, ": dtype ", raw.scalar_type(),
        "; a latent must be float32 or float64");
  check_finite(raw, path);
  auto z = raw.to(torch::kFloat32);
  if (z.dim() == 4 && z.size(0) == 1) z = z.squeeze(0);
  check(z.dim() == 3 && z.size(0) == cfg.in_channels && z.size(1) == cfg.sample_size &&
            z.size(2) == cfg.sample_size,
        path, ": expected one latent of shape (", cfg.in_channels, ", ", cfg.sample_size, ", ",
        cfg.sample_size, ") or (1, ", cfg.in_channels, ", ", cfg.sample_size, ", ", cfg.sample_size,
        ") for this model, got ", z.sizes());
  return z;
}

// --init-noise: x_T of the model's shape, float and finite. There is no option to sample at
// another size, so a noise of another size is refused rather than sampled at that size.
torch::Tensor load_init_noise(const std::string& path, const UNetConfig& cfg) {
  auto raw = load_npy(path);
  check(raw.is_floating_point(), "--init-noise ", path, ": dtype ", raw.scalar_type(),
        "; noise must be float32 or float64");
  check_finite(raw, "--init-noise " + path);
  auto x = raw.to(torch::kFloat32);
  if (x.dim() == 3) x = x.unsqueeze(0);
  check(x.dim() == 4, "--init-noise ", path, ": expected (N, C, H, W) noise, got ", x.sizes());
  check(x.size(1) == cfg.in_channels, "--init-noise ", path, ": noise has ", x.size(1),
        " channels, the model takes ", cfg.in_channels);
  check(x.size(2) == cfg.sample_size && x.size(3) == cfg.sample_size, "--init-noise ", path,
        ": noise is ", x.size(2), "x", x.size(3), ", the model samples ", cfg.sample_size, "x",
        cfg.sample_size, " images");
  return x;
}

// --n, --batch, --seed, --init-noise, --class and --guidance; columns: one per class when several
// are sampled, else 0.
GenerateOptions generate_options(const Args& a, const LoadedModel& lm, const torch::Device& device,
                                 int64_t* columns) {
  GenerateOptions g;
  g.n = a.integer("n");
  g.batch = a.integer("batch");
  g.seed = static_cast<uint64_t>(a.integer("seed"));
  g.bf16 = autocast_bf16(precision_of(a, device));
  g.guidance = a.number("guidance");
  const auto& cfg = lm.model->config();
  if (a.has("init-noise")) {
    g.init_noise = load_init_noise(a.str("init-noise"), cfg);
    if (!a.given("n")) g.n = g.init_noise.size(0);
    check(g.init_noise.size(0) == g.n, a.str("init-noise"), ": holds ", g.init_noise.size(0),
          " noise tensors but --n is ", g.n);
  }
  *columns = 0;
  const int64_t classes = num_classes(cfg);
  if (a.has("class") || classes > 0) {
    const auto list = parse_class_list(a.has("class") ? a.str("class") : "all", classes);
    g.class_labels = cycle_labels(list, g.n);
    if (list.size() > 1) *columns = static_cast<int64_t>(list.size());
  }
  return g;
}

// Bytes of n images of the model's shape at `per_value` bytes each, headers aside.
uint64_t image_bytes(const UNetConfig& cfg, int64_t n, int64_t per_value) {
  return static_cast<uint64_t>(std::max<int64_t>(n, 0) * cfg.in_channels * cfg.sample_size *
                               cfg.sample_size * per_value);
}

// Every file `diffuse sample` writes, checked before sampling (the grid's raw pixels bound its
// PNG; each PNG adds a header).
void check_sample_outputs(const Args& a, int64_t n, const UNetConfig& cfg) {
  check_writable_output(a.str("out"), image_bytes(cfg, n, 1) + 4096, "--out");
  if (a.has("save-npy"))
    check_writable_output(a.str("save-npy"), image_bytes(cfg, n, 4) + 128, "--save-npy");
  if (a.has("out-dir"))
    check_writable_folder(a.str("out-dir"), image_bytes(cfg, n, 1) + 1024 * n, "--out-dir");
  if (a.has("trajectory"))
    check_writable_output(
        a.str("trajectory"),
        image_bytes(cfg, 8 * std::max<int64_t>(a.integer("trajectory-frames"), 1), 1),
        "--trajectory");
}

// --save-npy and --out-dir.
void write_extra_outputs(const Args& a, const torch::Tensor& images) {
  if (a.has("save-npy")) {
    save_npy(a.str("save-npy"), images);
    std::cout << "wrote " << a.str("save-npy") << " (float32, [-1, 1], shape " << images.sizes()
              << ")\n";
  }
  if (a.has("out-dir")) {
    fs::create_directories(a.str("out-dir"));
    for (int64_t i = 0; i < images.size(0); ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "%06lld.png", static_cast<long long>(i));
      save_png((fs::path(a.str("out-dir")) / name).string(), to_uint8(images[i]));
    }
    std::cout << "wrote " << images.size(0) << " PNGs to " << a.str("out-dir") << "\n";
  }
}

// The DDPM paper's progressive generation: x_t and the predicted x_0 at evenly spaced steps of the
// first (up to) 4 images, which per-image noise makes the grid's first images.
void write_trajectory(const Args& a, LoadedModel& lm, const SamplerOptions& sopts,
                      GenerateOptions g, const torch::Device& device) {
  const int64_t frames = a.integer("trajectory-frames"), show = std::min<int64_t>(g.n, 4);
  check(frames >= 1, "--trajectory-frames must be >= 1, got ", frames);
  const auto S = static_cast<int64_t>(
      make_sampler(sopts, lm.process.make_diffusion().schedule())->num_steps());
  std::set<int64_t> keep;  // evenly spaced steps, first and last included
  for (int64_t f = 0; f < frames; ++f)
    keep.insert(frames > 1 ? static_cast<int64_t>(
                                 std::llround(static_cast<double>(f) * (S - 1) / (frames - 1)))
                           : S - 1);
  std::vector<std::vector<torch::Tensor>> xs(show), x0s(show);
  g.n = g.batch = show;
  g.callbacks.label = "trajectory";
  if (g.init_noise.defined()) g.init_noise = g.init_noise.narrow(0, 0, show);
  if (g.class_labels.defined()) g.class_labels = g.class_labels.narrow(0, 0, show);
  g.callbacks.on_step = [&](size_t i, int64_t, const torch::Tensor& x_t, const torch::Tensor& x0) {
    if (!keep.count(static_cast<int64_t>(i))) return;
    for (int64_t j = 0; j < show; ++j) {
      xs[j].push_back(x_t[j].to(torch::kCPU).clamp(-1, 1));
      x0s[j].push_back(x0[j].to(torch::kCPU).clamp(-1, 1));
    }
  };
  generate(lm.model, lm.process, sopts, g, device);
  std::vector<torch::Tensor> rows;
  for (int64_t j = 0; j < show; ++j) {
    rows.push_back(torch::stack(xs[j]));
    rows.push_back(torch::stack(x0s[j]));
  }
  save_strip_png(a.str("trajectory"), rows);
  std::cout << "wrote " << a.str("trajectory") << " (rows: x_t, then predicted x_0, for " << show
            << " samples)\n";
}

// --init-image and --mask: (1 or N, C, H, W) float from a PNG/JPEG or an .npy, checked against
// the model's channels and size (the mask: 1 or C channels, in [0, 1]; an image: in [-1, 1]).
torch::Tensor load_guide(const std::string& option, const std::string& path, const UNetConfig& cfg,
                         bool is_mask) {
  const auto ext = fs::path(path).extension().string();
  torch::Tensor x;
  if (ext == ".npy") {
    x = load_npy(path);
    if (x.dim() == 3) x = x.unsqueeze(0);
    if (is_mask && x.dim() == 2) x = x.unsqueeze(0).unsqueeze(0);
  } else {
    x = load_image(path, is_mask ? 1 : cfg.in_channels).unsqueeze(0);
  }
  check(x.dim() == 4, "--", option, " ", path, ": expected (N, C, H, W), got shape ", x.sizes());
  if (x.scalar_type() == torch::kUInt8)
    x = is_mask ? x.to(torch::kFloat32) / 255.0 : x.to(torch::kFloat32) / 127.5 - 1.0;
  x = x.to(torch::kFloat32);
  check_finite(x, "--" + option + " " + path);
  const int64_t C = cfg.in_channels, S = cfg.sample_size;
  check(x.size(2) == S && x.size(3) == S && (x.size(1) == C || (is_mask && x.size(1) == 1)), "--",
        option, " ", path, ": shape ", x.sizes(), " does not match the model's (", C, ", ", S, ", ",
        S, ")", is_mask ? " (a mask may have 1 channel)" : "");
  return is_mask ? (x > 0.5).to(torch::kFloat32) : x;
}

// SDEdit (--init-image, --strength) or RePaint (--init-image, --mask) as the batches' run.
void add_image_guidance(const Args& a, const LoadedModel& lm, const SamplerOptions& sopts,
                        GenerateOptions& g) {
  const bool sdedit_on = a.has("strength") && !a.str("strength").empty();
  const bool mask_on = a.has("mask") && !a.str("mask").empty();
  check(mask_on || (!a.given("jump-length") && !a.given("jump-n-sample")),
        "--jump-length and --jump-n-sample are RePaint's: they need --mask");
  if (!a.has("init-image") || a.str("init-image").empty()) {
    check(!sdedit_on && !mask_on, "--strength and --mask need --init-image");
    return;
  }
  check(sdedit_on != mask_on, "--init-image needs exactly one of --strength (SDEdit) and --mask ",
        "(RePaint)");
  const auto& cfg = lm.model->config();
  const auto image = load_guide("init-image", a.str("init-image"), cfg, false);
  check(image.size(0) == 1 || image.size(0) == g.n, "--init-image holds ", image.size(0),
        " images; expected 1 or --n (", g.n, ")");
  const auto slice = [](const torch::Tensor& t, int64_t start, int64_t b) {
    return t.size(0) == 1 ? t.expand({b, t.size(1), t.size(2), t.size(3)}) : t.narrow(0, start, b);
  };
  if (sdedit_on) {
    const double strength = a.number("strength");
    check_strength(strength);
    g.run_batch = [=](const Sampler& s, const ModelFn& f, const torch::Tensor& x_T,
                      NoiseSource& noise, const SampleCallbacks& cb, int64_t start) {
      return sdedit(s, f, slice(image, start, x_T.size(0)).to(x_T.options()), strength, noise, cb);
    };
    return;
  }
  check(sopts.kind == "ddpm", "--mask (RePaint) runs DDPM steps: use --sampler ddpm, not ",
        sopts.kind);
  const auto mask = load_guide("mask", a.str("mask"), cfg, true);
  check(mask.size(0) == 1 || mask.size(0) == g.n, "--mask holds ", mask.size(0),
        " masks; expected 1 or --n (", g.n, ")");
  const RePaintOptions ro{a.integer("jump-length"), a.integer("jump-n-sample")};
  repaint_levels(1, ro);  // the option checks
  g.run_batch = [=](const Sampler& s, const ModelFn& f, const torch::Tensor& x_T,
                    NoiseSource& noise, const SampleCallbacks&, int64_t start) {
    c10::InferenceMode guard;
    Denoiser d(f, s.schedule(), s.options().prediction, s.variance(), s.options().clip_x0,
               "repaint");
    const auto b = x_T.size(0);
    return repaint(d, s.timesteps(), x_T, slice(image, start, b).to(x_T.options()),
                   slice(mask, start, b).to(x_T.options()), ro, noise);
  };
}

int run_sample(const Args& a) {
  const auto device = setup_device(a);
  auto lm = load_model(a.str("model"), device, !a.flag("no-ema"));
  const auto kind = a.str("sampler");
  const auto sopts = sampler_from_args(a, lm.process, kind);
  int64_t columns = 0;
  auto g = generate_options(a, lm, device, &columns);
  check_sample_outputs(a, g.n, lm.model->config());
  add_image_guidance(a, lm, sopts, g);
  std::cerr << "diffuse: sampling " << g.n << " images with " << kind << " (" << sopts.steps
            << " steps) from " << lm.description << "\n";
  auto images = generate(lm.model, lm.process, sopts, g, device);
  const auto out = a.str("out");
  save_grid_png(out, images, columns > 0 ? columns : grid_columns(g.n));
  std::cout << "wrote " << out << " (" << g.n << " images)\n";
  write_extra_outputs(a, images);
  if (a.has("trajectory")) write_trajectory(a, lm, sopts, g, device);
  return 0;
}

int run_encode(const Args& a) {
  const auto device = setup_device(a);
  auto lm = load_model(a.str("model"), device, !a.flag("no-ema"));
  const auto& cfg = lm.model->config();
  auto x0 = load_images_arg(a.str("images"), cfg);
  check_writable_output(a.str("out"), image_bytes(cfg, x0.size(0), 4) + 128, "--out");
  if (a.has("recon")) check_writable_output(a.str("recon"), image_bytes(cfg, 16, 1), "--recon");
  const auto diffusion = lm.process.make_diffusion();
  auto sopts = sampler_from_args(a, lm.process, "ddim");
  sopts.eta = 0;
  auto denoise = unet_model_fn(lm.model, autocast_bf16(precision_of(a, device)));
  const int64_t B = a.integer("batch");
  std::vector<torch::Tensor> zs, recon;
  for (int64_t s = 0; s < x0.size(0); s += B) {
    auto xb = x0.narrow(0, s, std::min(B, x0.size(0) - s)).to(device);
    SampleCallbacks cb;
    cb.label = "encode";
    auto z = encode(denoise, diffusion.schedule(), sopts, xb, cb);
    cb.label = "decode";
    recon.push_back(decode(denoise, diffusion.schedule(), sopts, z, cb).to(torch::kCPU));
    zs.push_back(z.to(torch::kCPU));
  }
  auto z = torch::cat(zs), r = torch::cat(recon);
  save_npy(a.str("out"), z);
  const double rmse = (r - x0).pow(2).mean().sqrt().item<double>();
  const double maxerr = (r - x0).abs().max().item<double>();
  std::cout << "wrote " << a.str("out") << " (latents, shape " << z.sizes() << ")\n"
            << "reconstruction after decoding (DDIM, " << sopts.steps << " steps): RMSE " << rmse
            << ", max abs error " << maxerr << " (data range [-1, 1])\n"
            << "latent mean " << z.mean().item<double>() << ", std " << z.std().item<double>()
            << " (a standard Gaussian has 0 and 1)\n";
  if (a.has("recon")) {
    save_strip_png(a.str("recon"), {x0.narrow(0, 0, std::min<int64_t>(8, x0.size(0))),
                                    r.narrow(0, 0, std::min<int64_t>(8, r.size(0)))});
    std::cout << "wrote " << a.str("recon") << " (top: input, bottom: reconstruction)\n";
  }
  return 0;
}

int run_interpolate(const Args& a) {
  const auto device = setup_device(a);
  auto lm = load_model(a.str("model"), device, !a.flag("no-ema"));
  const auto& cfg = lm.model->config();
  auto za = load_latent(a.str("from"), cfg), zb = load_latent(a.str("to"), cfg);
  check(za.sizes() == zb.sizes(), "--from and --to latents differ in shape: ", za.sizes(), " vs ",
        zb.sizes());
  const auto frames = a.integer("frames");
  check(frames >= 2, "--frames must be >= 2, got ", frames);
  check_writable_output(a.str("out"), image_bytes(cfg, frames, 1) + 4096, "--out");
  if (a.has("save-npy"))
    check_writable_output(a.str("save-npy"), image_bytes(cfg, frames, 4) + 128, "--save-npy");
  auto zs = interpolate(za, zb, frames).to(device);
  const auto diffusion = lm.process.make_diffusion();
  auto sopts = sampler_from_args(a, lm.process, "ddim");
  sopts.eta = 0;
  SampleCallbacks cb;
  cb.label = "interpolate";
  auto imgs = decode(unet_model_fn(lm.model, autocast_bf16(precision_of(a, device))),
                     diffusion.schedule(), sopts, zs, cb)
                  .to(torch::kCPU);
  save_strip_png(a.str("out"), {imgs});
  std::cout << "wrote " << a.str("out") << " (" << frames << " frames)\n";
  if (a.has("save-npy")) save_npy(a.str("save-npy"), imgs);
  return 0;
}

}  // namespace

Command sample_command() {
  Command c;
  c.name = "sample";
  c.summary =
      "generate images: DDPM, DDIM, DPM-Solver++ 2M/3M/2M-SDE, UniPC, DEIS, iPNDM, EDM's Euler and "
      "Heun, Euler ancestral";
  c.usage = "diffuse sample --model M [--sampler " + sampler_names("|") +
            "] [--steps S] [--n N] --out grid.png";
  c.description =
      "Samplers (--sampler), each with its reference and defaults:\n" + samplers_help() +
      "--steps is the number of noise levels visited: the network evaluations, except heun's\n"
      "2 S - 1; --steps 0 means the sampler's default. Spacings (--spacing): leading (0, T/S, "
      "...;\n"
      "DDIM paper), linspace (from T-1), trailing (from T-1), quadratic (DDIM paper), even\n"
      "(round(linspace(0, T-1, S)), improved-diffusion's respacing), karras (Karras et al. eq. 5,\n"
      "rho 7, between the schedule's smallest and largest sigma, rounded to the nearest "
      "timesteps;\n"
      "euler, heun and euler-a step between those timesteps' exact sigmas). Any sampler takes any\n"
      "spacing.\n"
      "The same --seed gives the same images: initial and per-step noise come from a seeded CPU\n"
      "generator, so CPU and GPU agree up to float rounding.\n"
      "Class-conditional models (trained with --class-cond) sample with classifier-free guidance\n"
      "(Ho & Salimans 2022) in diffusers' convention: out = out(null) + S (out(class) - "
      "out(null)),\n"
      "so --guidance 1 is the conditional model alone, 0 the unconditional one (the null class),\n"
      "S > 1 strengthens the class; S other than 0 and 1 costs two network evaluations per step.\n"
      "Image i has class K_(i mod m) of the m classes --class lists; with m > 1 the grid has one\n"
      "column per class.\n"
      "Image-guided generation (--init-image): SDEdit (Meng et al. 2022) with --strength s noises\n"
      "the image to t = s T by q(x_t | x_0) and runs the sampler's timesteps below it (s = 0 "
      "returns\n"
      "the image); RePaint (Lugmayr et al. 2022) with --mask and --sampler ddpm inpaints where "
      "the\n"
      "mask is 0, re-noising the known region from the image at every step, with resampling jumps\n"
      "(--jump-length, --jump-n-sample).";
  c.options = model_options();
  for (auto o : std::vector<Option>{
           {"sampler", "ddim", sampler_names()},
           {"steps", "0", "noise levels (network evaluations; heun 2 S - 1); 0 = the default"},
           {"eta", "0", "DDIM noise: 0 deterministic, 1 = the DDPM posterior variance"},
           {"spacing", "", "timestep spacing: " + spacing_names() + " (\"\" = the sampler's)"},
           {"churn", "0", "heun: EDM Algorithm 2's S_churn (0 = deterministic Algorithm 1)"},
           {"s-tmin", "0", "heun: churn only at noise levels sigma >= this"},
           {"s-tmax", "", "heun: churn only at noise levels sigma <= this (\"\" = no bound)"},
           {"s-noise", "1", "heun: EDM's S_noise, the scale of the churn noise"},
           {"init-image", "",
            "SDEdit / RePaint: the image (PNG/JPEG, or .npy (1 or N, C, H, W) in [-1, 1])"},
           {"strength", "", "SDEdit: noise the image to t = strength T, in [0, 1] (0: the image)"},
           {"mask", "",
            "RePaint: PNG or .npy at the model's size, 1 (white) = keep the image, 0 = generate"},
           {"jump-length", "10", "RePaint: steps per resampling jump"},
           {"jump-n-sample", "10", "RePaint: resamplings per jump (1 = none)"},
           {"n", "16", "number of images"},
           {"batch", "64", "images per network call"},
           {"seed", "0", "seed of the initial and per-step noise"},
           {"out", "samples.png", "PNG grid to write"},
           {"out-dir", "", "also write each image as a PNG into this folder"},
           {"save-npy", "", "also write the raw float32 samples in [-1, 1] (before quantisation)"},
           {"init-noise", "", "x_T from this .npy (N, C, H, W) instead of the seed"},
           {"class", "",
            "class-conditional models: class K, a list K1,K2,... or all (the default for them)"},
           {"guidance", "1", "classifier-free guidance scale S (1: conditional, 0: unconditional)"},
           clip_x0_option(),
           {"trajectory", "", "also write a strip of x_t and predicted x_0 over the steps (PNG)"},
           {"trajectory-frames", "10", "columns in the trajectory strip"}})
    c.options.push_back(o);
  for (auto& o : device_options()) c.options.push_back(o);
  c.run = run_sample;
  return c;
}

Command encode_command() {
  Command c;
  c.name = "encode";
  c.summary = "DDIM inversion: images -> latents x_T (and the reconstruction error)";
  c.usage = "diffuse encode --model M --images DIR|file.npy --steps S --out latents.npy";
  c.description =
      "Runs the deterministic DDIM ODE from the images to x_T, then decodes the latents back and\n"
      "reports the reconstruction error, which shrinks as --steps grows.";
  c.options = model_options();
  for (auto o : std::vector<Option>{
           {"images", "", "folder of PNG/JPEG, or .npy (N, C, H, W) in [-1, 1] or uint8", false,
            true},
           {"steps", "100", "DDIM steps"},
           {"spacing", "", "timestep spacing (default leading)"},
           {"batch", "64", "images per network call"},
           {"out", "latents.npy", "where to write the latents"},
           {"recon", "", "also write a PNG strip of inputs and reconstructions"},
           clip_x0_option()})
    c.options.push_back(o);
  for (auto& o : device_options()) c.options.push_back(o);
  c.run = run_encode;
  return c;
}

Command interpolate_command() {
  Command c;
  c.name = "interpolate";
  c.summary = "spherical interpolation between two latents, decoded to a strip";
  c.usage = "diffuse interpolate --model M --from a.npy --to b.npy --frames F --out strip.png";
  c.options = model_options();
  for (auto o : std::vector<Option>{
           {"from", "", "first latent (.npy, (C, H, W) or (1, C, H, W))", false, true},
           {"to", "", "second latent", false, true},
           {"frames", "8", "images in the strip, ends included"},
           {"steps", "50", "DDIM steps for decoding"},
           {"spacing", "", "timestep spacing (default leading)"},
           {"out", "interpolation.png", "PNG strip to write"},
           {"save-npy", "", "also write the decoded frames as .npy"},
           clip_x0_option()})
    c.options.push_back(o);
  for (auto& o : device_options()) c.options.push_back(o);
  c.run = run_interpolate;
  return c;
}

}  // namespace diffuse::cli
