#include <cmath>
#include <cstring>

#include "diffuse/core/error.h"
#include "diffuse/cpu/dnnl_layers.h"

namespace diffuse::cpu {

Attention::Attention(const Ctx* ctx, const torch::nn::GroupNorm& norm, const torch::nn::Linear& q,
                     const torch::nn::Linear& k, const torch::nn::Linear& v,
                     const torch::nn::Linear& out, int64_t heads, double rescale)
    : ctx_(ctx), norm_(norm), heads_(heads), rescale_(static_cast<float>(rescale)) {
  c_ = q->weight.size(0);
  w_qkv_ = own_f32(torch::cat({q->weight, k->weight, v->weight}, 0).t());
  b_qkv_ = own_f32(torch::cat({q->bias, k->bias, v->bias}));
  w_proj_ = own_f32(out->weight.t());
  b_proj_ = own_f32(out->bias);
}

dnnl::reorder& Attention::back(int64_t n, int64_t h, int64_t w) {
  const ShapeKey key{n, h, w};
  auto it = back_.find(key);
  if (it != back_.end()) return it->second;
  // (n, L, C) rows are NHWC; into the blocked layout as (proj + x) / rescale, onto x.
  dnnl::primitive_attr attr;
  attr.set_output_scales(0, {1.0f / rescale_});
  dnnl::post_ops sum;
  sum.append_sum(1.0f / rescale_);
  attr.set_post_ops(sum);
  const auto tokens = plain_md({n, c_, h, w}, dnnl::memory::format_tag::nhwc);
  const auto blocked = plain_md({n, c_, h, w}, ctx_->btag);
  return back_.emplace(key, dnnl::reorder({ctx_->eng, tokens, ctx_->eng, blocked, attr}))
      .first->second;
}

Act Attention::run(const Act& x) {
  const int64_t L = x.h * x.w, C = c_, d = C / heads_;
  auto tokens = torch::empty({x.n, L, C});
  auto args = norm_.args(false);
  args.dst_tokens = true;
  group_norm_blocked(x.data(), x.shape(ctx_->blk), args, tokens.data_ptr<float>());
  auto qkv = torch::addmm(b_qkv_, tokens.view({x.n * L, C}), w_qkv_);  // (n L, 3C)
  // (n L, 3C) -> (3, n, heads, L, d)
  auto heads = qkv.view({x.n, L, 3, heads_, d}).permute({2, 0, 3, 1, 4});
  auto q = heads[0], k = heads[1], v = heads[2];
  auto scores = torch::matmul(q, k.transpose(-2, -1)).mul_(1.0 / std::sqrt(double(d)));
  auto o = torch::matmul(torch::softmax(scores, -1), v);  // (n, heads, L, d)
  auto proj = torch::addmm(b_proj_, o.permute({0, 2, 1, 3}).reshape({x.n * L, C}), w_proj_);
  auto y = new_act(x.n, x.c, x.h, x.w);
  std::memcpy(y.data(), x.data(), x.buf.numel() * sizeof(float));
  auto src = wrap(plain_md({x.n, C, x.h, x.w}, dnnl::memory::format_tag::nhwc), ctx_,
                  proj.data_ptr<float>());
  auto dst = wrap(plain_md({x.n, C, x.h, x.w}, ctx_->btag), ctx_, y.data());
  exec(back(x.n, x.h, x.w), ctx_, "attention output", {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}});
  return y;
}

}  // namespace diffuse::cpu
