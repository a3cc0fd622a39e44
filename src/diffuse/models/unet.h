// The DDPM U-Net (Ho et al. 2020, appendix B) exactly as diffusers' UNet2DModel computes it, with
// diffusers' module tree, so its state-dict keys are diffusers' keys
// (down_blocks.1.attentions.0.to_q.weight, mid_block.resnets.0.conv1.bias, ...).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "diffuse/models/layers.h"
#include "diffuse/models/unet_config.h"

namespace diffuse {

// One encoder level: layers_per_block resnets (each followed by attention in AttnDownBlock2D),
// then a stride-2 downsampler except at the deepest level. Keys: resnets.i, attentions.i,
// downsamplers.0.
class DownBlockImpl : public torch::nn::Module {
 public:
  DownBlockImpl(const UNetConfig& cfg, int64_t level);
  // x: (B, in, H, W) -> (B, out, H', W'); appends each resnet/attention output and the
  // downsampled output to skips (the U-Net's skip connections).
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb,
                        std::vector<torch::Tensor>& skips);

  const std::vector<ResnetBlock2D>& resnets() const { return resnets_; }
  const std::vector<AttentionBlock>& attentions() const { return attentions_; }
  const Downsample2D& downsampler() const { return downsampler_; }

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<AttentionBlock> attentions_;
  Downsample2D downsampler_{nullptr};
};
TORCH_MODULE(DownBlock);

// The bottleneck: resnet, attention (unless add_attention is false), resnet, all scaled by
// mid_block_scale_factor.
class MidBlockImpl : public torch::nn::Module {
 public:
  explicit MidBlockImpl(const UNetConfig& cfg);
  // x: (B, C, H, W) -> (B, C, H, W)
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb);

  const std::vector<ResnetBlock2D>& resnets() const { return resnets_; }
  const AttentionBlock& attention() const { return attention_; }

 private:
  std::vector<ResnetBlock2D> resnets_;
  AttentionBlock attention_{nullptr};
};
TORCH_MODULE(MidBlock);

// One decoder level, counted from the deepest (up_blocks.0): layers_per_block + 1 resnets, each
// taking the concatenation of the running features and one skip (popped from the back), each
// followed by attention in AttnUpBlock2D, then a 2x upsampler except at the last (full-size) level.
class UpBlockImpl : public torch::nn::Module {
 public:
  UpBlockImpl(const UNetConfig& cfg, int64_t index);
  // x: (B, prev, H, W) -> (B, out, 2H, 2W) (or (B, out, H, W) at the last level).
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb,
                        std::vector<torch::Tensor>& skips);

  const std::vector<ResnetBlock2D>& resnets() const { return resnets_; }
  const std::vector<AttentionBlock>& attentions() const { return attentions_; }
  const Upsample2D& upsampler() const { return upsampler_; }

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<AttentionBlock> attentions_;
  Upsample2D upsampler_{nullptr};
};
TORCH_MODULE(UpBlock);

class UNet2DModelImpl : public torch::nn::Module {
 public:
  // Validates cfg (diffuse::Error on a bad field). Parameters use LibTorch's default (PyTorch's)
  // initialisation, as diffusers' does.
  explicit UNet2DModelImpl(UNetConfig cfg);

  // x: (B, in_channels, H, W) with H, W multiples of 2^(levels - 1), cast to the parameters'
  // dtype; t: (B) or 0-dim (or (1)), any real dtype, broadcast to B; class_labels: (B) int64,
  // required exactly when num_class_embeds > 0. -> (B, out_channels, H, W).
  torch::Tensor forward(torch::Tensor x, torch::Tensor t, torch::Tensor class_labels = {});

  // What forward does before conv_in, with its checks: x cast to the parameters' dtype (and
  // centred when center_input_sample), and the embedding (B, time_embed_dim) every resnet gets:
  // the timestep embedding plus the class embedding. Other inference paths (cpu/unet_engine.h)
  // start from it.
  struct Inputs {
    torch::Tensor x, emb;
  };
  Inputs prepare(torch::Tensor x, torch::Tensor t, const torch::Tensor& class_labels);

  // The timestep embedding fed to every resnet: t (B) -> (B, time_embed_dim), in the
  // parameters' dtype.
  torch::Tensor embed_time(const torch::Tensor& t);

  const UNetConfig& config() const { return cfg_; }

  // On CUDA, channels-last (NHWC) memory for the 4-D weights and for the input, so cuDNN runs
  // its NHWC convolutions without transposes around them and group_norm_act can use its fused
  // kernel. Converts the parameters already on CUDA (call it after moving the model); CPU
  // parameters and inputs are left as they are, so CPU results do not change.
  void set_channels_last(bool on);
  bool channels_last() const { return channels_last_; }
  const std::vector<DownBlock>& downs() const { return downs_; }
  const std::vector<UpBlock>& ups() const { return ups_; }

  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  torch::nn::Embedding class_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  MidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};

 private:
  UNetConfig cfg_;
  bool channels_last_ = false;
  std::vector<DownBlock> downs_;
  std::vector<UpBlock> ups_;
};
TORCH_MODULE(UNet2DModel);

}  // namespace diffuse
