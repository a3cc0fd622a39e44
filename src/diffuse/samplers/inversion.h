// DDIM latent encoding (Song et al. 2021, sec. 5.4): the eta = 0 sampler is the Euler
// discretisation of an ODE, so running it the other way maps data x_0 to a latent x_T that decodes
// back to x_0 (up to discretisation error), and latents can be interpolated.
#pragma once
#include <torch/torch.h>

#include "diffuse/diffusion/schedule.h"
#include "diffuse/samplers/sampler.h"

namespace diffuse {

// Both directions use options.steps, spacing (default leading), prediction, variance (learned-range
// outputs are narrowed to the prediction) and clip_x0; options.kind must be "ddim" or "" and eta 0,
// or diffuse::Error names --sampler / --eta.
//
// Pairing: decoding steps from level t_i to t_{i+1} with the model evaluated at t_i (its start).
// Encoding is the same DDIM step (ddim_step, eq. 12 with sigma = 0) run upwards: from t_{i+1} to
// t_i with the model evaluated at t_{i+1}, the start again (explicit Euler both ways, so the round
// trip error is O(1/S)). Its first step starts from the data, which has no timestep: the model sees
// the smallest kept timestep there (t = 0 for leading), and x_0 is the data itself.
// x0: (B, C, H, W) -> x_T: (B, C, H, W).
torch::Tensor encode(const ModelFn& model, const Schedule& schedule, const SamplerOptions& options,
                     torch::Tensor x0, const SampleCallbacks& callbacks = {});
// DDIM eta = 0 sampling from x_T over the same timesteps.
torch::Tensor decode(const ModelFn& model, const Schedule& schedule, const SamplerOptions& options,
                     torch::Tensor x_T, const SampleCallbacks& callbacks = {});

// Spherical interpolation between latents, per sample: a, b (B, ...) are flattened to (B, D) rows
// and mixed as sin((1 - alpha) theta) / sin(theta) a + sin(alpha theta) / sin(theta) b, theta the
// angle between them (Shoemake 1985), which keeps Gaussian latents at a typical norm where lerp
// would shrink them. Falls back to lerp where sin(theta) is tiny (|cos theta| > 0.9995).
torch::Tensor slerp(const torch::Tensor& a, const torch::Tensor& b, double alpha);

// frames latents from za to zb (inclusive) by slerp at alpha = linspace(0, 1, frames).
// za, zb: (C, H, W) or (1, C, H, W) -> (frames, C, H, W).
torch::Tensor interpolate(const torch::Tensor& za, const torch::Tensor& zb, int64_t frames);

}  // namespace diffuse
