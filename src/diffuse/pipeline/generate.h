// A model plus its sampler (diffusers' "pipeline"): batched, seeded generation from a U-Net and
// its process. Used by training previews, `diffuse sample` and evaluation.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "diffuse/diffusion/process_config.h"
#include "diffuse/models/class_labels.h"
#include "diffuse/models/unet.h"
#include "diffuse/pipeline/model_fn.h"
#include "diffuse/samplers/sampler.h"

namespace diffuse {

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
  ModelFn model_fn;          // if set, used instead of the model's own forward (a captured graph)
  // Class-conditional models: (n) int64 labels, undefined = every class in turn (label i is
  // i mod classes); sampled with classifier-free guidance of scale `guidance`.
  torch::Tensor class_labels;
  double guidance = 1.0;
  SampleCallbacks callbacks;  // on_step sees each batch's steps (x_t of that batch)
  // If set, runs each batch in place of the sampler (image-guided generation, samplers/guided.h),
  // given the batch's x_T, its noise streams and the index of its first image.
  std::function<torch::Tensor(const Sampler&, const ModelFn&, const torch::Tensor& x_T,
                              NoiseSource&, const SampleCallbacks&, int64_t start)>
      run_batch;
};

// -> (n, C, H, W) float32 in roughly [-1, 1] on the CPU. Image i's x_T and step noise come from
// its own stream of the seed (samplers/noise.h), so --batch and the device never change an image.
torch::Tensor generate(UNet2DModel& model, const ProcessConfig& process,
                       const SamplerOptions& sampler, const GenerateOptions& options,
                       const torch::Device& device);

// Preview grids during training: DDIM, eta 0, x_0 clipped (as diffusers' pipelines), fixed seed,
// no progress bar.
torch::Tensor preview_samples(UNet2DModel& model, const ProcessConfig& process, int64_t n,
                              int64_t steps, uint64_t seed, const torch::Device& device);

}  // namespace diffuse
