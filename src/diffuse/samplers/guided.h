// Image-guided generation with any unconditional or class-conditional model.
//
// SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic
// Differential Equations", Algorithm 1): the image x_0 is noised to t_0 by q(x_t | x_0) =
// N(sqrt(abar_t) x_0, (1 - abar_t) I) and the sampler runs from there, on its own timesteps below
// strength * T; strength 0 returns the image, 1 is plain sampling from a noised image.
//
// RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic
// Models", Algorithm 1 and sec. 4.2): DDPM ancestral steps (the respaced posterior, ddpm.h) on the
// given timesteps where, after every step, the known region (mask 1) is replaced by the image
// noised to the same level, x = m q(x_t | image) + (1 - m) x_t; with resampling, after each run of
// jump_length steps down the chain goes jump_length steps back up by q(x_t' | x_t) and repeats,
// jump_n_sample - 1 times, so the generated region harmonises with the known one. At the end the
// known region is the image exactly.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "diffuse/samplers/noise.h"
#include "diffuse/samplers/sampler.h"

namespace diffuse {

// Error naming --strength unless strength is in [0, 1].
void check_strength(double strength);
// The timesteps t of ts (descending) with t + 1 <= strength * T (check_strength first).
std::vector<int64_t> sdedit_timesteps(const std::vector<int64_t>& ts, int64_t T, double strength);

// image (B, C, ...) in the model's data range -> the edited images. Draws the start noise from
// `noise` (then the sampler's own).
torch::Tensor sdedit(const Sampler& sampler, const ModelFn& model, const torch::Tensor& image,
                     double strength, NoiseSource& noise, const SampleCallbacks& callbacks = {});

struct RePaintOptions {
  int64_t jump_length = 10;    // r's jump length j (the paper's default 10)
  int64_t jump_n_sample = 10;  // resamplings r (the paper's default 10; 1 = no resampling)
};

// The level indices RePaint visits for S steps: S (x_T at timesteps[0]) down to 0 (the data),
// level k being timesteps[S - k] for k >= 1, with the jumps back up. Error naming --jump-length
// or --jump-n-sample unless both are >= 1.
std::vector<int64_t> repaint_levels(int64_t S, const RePaintOptions& options);

// Inpaints image (B, C, ...) where mask (B or 1, 1 or C, ...) is 0, keeping it where the mask is
// 1; x_T is the start noise. Errors name --mask for shapes that do not broadcast to the image's.
torch::Tensor repaint(const Denoiser& denoiser, const std::vector<int64_t>& timesteps,
                      torch::Tensor x_T, const torch::Tensor& image, const torch::Tensor& mask,
                      const RePaintOptions& options, NoiseSource& noise);

}  // namespace diffuse
