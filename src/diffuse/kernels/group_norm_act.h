// GroupNorm fused with the time-embedding add before it and SiLU after it, forward and backward,
// on NHWC (channels-last) activations: the pattern of every ResnetBlock2D,
//   y = SiLU(GroupNorm(x + temb[:, :, None, None]) * gamma + beta)      (Ho et al., appendix B),
// in one read for the statistics and one read + write for the output. Statistics are float32
// whatever the activation dtype; activations are float32 or bf16.
//
// Plain CUDA: no LibTorch headers, so nvcc compiles it in seconds. models/group_norm_act.cpp
// checks shapes, allocates with LibTorch and wraps forward and backward in an autograd function.
// Every reduction runs in a fixed order (per-block partials, then one block per (sample, group)),
// so results are deterministic and every launch can be captured in a CUDA graph.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace diffuse::kernels {

enum class Dtype { Float32, BFloat16 };

// x: (n, hw, c) in memory order, i.e. an NHWC tensor (B, C, H, W) with hw = H * W.
struct GroupNormShape {
  int64_t n = 0, hw = 0, c = 0, groups = 1;
};

// Whether the kernels accept the shape (c divisible by groups, n below the grid limit); the
// wrapper turns a false into an error message.
bool group_norm_shape_ok(const GroupNormShape& s);

// Floats of device scratch the forward and the backward each need.
int64_t group_norm_act_workspace(const GroupNormShape& s);

// Pixels one block of the activation kernels covers (8 to 128, more at larger batches); tests use
// it to show their shapes reach the multi-row path.
int64_t group_norm_pixels_per_block(const GroupNormShape& s);

// y = act((x + temb - mean) * rstd * gamma + beta), act = SiLU or identity.
// x: (n, hw, c) of x_dtype; y: (n, hw, c) of y_dtype (float32 under autocast, as ATen's
// group_norm); temb: (n, c) float32 or nullptr; gamma, beta: (c) float32; mean, rstd: (n, groups)
// float32 outputs, kept for the backward.
cudaError_t group_norm_act_forward(Dtype x_dtype, Dtype y_dtype, const GroupNormShape& s,
                                   const void* x, const float* temb, const float* gamma,
                                   const float* beta, float eps, bool silu, void* y, float* mean,
                                   float* rstd, float* workspace, cudaStream_t stream);

// Gradients of the forward above from dy (n, hw, c) of dy_dtype, read as it is (all sums in
// float32 and double): dx (n, hw, c) of x_dtype; dtemb (n, c) float32 (only when temb is given;
// may be nullptr otherwise); dgamma, dbeta (c) float32.
cudaError_t group_norm_act_backward(Dtype x_dtype, Dtype dy_dtype, const GroupNormShape& s,
                                    const void* dy, const void* x, const float* temb,
                                    const float* gamma, const float* beta, const float* mean,
                                    const float* rstd, bool silu, void* dx, float* dtemb,
                                    float* dgamma, float* dbeta, float* workspace,
                                    cudaStream_t stream);

}  // namespace diffuse::kernels
