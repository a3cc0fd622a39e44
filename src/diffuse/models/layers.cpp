#include "diffuse/models/layers.h"

#include <cmath>

#include "diffuse/core/compat.h"
#include "diffuse/core/error.h"
#include "diffuse/models/group_norm_act.h"

namespace diffuse {

namespace nn = torch::nn;

torch::Tensor timestep_features(const torch::Tensor& t, int64_t dim, bool flip_sin_to_cos,
                                double freq_shift) {
  check(t.dim() == 1, "timestep_features: timesteps must be 1-D (B), got ", t.sizes());
  check(dim >= 2, "timestep_features: dim must be >= 2, got ", dim);
  const int64_t half = dim / 2;
  // The same float32 operations in the same order as diffusers, so float32 results agree to the
  // last bit or two: exponents and frequencies are float32 even for a float64 model.
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(t.device());
  auto exponent = torch::arange(half, opts) * (-std::log(10000.0));
  exponent = exponent / (static_cast<double>(half) - freq_shift);
  auto freqs = torch::exp(exponent);                                    // (half)
  auto args = t.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);  // (B, half)
  auto emb = flip_sin_to_cos ? torch::cat({torch::cos(args), torch::sin(args)}, 1)
                             : torch::cat({torch::sin(args), torch::cos(args)}, 1);
  if (dim % 2 == 1) emb = torch::constant_pad_nd(emb, {0, 1});
  return emb;  // (B, dim)
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_features, int64_t embed_dim) {
  linear_1 = register_module("linear_1", nn::Linear(in_features, embed_dim));
  linear_2 = register_module("linear_2", nn::Linear(embed_dim, embed_dim));
}

torch::Tensor TimestepEmbeddingImpl::forward(const torch::Tensor& x) {
  return linear_2(torch::silu(linear_1(x)));
}

ResnetBlock2DImpl::ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels,
                                     int64_t temb_channels, int64_t groups, double eps,
                                     double dropout_p, double output_scale_factor)
    : output_scale_factor_(output_scale_factor) {
  auto conv3 = [](int64_t in, int64_t out) {
    return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(1).padding(1));
  };
  norm1 =
      register_module("norm1", nn::GroupNorm(nn::GroupNormOptions(groups, in_channels).eps(eps)));
  conv1 = register_module("conv1", conv3(in_channels, out_channels));
  time_emb_proj = register_module("time_emb_proj", nn::Linear(temb_channels, out_channels));
  norm2 =
      register_module("norm2", nn::GroupNorm(nn::GroupNormOptions(groups, out_channels).eps(eps)));
  dropout = register_module("dropout", nn::Dropout(dropout_p));
  conv2 = register_module("conv2", conv3(out_channels, out_channels));
  if (in_channels != out_channels)
    conv_shortcut = register_module("conv_shortcut",
                                    nn::Conv2d(nn::Conv2dOptions(in_channels, out_channels, 1)));
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  auto h = conv1(group_norm_act(norm1, x, {}, true));  // (B, out, H, W)
  // SiLU(norm2(h + temb[:, :, None, None])), one fused kernel on CUDA.
  h = conv2(dropout(group_norm_act(norm2, h, time_emb_proj(torch::silu(temb)), true)));
  auto skip = conv_shortcut ? conv_shortcut(x) : x;
  auto out = skip + h;
  return output_scale_factor_ == 1.0 ? out : out / output_scale_factor_;
}

AttentionBlockImpl::AttentionBlockImpl(int64_t channels, int64_t head_dim, int64_t groups,
                                       double eps, double rescale_output_factor)
    : rescale_output_factor_(rescale_output_factor) {
  check(head_dim > 0 && channels % head_dim == 0, "attention: head dim ", head_dim,
        " does not divide ", channels, " channels");
  heads_ = channels / head_dim;
  group_norm =
      register_module("group_norm", nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(eps)));
  to_q = register_module("to_q", nn::Linear(channels, channels));
  to_k = register_module("to_k", nn::Linear(channels, channels));
  to_v = register_module("to_v", nn::Linear(channels, channels));
  out_proj = nn::Linear(channels, channels);
  to_out = register_module("to_out", nn::ModuleList(out_proj));
}

torch::Tensor AttentionBlockImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), L = H * W;
  const int64_t d = C / heads_;
  // (B, C, H, W) -> (B, L, C): one token per position.
  auto h = group_norm_act(group_norm, x, {}, false).reshape({B, C, L}).transpose(1, 2);
  auto split_heads = [&](const torch::Tensor& y) {  // (B, L, C) -> (B, heads, L, d)
    return y.reshape({B, L, heads_, d}).transpose(1, 2);
  };
  auto q = split_heads(to_q(h)), k = split_heads(to_k(h)), v = split_heads(to_v(h));
  auto o = attention(q, k, v).to(q.scalar_type());     // (B, heads, L, d)
  o = out_proj(o.transpose(1, 2).reshape({B, L, C}));  // (B, L, C)
  auto out = o.transpose(1, 2).reshape({B, C, H, W}) + x;
  return rescale_output_factor_ == 1.0 ? out : out / rescale_output_factor_;
}

Downsample2DImpl::Downsample2DImpl(int64_t channels, int64_t padding) : padding_(padding) {
  conv = register_module(
      "conv", nn::Conv2d(nn::Conv2dOptions(channels, channels, 3).stride(2).padding(padding)));
}

torch::Tensor Downsample2DImpl::forward(const torch::Tensor& x) {
  if (padding_ == 0) return conv(torch::constant_pad_nd(x, {0, 1, 0, 1}));
  return conv(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels) {
  conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(channels, channels, 3).padding(1)));
}

torch::Tensor Upsample2DImpl::forward(const torch::Tensor& x) {
  return conv(upsample_nearest2x(x));
}

torch::Tensor upsample_nearest2x(const torch::Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  // The reshapes below would turn an NHWC tensor into NCHW; ATen's nearest upsampling keeps
  // the layout and copies the same values.
  if (x.is_cuda() && x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous()) {
    const std::vector<int64_t> size{2 * H, 2 * W};
    return torch::upsample_nearest2d(x, at::IntArrayRef(size));
  }
  // (B, C, H, 1, W, 1) -> (B, C, H, 2, W, 2) -> (B, C, 2H, 2W)
  return x.reshape({B, C, H, 1, W, 1}).expand({B, C, H, 2, W, 2}).reshape({B, C, 2 * H, 2 * W});
}

}  // namespace diffuse
