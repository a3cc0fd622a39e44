// diffuse's C++ API: load a diffusion model, sample, encode and interpolate images, save them,
// and train a model from a config. Only standard types cross it (no LibTorch headers), so a
// program that uses it compiles without LibTorch and links it through diffuse::diffuse.
//
// Images are float32, (n, channels, height, width) in C order, nominally in [-1, 1] (what the
// network produces; to_uint8-style conversion happens in save_png_grid). Every failure throws
// diffuse::Error with the message `diffuse` (the CLI) prints for the same mistake.
//
//   auto model = diffuse::Model::load("runs/fmnist");
//   diffuse::SampleOptions opts;
//   opts.n = 16;
//   diffuse::save_png_grid("grid.png", model.sample(opts));
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "diffuse/core/error.h"
#include "diffuse/version.h"

namespace diffuse {

// "0.1.0": the library's version (DIFFUSE_VERSION_STRING of the headers it was built with).
const char* version();
// The LibTorch version the library was built against, e.g. "2.11.0".
std::string torch_version_string();

// (n, channels, height, width) float32 images or latents in C order.
struct Images {
  int64_t n = 0, channels = 0, height = 0, width = 0;
  std::vector<float> data;  // n * channels * height * width values

  Images() = default;
  Images(int64_t n, int64_t channels, int64_t height, int64_t width);
  int64_t size() const { return n * channels * height * width; }
  // Pixel (channel c, row y, column x) of image i.
  float& at(int64_t i, int64_t c, int64_t y, int64_t x) {
    return data[static_cast<size_t>(((i * channels + c) * height + y) * width + x)];
  }
  float at(int64_t i, int64_t c, int64_t y, int64_t x) const {
    return data[static_cast<size_t>(((i * channels + c) * height + y) * width + x)];
  }
};

struct LoadOptions {
  std::string device = "auto";  // auto (CUDA when available), cpu, cuda, cuda:N
  bool ema = true;              // run and checkpoint folders: the EMA weights (false: the raw ones)
  // auto | fp32 | tf32 | bf16, as `diffuse sample --precision` (auto: bf16 on CUDA, fp32 on CPU).
  std::string precision = "auto";
  int threads = 0;  // CPU threads (0: all cores)
};

struct ModelInfo {
  std::string description;  // what was loaded, e.g. "runs/x/checkpoints/step_00001000/unet_ema"
  int64_t step = -1;        // training step, when known
  int64_t channels = 0, height = 0, width = 0;  // of one image (the model's sample size)
  int64_t num_classes = 0;                      // 0: unconditional
  int64_t timesteps = 0;                        // T of the training process
  std::string device;                           // where it computes, e.g. "cpu"
};

// The options of `diffuse sample`, with the same defaults and meaning.
struct SampleOptions {
  std::string sampler = "ddim";  // ddpm | ddim | dpm++2m | euler | heun | euler-a
  int64_t steps = 0;             // noise levels visited; 0: the sampler's default
  int64_t n = 16;                // images
  int64_t batch = 64;            // images per network call (never changes an image)
  uint64_t seed = 0;             // image i's noise comes from its own stream of the seed
  double eta = 0.0;              // DDIM only: 0 deterministic, 1 the DDPM posterior variance
  std::string spacing;           // "": the sampler's default (leading, trailing, karras, ...)
  bool clip_x0 = false;          // clamp the predicted x_0 to [-1, 1] at each step
  // Class-conditional models: the classes drawn in turn (image i gets classes[i % size]); empty:
  // every class in turn. Sampled with classifier-free guidance of scale `guidance` (1: none).
  std::vector<int64_t> classes;
  double guidance = 1.0;
  bool progress = false;  // a progress bar on stderr
};

// DDIM inversion (Song et al. 2021, sec. 5.4) and decoding: eta 0, `steps` noise levels.
struct InversionOptions {
  int64_t steps = 50;
  std::string spacing;  // "": leading
  int64_t batch = 64;
  bool progress = false;
};

class Model {
 public:
  // spec: a diffuse run folder (its newest checkpoint that verifies), one checkpoint folder
  // (runs/x/checkpoints/step_N), a diffusers UNet2DModel folder, or a diffusers pipeline folder
  // (unet/ + scheduler/).
  static Model load(const std::string& spec, const LoadOptions& options = {});

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  ModelInfo info() const;
  // -> (options.n, channels, height, width) in [-1, 1]; the same images `diffuse sample` makes
  // with the same options and seed.
  Images sample(const SampleOptions& options = {}) const;
  // images (n, channels, height, width) in [-1, 1] -> their DDIM latents x_T, same shape.
  Images encode(const Images& images, const InversionOptions& options = {}) const;
  // latents x_T -> images by DDIM (eta 0).
  Images decode(const Images& latents, const InversionOptions& options = {}) const;
  // `frames` images decoded from latents spherically interpolated between a and b (one latent
  // each, (1, channels, height, width)), a and b included.
  Images interpolate(const Images& a, const Images& b, int64_t frames,
                     const InversionOptions& options = {}) const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A grid of the images, `columns` per row (0: about square), with torchvision's 2-pixel padding;
// 1 to 4 channels. Written atomically (a temporary file renamed over the path).
void save_png_grid(const std::string& path, const Images& images, int64_t columns = 0);
// float32 .npy of shape (n, channels, height, width), as numpy.save writes it; written atomically.
void save_npy(const std::string& path, const Images& images);
// An .npy of float32/float64 values in [-1, 1] or uint8 pixels (mapped to [-1, 1]), shape
// (n, c, h, w) or (c, h, w).
Images load_npy_images(const std::string& path);

struct TrainResult {
  std::string run_dir;  // the run folder (config "out")
  int64_t step = 0;     // the step reached (the last checkpoint's)
};
// Trains as `diffuse train` does from a run's config.json: config_json is the JSON text (keys as
// in a run's config.json, i.e. the train options with '_' for '-'; missing keys take the CLI's
// defaults). Unknown keys and bad values are errors naming them.
TrainResult train(const std::string& config_json, bool progress = false);
// The same from a file holding that JSON.
TrainResult train_from_file(const std::string& config_path, bool progress = false);
// Continues the run in run_dir from its newest checkpoint that verifies, up to `steps` (0: the
// run's own), as `diffuse train --resume run_dir --steps N`.
TrainResult resume_training(const std::string& run_dir, int64_t steps = 0, bool progress = false);

}  // namespace diffuse
