// DnnlUNet: UNet2DModelImpl::forward (models/unet.cpp) step for step on the packed layers.
#include <cstring>
#include <optional>

#include "diffuse/core/error.h"
#include "diffuse/cpu/dnnl_layers.h"
#include "diffuse/cpu/unet_engine.h"

namespace diffuse {

using cpu::Act;
using cpu::Attention;
using cpu::Conv;
using cpu::Ctx;
using cpu::Norm;

namespace {

// out = (shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x))) + temb)))) / output_scale_factor:
// the shortcut (or a copy of x) is written first and conv2 adds onto it and scales.
class Resnet {
 public:
  Resnet(const Ctx* ctx, const ResnetBlock2D& r, int64_t temb_offset)
      : ctx_(ctx),
        norm1_(r->norm1),
        norm2_(r->norm2),
        conv1_(ctx, r->conv1, {}, {}),
        conv2_(ctx, r->conv2, {}, {true, static_cast<float>(1.0 / r->output_scale_factor())}),
        temb_offset_(temb_offset) {
    if (r->conv_shortcut)
      shortcut_.emplace(ctx, r->conv_shortcut, Conv::Geometry{}, Conv::Epilogue{});
  }

  Act run(const Act& x, const torch::Tensor& temb) {
    const int64_t blk = ctx_->blk;
    auto h = cpu::new_act(x.n, x.c, x.h, x.w);
    cpu::group_norm_blocked(x.data(), x.shape(blk), norm1_.args(true), h.data());
    auto a = conv1_.run(h);
    auto args = norm2_.args(true);
    args.temb = temb.data_ptr<float>() + temb_offset_;
    args.temb_stride = temb.size(1);
    cpu::group_norm_blocked(a.data(), a.shape(blk), args, a.data());  // in place
    Act out;
    if (shortcut_) {
      out = shortcut_->run(x);
    } else {
      out = cpu::new_act(x.n, x.c, x.h, x.w);
      std::memcpy(out.data(), x.data(), x.buf.numel() * sizeof(float));
    }
    conv2_.run(a.data(), a.n, a.h, a.w, out.data());
    return out;
  }

 private:
  const Ctx* ctx_;
  Norm norm1_, norm2_;
  Conv conv1_, conv2_;
  std::optional<Conv> shortcut_;
  int64_t temb_offset_;
};

Attention make_attention(const Ctx* ctx, const AttentionBlock& a) {
  return Attention(ctx, a->group_norm, a->to_q, a->to_k, a->to_v, a->out_proj, a->heads(),
                   a->rescale_output_factor());
}

// One level of the encoder or decoder (or the middle block: resnets and attentions interleaved
// as diffusers does, resnet, attention, resnet), then its down- or upsampler.
struct Level {
  std::vector<Resnet> resnets;
  std::vector<Attention> attentions;  // none, one per resnet, or (middle block) one
  std::optional<Conv> resample;
  std::optional<cpu::Upsample> upsample;
};

}  // namespace

struct DnnlUNet::Impl {
  UNet2DModel model{nullptr};
  Ctx ctx;
  std::optional<Conv> conv_in, conv_out;
  std::optional<Norm> norm_out;
  std::vector<Level> downs, ups;
  std::optional<Level> mid;
  torch::Tensor temb_w, temb_b;  // every resnet's time_emb_proj stacked: (sum C, temb), (sum C)
  std::vector<torch::Tensor> temb_ws, temb_bs;

  int64_t add_temb(const ResnetBlock2D& r) {
    int64_t offset = 0;
    for (const auto& w : temb_ws) offset += w.size(0);
    temb_ws.push_back(r->time_emb_proj->weight.detach());
    temb_bs.push_back(r->time_emb_proj->bias.detach());
    return offset;
  }
  Resnet resnet(const ResnetBlock2D& r) { return Resnet(&ctx, r, add_temb(r)); }

