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
// x channels-last float32 or bf16 on CUDA, temb (B, C) (used as float32; its gradient comes back
// in its dtype), weight and bias (C) (used as float32; likewise), C divisible by groups. The
// output has x's layout and group_norm_act_output_dtype's dtype; all sums are float32 or double.
torch::Tensor group_norm_act_fused(const torch::Tensor& x, const torch::Tensor& temb,
                                   int64_t groups, const torch::Tensor& weight,
                                   const torch::Tensor& bias, double eps, bool silu);

// The dtype of the fused output, ATen's for the reference: float32 under CUDA autocast (ATen's
// group_norm is on autocast's float32 list), else x's dtype promoted with temb's.
torch::ScalarType group_norm_act_output_dtype(const torch::Tensor& x, const torch::Tensor& temb);

// Whether the fused kernel takes these arguments (anything else falls back to the reference):
// x (B, C, H, W) channels-last float32 or bf16, B <= 65535, C divisible by groups; weight and
// bias defined (C) floating on x's device (an affine=false norm has neither); temb undefined or
// (B, C) float32 or bf16 on x's device. The device itself is not checked.
bool group_norm_act_fusable(const torch::Tensor& x, const torch::Tensor& temb, int64_t groups,
                            const torch::Tensor& weight, const torch::Tensor& bias);

// The fused kernel when it is enabled, x is on CUDA and group_norm_act_fusable holds; the
// reference otherwise. What the U-Net calls.
torch::Tensor group_norm_act(const torch::Tensor& x, const torch::Tensor& temb, int64_t groups,
                             const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                             bool silu);

// group_norm_act with a GroupNorm module's groups, eps, weight and bias.
torch::Tensor group_norm_act(const torch::nn::GroupNorm& norm, const torch::Tensor& x,
                             const torch::Tensor& temb, bool silu);

// Pixels one block of the fused kernels covers for a (batch, channels, H * W = pixels) input:
// 8 at small sizes, up to 128 (the multi-row path) at production ones; 0 without the kernels.
int64_t fused_group_norm_pixels_per_block(int64_t batch, int64_t channels, int64_t pixels);

// Whether this build compiled the CUDA kernels (a CUDA LibTorch and nvcc at configure time).
bool fused_group_norm_compiled();
// Process-wide switch for group_norm_act's use of the fused kernel; off by default until the
// kernel has been checked on a GPU (tests/test_models_fused.cpp).
void set_fused_group_norm(bool enabled);
bool fused_group_norm_enabled();

}  // namespace diffuse
