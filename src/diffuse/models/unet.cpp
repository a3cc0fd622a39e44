#include "diffuse/models/unet.h"

#include <algorithm>

#include "diffuse/core/error.h"
#include "diffuse/models/group_norm_act.h"

namespace diffuse {

namespace nn = torch::nn;

namespace {

ResnetBlock2D make_resnet(const UNetConfig& cfg, int64_t in, int64_t out,
                          double output_scale_factor = 1.0) {
  return ResnetBlock2D(in, out, cfg.time_embed_dim(), cfg.norm_num_groups, cfg.norm_eps,
                       cfg.dropout, output_scale_factor);
}

AttentionBlock make_attention(const UNetConfig& cfg, int64_t channels, int64_t groups,
                              double rescale_output_factor = 1.0) {
  return AttentionBlock(channels, cfg.head_dim(channels), groups, cfg.norm_eps,
                        rescale_output_factor);
}

}  // namespace

DownBlockImpl::DownBlockImpl(const UNetConfig& cfg, int64_t level) {
  const auto& ch = cfg.block_out_channels;
  const int64_t in = level == 0 ? ch[0] : ch[level - 1], out = ch[level];
  nn::ModuleList resnets, attentions;
  for (int64_t j = 0; j < cfg.layers_per_block; ++j) {
    resnets_.push_back(make_resnet(cfg, j == 0 ? in : out, out));
    resnets->push_back(resnets_.back());
    if (cfg.down_block_types[level] == "AttnDownBlock2D") {
      attentions_.push_back(make_attention(cfg, out, cfg.norm_num_groups));
      attentions->push_back(attentions_.back());
    }
  }
  // diffusers' registration order, so named_parameters() lists tensors in its order too.
  if (!attentions_.empty()) register_module("attentions", attentions);
  register_module("resnets", resnets);
  if (level + 1 < cfg.levels()) {
    downsampler_ = Downsample2D(out, cfg.downsample_padding);
    register_module("downsamplers", nn::ModuleList(downsampler_));
  }
}

torch::Tensor DownBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb,
                                     std::vector<torch::Tensor>& skips) {
  for (size_t j = 0; j < resnets_.size(); ++j) {
    x = resnets_[j](x, temb);
    if (!attentions_.empty()) x = attentions_[j](x);
    skips.push_back(x);
  }
  if (downsampler_) {
    x = downsampler_(x);
    skips.push_back(x);
  }
  return x;
}

MidBlockImpl::MidBlockImpl(const UNetConfig& cfg) {
  const int64_t c = cfg.block_out_channels.back();
  const double scale = cfg.mid_block_scale_factor;
  if (cfg.add_attention) {
    const int64_t groups =
        cfg.attn_norm_num_groups > 0 ? cfg.attn_norm_num_groups : cfg.norm_num_groups;
    attention_ = make_attention(cfg, c, groups, scale);
    register_module("attentions", nn::ModuleList(attention_));
  }
  nn::ModuleList resnets;
  for (int j = 0; j < 2; ++j) {
    resnets_.push_back(make_resnet(cfg, c, c, scale));
    resnets->push_back(resnets_.back());
  }
  register_module("resnets", resnets);
}

torch::Tensor MidBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb) {
  x = resnets_[0](x, temb);
  if (attention_) x = attention_(x);
  return resnets_[1](x, temb);
}

UpBlockImpl::UpBlockImpl(const UNetConfig& cfg, int64_t index) {
  std::vector<int64_t> rev(cfg.block_out_channels.rbegin(), cfg.block_out_channels.rend());
  const int64_t levels = cfg.levels();
  const int64_t prev_out = rev[std::max<int64_t>(index - 1, 0)], out = rev[index];
  // The channels of the skips this level consumes last: the next-shallower level's output.
  const int64_t in = rev[std::min(index + 1, levels - 1)];
  const int64_t n = cfg.layers_per_block + 1;
  nn::ModuleList resnets, attentions;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t skip_channels = j == n - 1 ? in : out;
    const int64_t x_channels = j == 0 ? prev_out : out;
    resnets_.push_back(make_resnet(cfg, x_channels + skip_channels, out));
    resnets->push_back(resnets_.back());
    if (cfg.up_block_types[index] == "AttnUpBlock2D") {
      attentions_.push_back(make_attention(cfg, out, cfg.norm_num_groups));
      attentions->push_back(attentions_.back());
    }
  }
  if (!attentions_.empty()) register_module("attentions", attentions);
  register_module("resnets", resnets);
  if (index + 1 < levels) {
    upsampler_ = Upsample2D(out);
    register_module("upsamplers", nn::ModuleList(upsampler_));
  }
}

torch::Tensor UpBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb,
                                   std::vector<torch::Tensor>& skips) {
  for (size_t j = 0; j < resnets_.size(); ++j) {
    check(!skips.empty(), "UNet2DModel: ran out of skip connections");
    x = resnets_[j](torch::cat({x, skips.back()}, 1), temb);
    skips.pop_back();
    if (!attentions_.empty()) x = attentions_[j](x);
  }
  return upsampler_ ? upsampler_(x) : x;
}

