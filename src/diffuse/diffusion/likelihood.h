// The full variational bound as an NLL in bits/dim (Ho et al. eq. 5; Nichol & Dhariwal sec. 3.2):
// L = L_T + sum_{t>0} L_{t-1} + L_0, with every term evaluated (or an evenly spaced subset, which
// gives an estimate).
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "diffuse/diffusion/gaussian_diffusion.h"
#include "diffuse/diffusion/model_fn.h"

namespace diffuse {

struct BpdOptions {
  int64_t terms = 0;     // 0 = all T terms; K < T = K evenly spaced terms (an estimate)
  bool clip_x0 = false;  // clamp the predicted x_0 (improved-diffusion evaluates with it on)
  uint64_t seed = 0;     // noise for each q_sample, from a CPU generator
  bool progress = false;
};

struct BpdResult {
  torch::Tensor total_bpd;  // (B) the bound, bits/dim
  torch::Tensor prior_bpd;  // (B) L_T
  torch::Tensor terms_bpd;  // (B, K) L_t at each evaluated timestep, in the order of `timesteps`
  torch::Tensor x0_mse;     // (B, K) error of the predicted x_0
  std::vector<int64_t> timesteps;  // the K evaluated t, ascending
  std::vector<double> weights;     // how many terms of the sum each stands for
  bool estimate = false;           // true when K < T
};

// Timesteps evaluated for K terms out of T: all of them for K = 0 or K >= T; else t = 0 (the
// decoder term L_0, counted once) and K - 1 t in [1, T-1] spaced quadratically (the KL terms are
// largest and change fastest at small t), each weighted by the width of the cell of timesteps it
// stands for (a quadrature of the sum).
std::vector<int64_t> bpd_timesteps(int64_t T, int64_t K);
// The weight of each evaluated term: 1 for the full sum; cell widths summing to T-1 (plus 1 for
// L_0) for a subset.
std::vector<double> bpd_weights(int64_t T, const std::vector<int64_t>& timesteps);

// x0: (B, C, H, W) 8-bit data scaled to [-1, 1]. The computation runs in x0's dtype and device.
BpdResult calc_bpd_loop(const GaussianDiffusion& diffusion, const ModelFn& model,
                        const torch::Tensor& x0, const BpdOptions& options = {});

}  // namespace diffuse
