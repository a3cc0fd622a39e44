// The building blocks of the DDPM U-Net (Ho et al. 2020, appendix B), each computing what the
// diffusers module of the same name computes, with its submodules under diffusers' names so
// state-dict keys match (norm1, conv1, time_emb_proj, to_q, to_out.0, ...).
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace diffuse {

// Sinusoidal timestep features (the Transformer's positional encoding, DDPM sec. 4):
// for i < half = dim / 2, freq_i = exp(-ln(10000) i / (half - freq_shift)), and the features are
// [sin(t freq), cos(t freq)], or [cos, sin] when flip_sin_to_cos; an odd dim gets a zero column.
// Computed in float32 in diffusers' order of operations, as diffusers does for every model dtype.
// t: (B) any real dtype -> (B, dim) float32.
torch::Tensor timestep_features(const torch::Tensor& t, int64_t dim, bool flip_sin_to_cos,
                                double freq_shift);

// The MLP on the timestep features: linear_1, SiLU, linear_2.
class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  TimestepEmbeddingImpl(int64_t in_features, int64_t embed_dim);
  // x: (B, in_features) -> (B, embed_dim)
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

// Pre-activation residual block with the time embedding added between the two convolutions:
// h = conv1(SiLU(norm1(x))) + time_emb_proj(SiLU(temb)); h = conv2(dropout(SiLU(norm2(h))));
// out = (shortcut(x) + h) / output_scale_factor, shortcut a 1x1 conv when the width changes.
class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t temb_channels,
                    int64_t groups, double eps, double dropout, double output_scale_factor = 1.0);
  // x: (B, in, H, W), temb: (B, temb_channels) -> (B, out, H, W)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb);
  double output_scale_factor() const { return output_scale_factor_; }

  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};
  torch::nn::Dropout dropout{nullptr};

 private:
  double output_scale_factor_;
};
TORCH_MODULE(ResnetBlock2D);

// Self-attention over the H*W positions (diffusers' Attention as the U-Net uses it): group_norm,
// to_q / to_k / to_v, softmax(q k^T / sqrt(d)) v per head, to_out.0, plus the input, divided by
// rescale_output_factor. head_dim must divide channels; heads = channels / head_dim.
class AttentionBlockImpl : public torch::nn::Module {
 public:
  AttentionBlockImpl(int64_t channels, int64_t head_dim, int64_t groups, double eps,
                     double rescale_output_factor = 1.0);
  // x: (B, C, H, W) -> (B, C, H, W)
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, out_proj{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // [out_proj], so its keys read to_out.0.*

  int64_t heads() const { return heads_; }
  double rescale_output_factor() const { return rescale_output_factor_; }

 private:
  int64_t heads_;
  double rescale_output_factor_;
};
TORCH_MODULE(AttentionBlock);

// 3x3 convolution with stride 2. padding 1 pads all sides; padding 0 pads only right and bottom
// by one first, as the TensorFlow "SAME" convolution of the original DDPM code.
class Downsample2DImpl : public torch::nn::Module {
 public:
  Downsample2DImpl(int64_t channels, int64_t padding);
  // x: (B, C, H, W) -> (B, C, H/2, W/2) for even H, W
  torch::Tensor forward(const torch::Tensor& x);
  int64_t padding() const { return padding_; }

  torch::nn::Conv2d conv{nullptr};

 private:
  int64_t padding_;
};
TORCH_MODULE(Downsample2D);

// Nearest-neighbour 2x upsampling followed by a 3x3 convolution.
class Upsample2DImpl : public torch::nn::Module {
 public:
  explicit Upsample2DImpl(int64_t channels);
  // x: (B, C, H, W) -> (B, C, 2H, 2W)
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

// x: (B, C, H, W) -> (B, C, 2H, 2W), each pixel repeated 2x2 (nearest, scale 2), any dtype.
torch::Tensor upsample_nearest2x(const torch::Tensor& x);

}  // namespace diffuse
