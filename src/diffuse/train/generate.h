// Generating images with a trained U-Net: the network as a sampler's denoiser, and batched
// sampling from seeded noise. Used by training previews, `diffuse sample` and evaluation.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "diffuse/models/unet.h"
#include "diffuse/samplers/sample_loop.h"
#include "diffuse/samplers/sampler.h"
#include "diffuse/train/model_source.h"

namespace diffuse {

// The network output as float32, under bf16 autocast when asked and on CUDA.
Denoiser unet_denoiser(UNet2DModel model, bool bf16);

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
