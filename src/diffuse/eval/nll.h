// Test-set NLL of a diffusion model: the variational bound of likelihood.h over many images, in
// bits per data dimension, with its standard error and the mean of each term (where in t the
// bits go).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "diffuse/diffusion/likelihood.h"
#include "diffuse/models/unet.h"

namespace diffuse {

struct NllOptions {
  int64_t batch = 64;
  BpdOptions bpd;  // terms, clip_x0, progress; batch b draws its noise with seed bpd.seed + b
  torch::Device device = torch::kCPU;
};

struct NllResult {
  double nll = 0;  // mean bound over images, bits per data dimension
  double se = 0;   // std over images / sqrt(n)
  int64_t n = 0;
  int64_t num_timesteps = 0;
  bool estimate = false;            // fewer terms than timesteps were evaluated
  std::vector<int64_t> timesteps;   // the evaluated t, ascending
  std::vector<double> weights;      // terms of the sum each stands for
  std::vector<double> term_mean;    // mean over images of L_t at each evaluated t
  std::vector<double> x0_mse_mean;  // mean squared error of the predicted x_0 at each t
  double prior_mean = 0;            // mean L_T
  torch::Tensor per_image;          // (n) float64 CPU, the bound of each image
  // Model dimensions per data dimension: the bound is computed on the model's input, which may
  // be padded (28x28 data in a 32x32 model); every value above is rescaled by this to count the
  // data's own dimensions, so a padded model is not credited for predicting its constant border.
  double dims_ratio = 1;
};

// images: (N, C, h, w) uint8 data; pad: pixels of -1 added on each side (0: none), so that the
// model sees (N, C, h + 2 pad, w + 2 pad) as in training. The bound's arithmetic runs in float64 on
// options.device; the network in whatever dtype `model` casts to.
NllResult evaluate_nll(const GaussianDiffusion& diffusion, const ModelFn& model,
                       const torch::Tensor& images, int64_t pad, const NllOptions& options);

// Evaluation images for a model of side sample_size: the split at its own size when that is
// no larger (pad_out then says how much to pad each side), else resized to sample_size.
torch::Tensor load_eval_images(const std::string& spec, const std::string& split,
                               int64_t sample_size, int64_t channels, int64_t* pad_out);

// "NLL: 3.123 bits/dim +- 0.012 (...)" for the terminal.
std::string nll_summary_line(const NllResult& r);

// out_dir/nll.json (the summary and `meta`), nll_terms.csv (t, weight, mean L_t, x0 MSE) and
// nll_terms.png (mean L_t against t, log y).
void write_nll_outputs(const std::string& out_dir, const NllResult& r, const nlohmann::json& meta);

}  // namespace diffuse
