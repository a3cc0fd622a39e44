#include "diffuse/models/group_norm_act.h"

#include <ATen/autocast_mode.h>

#include <atomic>

#include "diffuse/core/compat.h"
#include "diffuse/core/error.h"

#ifdef DIFFUSE_WITH_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "diffuse/kernels/group_norm_act.h"
#endif

namespace diffuse {

namespace {

std::atomic<bool> g_fused_enabled{false};

bool fused_dtype(const torch::Tensor& x) {
  return x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16;
}

bool cuda_autocast_on() {
#if DIFFUSE_HAS_DEVICE_AUTOCAST
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

// Everything group_norm_act_fused requires, checked before anything touches a device.
void validate_fused(const torch::Tensor& x, const torch::Tensor& temb, int64_t groups,
                    const torch::Tensor& weight, const torch::Tensor& bias) {
  check(x.defined() && x.dim() == 4, "group_norm_act: input must be (B, C, H, W), got ",
        x.defined() ? x.sizes() : torch::IntArrayRef{});
  check(fused_dtype(x), "group_norm_act: the fused kernel takes float32 or bfloat16, got ",
        x.scalar_type());
  const int64_t B = x.size(0), C = x.size(1);
  check(B >= 1 && C >= 1 && x.size(2) >= 1 && x.size(3) >= 1,
        "group_norm_act: the fused kernel needs a non-empty input, got ", x.sizes());
  check(B <= 65535, "group_norm_act: the fused kernel takes at most 65535 samples, got ", B);
  check(groups >= 1 && C % groups == 0, "group_norm_act: ", groups, " groups do not divide ", C,
        " channels");
  check(x.is_contiguous(at::MemoryFormat::ChannelsLast),
        "group_norm_act: the fused kernel needs a channels-last (NHWC) input");
  check(weight.defined() && bias.defined() && weight.dim() == 1 && bias.dim() == 1 &&
            weight.size(0) == C && bias.size(0) == C,
        "group_norm_act: weight and bias must be (", C, ")");
  if (temb.defined())
    check(temb.dim() == 2 && temb.size(0) == B && temb.size(1) == C,
          "group_norm_act: time embedding must be (B, C) = (", B, ", ", C, "), got ", temb.sizes());
  check(fused_group_norm_compiled(),
        "group_norm_act: this build has no CUDA kernels (it needs a CUDA LibTorch and nvcc)");
  check(x.is_cuda(), "group_norm_act: the fused kernel needs a CUDA tensor, got one on ",
        x.device());
  for (const auto* t : {&temb, &weight, &bias})
    check(!t->defined() || t->device() == x.device(),
          "group_norm_act: time embedding, weight "
          "and bias must be on the input's device ",
          x.device());
}

#ifdef DIFFUSE_WITH_CUDA_KERNELS

kernels::Dtype kernel_dtype(torch::ScalarType t) {
  return t == torch::kBFloat16 ? kernels::Dtype::BFloat16 : kernels::Dtype::Float32;
}

kernels::GroupNormShape kernel_shape(const torch::Tensor& x, int64_t groups) {
  kernels::GroupNormShape s;
  s.n = x.size(0);
  s.c = x.size(1);
  s.hw = x.size(2) * x.size(3);
  s.groups = groups;
  return s;
}

void check_launch(cudaError_t err, const char* what) {
  check(err == cudaSuccess, "group_norm_act: ", what, " kernel failed: ", cudaGetErrorString(err));
}

struct ForwardOut {
  torch::Tensor y, mean, rstd;
};

// x: NHWC (B, C, H, W); temb: (B, C) contiguous float32 or undefined; w, b: (C) float32.
ForwardOut launch_forward(const torch::Tensor& x, const torch::Tensor& temb, int64_t groups,
                          const torch::Tensor& w, const torch::Tensor& b, double eps, bool silu,
                          torch::ScalarType y_dtype) {
  c10::cuda::CUDAGuard guard(x.device());
  const auto s = kernel_shape(x, groups);
  auto f32 = x.options().dtype(torch::kFloat32);
  ForwardOut o;
  o.y = torch::empty_like(x, x.options().dtype(y_dtype), at::MemoryFormat::ChannelsLast);
  o.mean = torch::empty({s.n, groups}, f32);
  o.rstd = torch::empty({s.n, groups}, f32);
  auto ws = torch::empty({kernels::group_norm_act_workspace(s)}, f32);
  check_launch(kernels::group_norm_act_forward(
                   kernel_dtype(x.scalar_type()), kernel_dtype(y_dtype), s, x.data_ptr(),
                   temb.defined() ? temb.data_ptr<float>() : nullptr, w.data_ptr<float>(),
                   b.data_ptr<float>(), static_cast<float>(eps), silu, o.y.data_ptr(),
                   o.mean.data_ptr<float>(), o.rstd.data_ptr<float>(), ws.data_ptr<float>(),
                   c10::cuda::getCurrentCUDAStream(x.device().index())),
               "forward");
  return o;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class GroupNormActFunction : public torch::autograd::Function<GroupNormActFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& temb, const torch::Tensor& weight,
                               const torch::Tensor& bias, int64_t groups, double eps, bool silu,
                               int64_t y_dtype) {
    auto t = temb.defined() ? temb.to(torch::kFloat32).contiguous() : torch::Tensor();
    auto w = weight.to(torch::kFloat32).contiguous(), b = bias.to(torch::kFloat32).contiguous();
    auto o = launch_forward(x, t, groups, w, b, eps, silu, static_cast<torch::ScalarType>(y_dtype));
    ctx->save_for_backward({x, t, w, b, o.mean, o.rstd});
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["silu"] = silu;
    ctx->saved_data["temb_dtype"] =
        static_cast<int64_t>(temb.defined() ? temb.scalar_type() : x.scalar_type());
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    ctx->saved_data["bias_dtype"] = static_cast<int64_t>(bias.scalar_type());
    return o.y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &t = saved[1], &w = saved[2], &b = saved[3];
    const auto &mean = saved[4], &rstd = saved[5];
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const bool silu = ctx->saved_data["silu"].toBool();
    auto dtype_of = [&](const char* key) {
      return static_cast<torch::ScalarType>(ctx->saved_data[key].toInt());
    };
    if (!grads[0].defined()) return variable_list(8);
    // dy as it comes (float32 under autocast): rounding it to x's bf16 would cost the parameter
    // and time-embedding gradients, sums over many pixels, their precision.
    auto dy = grads[0];
    if (!fused_dtype(dy)) dy = dy.to(torch::kFloat32);
    dy = dy.contiguous(at::MemoryFormat::ChannelsLast);
    c10::cuda::CUDAGuard guard(x.device());
    const auto s = kernel_shape(x, groups);
    auto f32 = x.options().dtype(torch::kFloat32);
    auto dx = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
    auto dtemb = t.defined() ? torch::empty({s.n, s.c}, f32) : torch::Tensor();
    auto dgamma = torch::empty({s.c}, f32), dbeta = torch::empty({s.c}, f32);
    auto ws = torch::empty({kernels::group_norm_act_workspace(s)}, f32);
    check_launch(
        kernels::group_norm_act_backward(
            kernel_dtype(x.scalar_type()), kernel_dtype(dy.scalar_type()), s, dy.data_ptr(),
            x.data_ptr(), t.defined() ? t.data_ptr<float>() : nullptr, w.data_ptr<float>(),
            b.data_ptr<float>(), mean.data_ptr<float>(), rstd.data_ptr<float>(), silu,
            dx.data_ptr(), t.defined() ? dtemb.data_ptr<float>() : nullptr,
            dgamma.data_ptr<float>(), dbeta.data_ptr<float>(), ws.data_ptr<float>(),
            c10::cuda::getCurrentCUDAStream(x.device().index())),
        "backward");
    return {dx,
            t.defined() ? dtemb.to(dtype_of("temb_dtype")) : torch::Tensor(),
            dgamma.to(dtype_of("weight_dtype")),
            dbeta.to(dtype_of("bias_dtype")),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

#endif

}  // namespace

torch::Tensor group_norm_act_reference(const torch::Tensor& x, const torch::Tensor& temb,
                                       int64_t groups, const torch::Tensor& weight,
                                       const torch::Tensor& bias, double eps, bool silu) {
  // The operations nn::GroupNorm and the blocks always ran, in the same order, so CPU results are
  // bit for bit those of before.
  auto h = temb.defined() ? x + temb.unsqueeze(-1).unsqueeze(-1) : x;
  h = torch::group_norm(h, groups, weight, bias, eps, at::globalContext().userEnabledCuDNN());
  return silu ? torch::silu(h) : h;
}

torch::Tensor group_norm_act_fused(const torch::Tensor& x, const torch::Tensor& temb,
                                   int64_t groups, const torch::Tensor& weight,
                                   const torch::Tensor& bias, double eps, bool silu) {
  validate_fused(x, temb, groups, weight, bias);
#ifdef DIFFUSE_WITH_CUDA_KERNELS
  const bool needs_grad = torch::GradMode::is_enabled() &&
                          (x.requires_grad() || (temb.defined() && temb.requires_grad()) ||
                           weight.requires_grad() || bias.requires_grad());
  const auto y_dtype = group_norm_act_output_dtype(x, temb);
  if (needs_grad)
    return GroupNormActFunction::apply(x, temb, weight, bias, groups, eps, silu,
                                       static_cast<int64_t>(y_dtype));
  auto t = temb.defined() ? temb.to(torch::kFloat32).contiguous() : torch::Tensor();
  return launch_forward(x, t, groups, weight.to(torch::kFloat32).contiguous(),
                        bias.to(torch::kFloat32).contiguous(), eps, silu, y_dtype)
      .y;
#else
  fail("group_norm_act: unreachable without CUDA kernels");
#endif
}

torch::ScalarType group_norm_act_output_dtype(const torch::Tensor& x, const torch::Tensor& temb) {
  // Autocast runs group_norm in float32 (its fp32 cast policy); otherwise x + temb promotes.
  if (cuda_autocast_on()) return torch::kFloat32;
  return temb.defined() ? at::promote_types(x.scalar_type(), temb.scalar_type()) : x.scalar_type();
}

bool group_norm_act_fusable(const torch::Tensor& x, const torch::Tensor& temb, int64_t groups,
                            const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!x.defined() || x.dim() != 4 || x.numel() == 0 || !fused_dtype(x) || x.size(0) > 65535 ||
      groups < 1 || x.size(1) % groups != 0 || !x.is_contiguous(at::MemoryFormat::ChannelsLast))
    return false;
  const int64_t B = x.size(0), C = x.size(1);
  // affine=false norms have no weight and bias; the kernel needs both.
  for (const auto* p : {&weight, &bias})
    if (!p->defined() || p->dim() != 1 || p->size(0) != C || !p->is_floating_point() ||
        p->device() != x.device())
      return false;
  if (temb.defined() && (temb.dim() != 2 || temb.size(0) != B || temb.size(1) != C ||
                         !fused_dtype(temb) || temb.device() != x.device()))
    return false;
  return true;
}

torch::Tensor group_norm_act(const torch::Tensor& x, const torch::Tensor& temb, int64_t groups,
                             const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                             bool silu) {
  const bool fused = fused_group_norm_enabled() && x.defined() && x.is_cuda() &&
                     group_norm_act_fusable(x, temb, groups, weight, bias);
  if (fused) return group_norm_act_fused(x, temb, groups, weight, bias, eps, silu);
  return group_norm_act_reference(x, temb, groups, weight, bias, eps, silu);
}

torch::Tensor group_norm_act(const torch::nn::GroupNorm& norm, const torch::Tensor& x,
                             const torch::Tensor& temb, bool silu) {
  const auto& o = norm->options;
  return group_norm_act(x, temb, o.num_groups(), norm->weight, norm->bias, o.eps(), silu);
}

int64_t fused_group_norm_pixels_per_block(int64_t batch, int64_t channels, int64_t pixels) {
#ifdef DIFFUSE_WITH_CUDA_KERNELS
  kernels::GroupNormShape s;
  s.n = batch;
  s.c = channels;
  s.hw = pixels;
  return kernels::group_norm_pixels_per_block(s);
#else
  (void)batch, (void)channels, (void)pixels;
  return 0;
#endif
}

bool fused_group_norm_compiled() {
#ifdef DIFFUSE_WITH_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

void set_fused_group_norm(bool enabled) {
  g_fused_enabled = enabled;
}

bool fused_group_norm_enabled() {
  return g_fused_enabled && fused_group_norm_compiled();
}

}  // namespace diffuse