  void build();
  Act down(Level& l, Act h, const torch::Tensor& temb, std::vector<Act>& skips);
  Act up(Level& l, Act h, const torch::Tensor& temb, std::vector<Act>& skips);
};

void DnnlUNet::Impl::build() {
  conv_in.emplace(&ctx, model->conv_in, Conv::Geometry{}, Conv::Epilogue{}, true);
  for (const auto& d : model->downs()) {
    Level l;
    for (const auto& r : d->resnets()) l.resnets.push_back(resnet(r));
    for (const auto& a : d->attentions()) l.attentions.push_back(make_attention(&ctx, a));
    if (const auto& ds = d->downsampler()) {
      const int64_t p = ds->padding();
      l.resample.emplace(&ctx, ds->conv, Conv::Geometry{2, p, p == 0 ? 1 : p}, Conv::Epilogue{});
    }
    downs.push_back(std::move(l));
  }
  if (model->mid_block) {
    Level l;
    for (const auto& r : model->mid_block->resnets()) l.resnets.push_back(resnet(r));
    if (const auto& a = model->mid_block->attention())
      l.attentions.push_back(make_attention(&ctx, a));
    mid = std::move(l);
  }
  for (const auto& u : model->ups()) {
    Level l;
    for (const auto& r : u->resnets()) l.resnets.push_back(resnet(r));
    for (const auto& a : u->attentions()) l.attentions.push_back(make_attention(&ctx, a));
    if (const auto& us = u->upsampler()) {
      l.resample.emplace(&ctx, us->conv, Conv::Geometry{}, Conv::Epilogue{});
      l.upsample.emplace(&ctx);
    }
    ups.push_back(std::move(l));
  }
  norm_out.emplace(model->conv_norm_out);
  conv_out.emplace(&ctx, model->conv_out, Conv::Geometry{}, Conv::Epilogue{});
  temb_w = cpu::own_f32(torch::cat(temb_ws, 0));
  temb_b = cpu::own_f32(torch::cat(temb_bs, 0));
}

Act DnnlUNet::Impl::down(Level& l, Act h, const torch::Tensor& temb, std::vector<Act>& skips) {
  for (size_t j = 0; j < l.resnets.size(); ++j) {
    h = l.resnets[j].run(h, temb);
    if (!l.attentions.empty()) h = l.attentions[j].run(h);
    skips.push_back(h);
  }
  if (l.resample) {
    h = l.resample->run(h);
    skips.push_back(h);
  }
  return h;
}

Act DnnlUNet::Impl::up(Level& l, Act h, const torch::Tensor& temb, std::vector<Act>& skips) {
  for (size_t j = 0; j < l.resnets.size(); ++j) {
    check(!skips.empty(), "UNet2DModel: ran out of skip connections");
    const Act& s = skips.back();
    auto cat = cpu::new_act(h.n, h.c + s.c, h.h, h.w);
    cpu::concat_channels_blocked(h.data(), h.c, s.data(), s.c, cat.shape(ctx.blk), cat.data());
    skips.pop_back();
    h = l.resnets[j].run(cat, temb);
    if (!l.attentions.empty()) h = l.attentions[j].run(h);
  }
  if (l.resample) h = l.resample->run(l.upsample->run(h));
  return h;
}

DnnlUNet::DnnlUNet(UNet2DModel model) : impl_(std::make_unique<Impl>()) {
  const auto why = dnnl_unsupported(model->config());
  check(why.empty(), "cpu engine dnnl: ", why);
  for (const auto& p : model->parameters())
    check(p.device().is_cpu() && p.scalar_type() == torch::kFloat32,
          "cpu engine dnnl: the model must be float32 on the CPU, got ", p.dtype(), " on ",
          p.device());
  impl_->model = std::move(model);
  if (dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core) {
    impl_->ctx.blk = 16;
    impl_->ctx.btag = dnnl::memory::format_tag::nChw16c;
  }
  torch::NoGradGuard no_grad;
  impl_->build();
}

DnnlUNet::~DnnlUNet() = default;

torch::Tensor DnnlUNet::forward(const torch::Tensor& x, const torch::Tensor& t,
                                const torch::Tensor& class_labels) {
  auto& m = *impl_;
  c10::InferenceMode inference;
  auto in = m.model->prepare(x, t, class_labels);
  auto input = in.x.contiguous();
  const int64_t B = input.size(0), H = input.size(2), W = input.size(3);
  auto temb = torch::addmm(m.temb_b, torch::silu(in.emb), m.temb_w.t()).contiguous();
  Act h = cpu::new_act(B, m.conv_in->out_channels(), H, W);
  m.conv_in->run(input.data_ptr<float>(), B, H, W, h.data());
  std::vector<Act> skips{h};
  for (auto& l : m.downs) h = m.down(l, h, temb, skips);
  if (m.mid) {
    h = m.mid->resnets[0].run(h, temb);
    if (!m.mid->attentions.empty()) h = m.mid->attentions[0].run(h);
    h = m.mid->resnets[1].run(h, temb);
  }
  for (auto& l : m.ups) h = m.up(l, h, temb, skips);
  auto g = cpu::new_act(h.n, h.c, h.h, h.w);
  cpu::group_norm_blocked(h.data(), h.shape(m.ctx.blk), m.norm_out->args(true), g.data());
  const int64_t oc = m.conv_out->out_channels();
  const int64_t ocp = (oc + m.ctx.blk - 1) / m.ctx.blk * m.ctx.blk;  // blocked, padded
  auto padded = torch::empty({B * ocp * H * W});
  m.conv_out->run(g.data(), B, H, W, padded.data_ptr<float>());
  auto out = torch::empty({B, oc, H, W});
  auto src = cpu::wrap(cpu::plain_md({B, oc, H, W}, m.ctx.btag), &m.ctx, padded.data_ptr<float>());
  auto dst = cpu::wrap(cpu::plain_md({B, oc, H, W}, dnnl::memory::format_tag::nchw), &m.ctx,
                       out.data_ptr<float>());
  dnnl::reorder(src, dst).execute(m.ctx.strm, src, dst);
  return out;
}

}  // namespace diffuse
