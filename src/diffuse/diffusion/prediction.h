// What the network predicts, and the conversions between its output, x_0 and eps.
// clang-format off
// With a = sqrt(abar_t) and s = sqrt(1 - abar_t):  x_t = a x_0 + s eps   (Ho et al. eq. 4)
//   eps prediction:  x_0 = (x_t - s eps) / a
//   x_0 prediction:  eps = (x_t - a x_0) / s
//   v prediction:    v = a eps - s x_0  (Salimans & Ho 2022), so x_0 = a x_t - s v, eps = s x_t + a v.
// clang-format on
#pragma once
#include <torch/torch.h>

#include <string>

namespace diffuse {

enum class PredictionType { Epsilon, Sample, V };

// "epsilon"/"eps", "sample"/"x0", "v_prediction"/"v"; anything else is an error.
PredictionType parse_prediction_type(const std::string& name);
std::string to_string(PredictionType p);

struct X0Eps {
  torch::Tensor x0, eps;
};

// out, x_t: (B, C, H, W); a, s: tensors broadcastable to them (0-dim for one timestep, (B,1,1,1)
// for a batch of timesteps).
X0Eps split_prediction(PredictionType p, const torch::Tensor& out, const torch::Tensor& x_t,
                       const torch::Tensor& a, const torch::Tensor& s);

// Same with x_0 clamped to [-1, 1] and eps recomputed from the clamped x_0, so that the update
// stays consistent with x_t.
X0Eps split_prediction_clipped(PredictionType p, const torch::Tensor& out, const torch::Tensor& x_t,
                               const torch::Tensor& a, const torch::Tensor& s);

// The training target for prediction type p.
torch::Tensor prediction_target(PredictionType p, const torch::Tensor& x0, const torch::Tensor& eps,
                                const torch::Tensor& a, const torch::Tensor& s);

}  // namespace diffuse
