#include "diffuse/cpu/dnnl_layers.h"

#include <cmath>
#include <cstring>

#include "diffuse/core/error.h"

namespace diffuse::cpu {

using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

dnnl::memory::desc plain_md(const dims& d, tag t) {
  return dnnl::memory::desc(d, dnnl::memory::data_type::f32, t);
}

dnnl::memory::desc strided_md(const dims& d, const dims& strides) {
  return dnnl::memory::desc(d, dnnl::memory::data_type::f32, strides);
}

dnnl::memory wrap(const dnnl::memory::desc& d, const Ctx* ctx, const void* p) {
  return dnnl::memory(d, ctx->eng, const_cast<void*>(p));
}

dnnl::memory packed(const Ctx* ctx, PackedWeights& cache, const dnnl::memory::desc& plain,
                    const torch::Tensor& weights, const dnnl::memory::desc& want) {
  for (auto& [d, m] : cache)
    if (d == want) return m;
  dnnl::memory out(want, ctx->eng);
  auto src = wrap(plain, ctx, weights.data_ptr<float>());
  dnnl::reorder(src, out).execute(ctx->strm, src, out);
  ctx->strm.wait();
  cache.emplace_back(want, out);
  return out;
}

void exec(const dnnl::primitive& prim, const Ctx* ctx, const char* what,
          const std::unordered_map<int, dnnl::memory>& args) {
  try {
    prim.execute(ctx->strm, args);
  } catch (const dnnl::error& e) {
    fail("cpu engine dnnl: ", what, ": ", e.what(), " (status ", static_cast<int>(e.status), ")");
  }
}

torch::Tensor own_f32(const torch::Tensor& t) {
  return t.detach().to(torch::kFloat32).contiguous().clone();
}

Act new_act(int64_t n, int64_t c, int64_t h, int64_t w) {
  return {torch::empty({n * c * h * w}, torch::kFloat32), n, c, h, w};
}

Conv::Conv(const Ctx* ctx, const torch::nn::Conv2d& m, Geometry g, Epilogue e, bool plain_src)
    : ctx_(ctx), weight_(own_f32(m->weight)), epi_(e), plain_src_(plain_src) {
  check(m->bias.defined(), "cpu engine: convolution without a bias");
  bias_ = own_f32(m->bias);
  oc_ = weight_.size(0);
  ic_ = weight_.size(1);
  k_ = weight_.size(2);
  stride_ = g.stride;
  pad_l_ = g.pad_l >= 0 ? g.pad_l : (k_ - 1) / 2;
  pad_r_ = g.pad_r >= 0 ? g.pad_r : (k_ - 1) / 2;
}

Conv::Prim& Conv::prim(int64_t n, int64_t h, int64_t w) {
  const ShapeKey key{n, h, w};
  auto it = prims_.find(key);
  if (it != prims_.end()) return it->second;
  const int64_t oh = out_size(h), ow = out_size(w);
  const auto src = plain_md({n, ic_, h, w}, plain_src_ ? tag::nchw : ctx_->btag);
  const auto dst = plain_md({n, oc_, oh, ow}, ctx_->btag);
  const auto wany = plain_md({oc_, ic_, k_, k_}, tag::any);
  dnnl::convolution_forward::desc d(
      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, wany,
      plain_md({oc_}, tag::a), dst, {stride_, stride_}, {pad_l_, pad_l_}, {pad_r_, pad_r_});
  dnnl::post_ops po;
  if (epi_.sum) po.append_sum(1.0f);
  if (epi_.scale != 1.0f) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_linear, epi_.scale, 0);
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  dnnl::convolution_forward::primitive_desc pd(d, attr, ctx_->eng);
  auto wm =
      packed(ctx_, packed_, plain_md({oc_, ic_, k_, k_}, tag::oihw), weight_, pd.weights_desc());
  return prims_.emplace(key, Prim{dnnl::convolution_forward(pd), src, dst, wm}).first->second;
}

void Conv::run(const float* src, int64_t n, int64_t h, int64_t w, float* dst) {
  auto& p = prim(n, h, w);
  exec(p.conv, ctx_, "convolution",
       {{DNNL_ARG_SRC, wrap(p.src, ctx_, src)},
        {DNNL_ARG_WEIGHTS, p.weights},
        {DNNL_ARG_BIAS, wrap(plain_md({oc_}, tag::a), ctx_, bias_.data_ptr<float>())},
        {DNNL_ARG_DST, wrap(p.dst, ctx_, dst)}});
}

Act Conv::run(const Act& x) {
  auto y = new_act(x.n, oc_, out_size(x.h), out_size(x.w));
  run(x.data(), x.n, x.h, x.w, y.data());
  return y;
}

Norm::Norm(const torch::nn::GroupNorm& m)
    : gamma(own_f32(m->weight)),
      beta(own_f32(m->bias)),
      groups(m->options.num_groups()),
      eps(static_cast<float>(m->options.eps())) {}

GroupNormArgs Norm::args(bool silu) const {
  GroupNormArgs a{gamma.data_ptr<float>(), beta.data_ptr<float>(), groups, eps};
  a.silu = silu;
  return a;
}

Act Upsample::run(const Act& x) {
  const std::tuple<int64_t, int64_t, int64_t, int64_t> key{x.n, x.c, x.h, x.w};
  auto it = prims_.find(key);
  const auto src = plain_md({x.n, x.c, x.h, x.w}, ctx_->btag);
  const auto dst = plain_md({x.n, x.c, 2 * x.h, 2 * x.w}, ctx_->btag);
  if (it == prims_.end()) {
    dnnl::resampling_forward::desc d(dnnl::prop_kind::forward_inference,
                                     dnnl::algorithm::resampling_nearest, src, dst);
    it = prims_.emplace(key, dnnl::resampling_forward({d, ctx_->eng})).first;
  }
  auto y = new_act(x.n, x.c, 2 * x.h, 2 * x.w);
  exec(it->second, ctx_, "upsample",
       {{DNNL_ARG_SRC, wrap(src, ctx_, x.data())}, {DNNL_ARG_DST, wrap(dst, ctx_, y.data())}});
  return y;
}

}  // namespace diffuse::cpu
