// GroupNorm with the time-embedding add before it and SiLU after it, the pattern of the U-Net's
// resnets (norm2(h + temb) then SiLU), its output norm and its attention norms (no SiLU).
// On the CPU, and wherever the fused kernel does not apply, it is the ATen composite the modules
// always computed; on CUDA, for channels-last float32/bf16 activations and when enabled, it is
// one fused kernel forward and backward (kernels/group_norm_act.cu).
#pragma once
#include <torch/torch.h>

namespace diffuse {

// The reference composite (any device, any layout), the definition the fused kernel must match:
// x: (B, C, H, W); temb: (B, C) or undefined; weight, bias: (C)
// -> act(group_norm(x + temb[:, :, None, None], groups, weight, bias, eps)), act = SiLU or none.
torch::Tensor group_norm_act_reference(const torch::Tensor& x, const torch::Tensor& temb,
                                       int64_t groups, const torch::Tensor& weight,
                                       const torch::Tensor& bias, double eps, bool silu);

// The fused kernel, with autograd. Checks its input (diffuse::Error naming what is wrong):
// x channels-last float32 or bf16 on CUDA, temb (B, C) (cast to x's dtype), weight and bias (C)
// (used as float32; their gradients come back in their own dtype), C divisible by groups. The
// output has x's dtype and layout.
torch::Tensor group_norm_act_fused(const torch::Tensor& x, const torch::Tensor& temb,
                                   int64_t groups, const torch::Tensor& weight,
                                   const torch::Tensor& bias, double eps, bool silu);

// The fused kernel when it is enabled and applies to x (CUDA, channels-last, float32 or bf16),
// the reference otherwise. What the U-Net calls.
torch::Tensor group_norm_act(const torch::Tensor& x, const torch::Tensor& temb, int64_t groups,
                             const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                             bool silu);

// group_norm_act with a GroupNorm module's groups, eps, weight and bias.
torch::Tensor group_norm_act(const torch::nn::GroupNorm& norm, const torch::Tensor& x,
                             const torch::Tensor& temb, bool silu);

// Whether this build compiled the CUDA kernels (a CUDA LibTorch and nvcc at configure time).
bool fused_group_norm_compiled();
// Process-wide switch for group_norm_act's use of the fused kernel; off by default until the
// kernel has been checked on a GPU (tests/test_models_fused.cpp).
void set_fused_group_norm(bool enabled);
bool fused_group_norm_enabled();

}  // namespace diffuse
