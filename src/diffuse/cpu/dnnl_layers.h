// The oneDNN pieces the packed U-Net is made of (cpu/dnnl_unet.cpp): each layer keeps its
// weights packed in the layout its primitive asked for and its primitives per input shape.
// Activations are float buffers in the channel-blocked layout of cpu/blocked.h.
#pragma once
#include <torch/torch.h>

#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "diffuse/cpu/blocked.h"

namespace diffuse::cpu {

struct Ctx {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  mutable dnnl::stream strm{eng};  // executing a primitive is not a change to the context
  int64_t blk = 8;
  dnnl::memory::format_tag btag = dnnl::memory::format_tag::nChw8c;
};

// An activation: n images of c channels, h x w, blocked, in a float tensor that owns the memory.
struct Act {
  torch::Tensor buf;
  int64_t n = 0, c = 0, h = 0, w = 0;
  float* data() const { return buf.data_ptr<float>(); }
  BlockedShape shape(int64_t blk) const { return {n, c, h, w, blk}; }
};
Act new_act(int64_t n, int64_t c, int64_t h, int64_t w);

// float32 memory descriptors and memory objects over buffers the caller owns.
dnnl::memory::desc plain_md(const dnnl::memory::dims& d, dnnl::memory::format_tag t);
dnnl::memory::desc strided_md(const dnnl::memory::dims& d, const dnnl::memory::dims& strides);
dnnl::memory wrap(const dnnl::memory::desc& d, const Ctx* ctx, const void* p);
using PackedWeights = std::vector<std::pair<dnnl::memory::desc, dnnl::memory>>;
// weights (float32, laid out as plain) in the layout want, reordered once per layout.
dnnl::memory packed(const Ctx* ctx, PackedWeights& cache, const dnnl::memory::desc& plain,
                    const torch::Tensor& weights, const dnnl::memory::desc& want);
// prim.execute(args) on ctx's stream; a oneDNN failure becomes a diffuse::Error naming what.
void exec(const dnnl::primitive& prim, const Ctx* ctx, const char* what,
          const std::unordered_map<int, dnnl::memory>& args);
// A float32 contiguous copy the layer owns.
torch::Tensor own_f32(const torch::Tensor& t);

using ShapeKey = std::tuple<int64_t, int64_t, int64_t>;  // (n, h, w) of the input

// A 2-D convolution with its epilogue: dst = scale * (conv(src) + bias [+ dst]) where sum adds
// what dst holds (the residual), src blocked (or plain NCHW for the network's input), dst blocked.
class Conv {
 public:
  struct Epilogue {
    bool sum = false;
    float scale = 1.0f;
  };
  // pad_l / pad_r < 0: (k - 1) / 2 on both sides.
  struct Geometry {
    int64_t stride = 1, pad_l = -1, pad_r = -1;
  };
  Conv(const Ctx* ctx, const torch::nn::Conv2d& m, Geometry g, Epilogue e, bool plain_src = false);
  void run(const float* src, int64_t n, int64_t h, int64_t w, float* dst);
  Act run(const Act& x);
  int64_t out_channels() const { return oc_; }
  int64_t out_size(int64_t in) const { return (in + pad_l_ + pad_r_ - k_) / stride_ + 1; }

 private:
  struct Prim {
    dnnl::convolution_forward conv;
    dnnl::memory::desc src, dst;
    dnnl::memory weights;
  };
  Prim& prim(int64_t n, int64_t h, int64_t w);
  const Ctx* ctx_;
  torch::Tensor weight_, bias_;
  int64_t ic_, oc_, k_, stride_, pad_l_, pad_r_;
  Epilogue epi_;
  bool plain_src_;
  std::map<ShapeKey, Prim> prims_;
  PackedWeights packed_;
};

// GroupNorm (+ time-embedding add, + SiLU) over blocked activations.
struct Norm {
  torch::Tensor gamma, beta;
  int64_t groups;
  float eps;
  explicit Norm(const torch::nn::GroupNorm& m);
  GroupNormArgs args(bool silu) const;
};

// Nearest 2x upsampling (the resampling primitive), blocked in and out.
class Upsample {
 public:
  explicit Upsample(const Ctx* ctx) : ctx_(ctx) {}
  Act run(const Act& x);

 private:
  const Ctx* ctx_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, dnnl::resampling_forward> prims_;
};

// x + attention(group_norm(x)), divided by rescale (diffusers' Attention in the U-Net): the norm
// writes the (B, L, C) token matrix, one GEMM makes q, k and v, batched GEMMs make the scores and
// the heads' outputs, and the output projection is reordered back into the blocked layout onto a
// copy of x with the residual and the rescale in the reorder's epilogue. The GEMMs and the softmax
// are ATen's: oneDNN 2.6's gemm-based matmul fails ("invalid arguments") in a process where
// omp_set_num_threads has been called, which LibTorch always does.
class Attention {
 public:
  Attention(const Ctx* ctx, const torch::nn::GroupNorm& norm, const torch::nn::Linear& q,
            const torch::nn::Linear& k, const torch::nn::Linear& v, const torch::nn::Linear& out,
            int64_t heads, double rescale);
  Act run(const Act& x);

 private:
  dnnl::reorder& back(int64_t n, int64_t h, int64_t w);
  const Ctx* ctx_;
  Norm norm_;
  torch::Tensor w_qkv_, b_qkv_, w_proj_, b_proj_;  // (C, 3C), (3C), (C, C), (C)
  int64_t c_, heads_;
  float rescale_;
  std::map<ShapeKey, dnnl::reorder> back_;
};

}  // namespace diffuse::cpu