UNet2DModelImpl::UNet2DModelImpl(UNetConfig cfg) : cfg_(std::move(cfg)) {
  cfg_.validate();
  const auto& ch = cfg_.block_out_channels;
  conv_in = register_module("conv_in",
                            nn::Conv2d(nn::Conv2dOptions(cfg_.in_channels, ch[0], 3).padding(1)));
  time_embedding =
      register_module("time_embedding", TimestepEmbedding(ch[0], cfg_.time_embed_dim()));
  if (cfg_.num_class_embeds > 0)
    class_embedding = register_module("class_embedding",
                                      nn::Embedding(cfg_.num_class_embeds, cfg_.time_embed_dim()));
  down_blocks = register_module("down_blocks", nn::ModuleList());
  for (int64_t i = 0; i < cfg_.levels(); ++i) {
    downs_.push_back(DownBlock(cfg_, i));
    down_blocks->push_back(downs_.back());
  }
  if (!cfg_.mid_block_type.empty()) mid_block = register_module("mid_block", MidBlock(cfg_));
  up_blocks = register_module("up_blocks", nn::ModuleList());
  for (int64_t i = 0; i < cfg_.levels(); ++i) {
    ups_.push_back(UpBlock(cfg_, i));
    up_blocks->push_back(ups_.back());
  }
  conv_norm_out = register_module(
      "conv_norm_out",
      nn::GroupNorm(nn::GroupNormOptions(cfg_.norm_num_groups, ch[0]).eps(cfg_.norm_eps)));
  conv_out = register_module("conv_out",
                             nn::Conv2d(nn::Conv2dOptions(ch[0], cfg_.out_channels, 3).padding(1)));
}

void UNet2DModelImpl::set_channels_last(bool on) {
  channels_last_ = on;
  torch::NoGradGuard no_grad;
  const auto format = on ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  for (auto& p : parameters())
    if (p.dim() == 4 && p.is_cuda()) p.set_data(p.contiguous(format));
}

torch::Tensor UNet2DModelImpl::embed_time(const torch::Tensor& t) {
  auto features = timestep_features(t, cfg_.block_out_channels[0], cfg_.flip_sin_to_cos,
                                    cfg_.freq_shift);  // (B, ch0) float32
  return time_embedding(features.to(time_embedding->linear_1->weight.scalar_type()));
}

UNet2DModelImpl::Inputs UNet2DModelImpl::prepare(torch::Tensor x, torch::Tensor t,
                                                 const torch::Tensor& class_labels) {
  check(x.defined() && x.dim() == 4, "UNet2DModel: input must be (B, C, H, W), got ",
        x.defined() ? x.sizes() : torch::IntArrayRef{});
  check(x.is_floating_point(), "UNet2DModel: input must be floating point, got ", x.dtype());
  const int64_t B = x.size(0), m = cfg_.size_multiple();
  check(x.size(1) == cfg_.in_channels, "UNet2DModel: input has ", x.size(1),
        " channels but the model takes ", cfg_.in_channels);
  check(x.size(2) > 0 && x.size(3) > 0 && x.size(2) % m == 0 && x.size(3) % m == 0,
        "UNet2DModel: input size ", x.size(2), "x", x.size(3), " is not a positive multiple of ", m,
        " (2^(levels - 1))");
  check(t.defined() && t.dim() <= 1, "UNet2DModel: timesteps must be (B) or a scalar, got ",
        t.defined() ? t.sizes() : torch::IntArrayRef{});
  check(!t.is_complex() && t.scalar_type() != torch::kBool,
        "UNet2DModel: timesteps must be real numbers, got ", t.dtype());
  t = t.to(x.device()).reshape({-1});
  check(t.size(0) == B || t.size(0) == 1, "UNet2DModel: ", t.size(0), " timesteps for a batch of ",
        B);
  if (t.size(0) != B) t = t.expand({B});

  x = x.to(conv_in->weight.scalar_type());
  if (channels_last_ && x.is_cuda()) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  if (cfg_.center_input_sample) x = 2 * x - 1.0;

  auto emb = embed_time(t);  // (B, time_embed_dim)
  if (class_embedding) {
    check(class_labels.defined(), "UNet2DModel: this model is class-conditional (",
          cfg_.num_class_embeds, " classes): class labels are required");
    check(class_labels.dim() == 1 && class_labels.size(0) == B,
          "UNet2DModel: class labels must be (B) = (", B, "), got ", class_labels.sizes());
    auto labels = class_labels.to(x.device(), torch::kInt64);
    // Labels are range-checked where they enter (the data's labels, --class, the null class).
    // Here the check runs on the CPU only: on CUDA it would be a host sync every forward, which
    // also forbids capturing the training step; there the embedding kernel's own device-side
    // assertion is what remains.
    if (B > 0 && !labels.is_cuda()) {
      const auto lo = labels.min().item<int64_t>(), hi = labels.max().item<int64_t>();
      check(lo >= 0 && hi < cfg_.num_class_embeds, "UNet2DModel: class labels must be in [0, ",
            cfg_.num_class_embeds, "), got values in [", lo, ", ", hi, "]");
    }
    emb = emb + class_embedding(labels).to(emb.scalar_type());
  } else {
    check(!class_labels.defined(),
          "UNet2DModel: class labels given but the model is not class-conditional");
  }

  return {x, emb};
}

torch::Tensor UNet2DModelImpl::forward(torch::Tensor x, torch::Tensor t,
                                       torch::Tensor class_labels) {
  auto in = prepare(std::move(x), std::move(t), class_labels);
  const auto& emb = in.emb;
  auto h = conv_in(in.x);  // (B, ch0, H, W)
  std::vector<torch::Tensor> skips{h};
  for (auto& down : downs_) h = down(h, emb, skips);
  if (mid_block) h = mid_block(h, emb);
  for (auto& up : ups_) h = up(h, emb, skips);
  return conv_out(group_norm_act(conv_norm_out, h, {}, true));  // (B, out_channels, H, W)
}

}  // namespace diffuse
