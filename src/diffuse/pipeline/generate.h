// Generating images with a trained U-Net: the network as a sampler's denoiser, and batched
// sampling from seeded noise. Used by training previews, `diffuse sample` and evaluation.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "diffuse/models/class_labels.h"
#include "diffuse/models/unet.h"
#include "diffuse/samplers/sample_loop.h"
#include "diffuse/samplers/sampler.h"
#include "diffuse/pipeline/load_model.h"

namespace diffuse {

// The network output as float32, under bf16 autocast when asked and on CUDA.
Denoiser unet_denoiser(UNet2DModel model, bool bf16);

// Classifier-free guidance (Ho & Salimans 2022) in diffusers' guidance_scale convention:
//   out = out(x, null) + s (out(x, class) - out(x, null)),
// so s = 1 is the conditional model alone, s = 0 the unconditional one (the null class), s > 1
// extrapolates away from the unconditional prediction. The combination has weights summing to 1,
// so guiding the eps, x_0 or v output is the same (each is affine in the others at fixed x_t); a
// learned variance is taken from the conditional output. One forward of the doubled batch
// [x, x] with [labels, null] per step; s = 1 and s = 0 need only one forward of x.
// labels: (B) int64, the batch the denoiser will be called with.
Denoiser guided_unet_denoiser(UNet2DModel model, torch::Tensor labels, double guidance, bool bf16);

// The forward replayed from a CUDA graph captured for inputs of x_shape (CUDA only; other shapes
// run eagerly). Capturing costs several forwards: build it once and reuse it across calls.
Denoiser graphed_unet_denoiser(UNet2DModel model, std::vector<int64_t> x_shape, bool bf16);

// Sampler options carrying the process's prediction and variance types.
SamplerOptions sampler_options(const ProcessConfig& process, const std::string& kind, int64_t steps,
                               double eta = 0.0, const std::string& spacing = "",
                               bool clip_x0 = false);

struct GenerateOptions {
  int64_t n = 64;
  int64_t batch = 64;
  uint64_t seed = 0;
  bool bf16 = true;
  bool progress = true;
  torch::Tensor init_noise;  // (n, C, H, W) x_T; undefined: drawn from the seed
  bool cuda_graph = false;   // replay the forward from a CUDA graph (full batches, CUDA only)
  Denoiser denoiser;         // if set, used instead of the model's own forward (a captured graph)
  // Class-conditional models: (n) int64 labels, undefined = every class in turn (label i is
  // i mod classes); sampled with classifier-free guidance of scale `guidance`.
  torch::Tensor class_labels;
  double guidance = 1.0;
};

// -> (n, C, H, W) float32 in roughly [-1, 1] on the CPU. Batch k draws its x_T and step noise from
// the seed, so the same seed gives the same images whatever the device.
torch::Tensor generate(UNet2DModel& model, const ProcessConfig& process,
                       const SamplerOptions& sampler, const GenerateOptions& options,
                       const torch::Device& device);

// Preview grids during training: DDIM, eta 0, x_0 clipped (as diffusers' pipelines), fixed seed,
// no progress bar.
torch::Tensor preview_samples(UNet2DModel& model, const ProcessConfig& process, int64_t n,
                              int64_t steps, uint64_t seed, const torch::Device& device);

}  // namespace diffuse
