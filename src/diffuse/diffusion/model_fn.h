// The network as the diffusion math sees it: one function type for every caller (samplers, the
// bound, evaluation), whatever is behind it (a U-Net, a captured CUDA graph, classifier-free
// guidance, an analytic model in a test). pipeline/model_fn.h adapts the U-Net to it.
#pragma once
#include <torch/torch.h>

#include <functional>

namespace diffuse {

// x_t (B, C, H, W), t (B) int64 on x_t's device -> the network output in x_t's dtype: (B, C, H, W),
// or (B, 2C, H, W) for a learned-range model (the prediction, then v in [-1, 1] interpolating the
// log-variance, Nichol & Dhariwal eq. 15).
using ModelFn = std::function<torch::Tensor(const torch::Tensor& x_t, const torch::Tensor& t)>;

}  // namespace diffuse
