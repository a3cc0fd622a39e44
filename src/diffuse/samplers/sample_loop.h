// The sampling loop: x_T -> x_0 by calling the denoiser at each of the sampler's timesteps.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>

#include "diffuse/samplers/noise.h"
#include "diffuse/samplers/sampler.h"

namespace diffuse {

struct SampleCallbacks {
  // Called after step i with the model's timestep t, the input x_t and the x_0 it predicted
  // (trajectory strips, logging). x_t, pred_x0: (B, C, H, W).
  std::function<void(size_t i, int64_t t, const torch::Tensor& x_t, const torch::Tensor& pred_x0)>
      on_step;
  bool show_progress = true;
  std::string label = "sample";
};

// Runs the sampler from x_T (B, C, H, W) under c10::InferenceMode and returns the sample, an
// inference tensor of x_T's shape. The sampler's step history is reset (steps restart at 0).
torch::Tensor sample(Sampler& sampler, const Denoiser& denoiser, torch::Tensor x_T,
                     NoiseSource& noise, const SampleCallbacks& callbacks = {});

}  // namespace diffuse
