// GroupNorm + time-embedding add + SiLU on NHWC activations; see group_norm_act.h.
//
// Notation, per sample n and group g of M = hw * c / groups elements:
//   v = x + t (t = temb[n, c], 0 without it), xh = (v - mean) * rstd, z = xh * gamma + beta,
//   y = SiLU(z) = z * sigmoid(z).
// Backward, with dz = dy * SiLU'(z), SiLU'(z) = s (1 + z (1 - s)), s = sigmoid(z):
//   dbeta_c = sum dz, dgamma_c = sum dz xh                       (over n and pixels)
//   dv = rstd (gamma dz - A / M - xh B / M),                       (the GroupNorm backward)
//   A = sum_{group} gamma dz, B = sum_{group} gamma dz xh,
//   dtemb[n, c] = sum over pixels of dv = rstd gamma sum dz - hw rstd A / M - rstd B / M sum xh.
//
// Every kernel that touches activations uses one tiling: a block of 32 channel lanes x 8 pixel
// rows covers `pixels` consecutive pixels of one sample (grid: pixel chunks x samples), so a warp
// reads 32 consecutive channels of one pixel. Per-chunk sums go to a scratch buffer and are added
// up by one block per (sample, group) in a fixed order (strided per-thread sums, then a shared-
// memory tree): no atomics, the same bits on every run, and at batch 1 still groups x 128
// threads at work rather than one thread per group.
#include <cuda_bf16.h>

#include "diffuse/kernels/group_norm_act.h"

namespace diffuse::kernels {

namespace {

constexpr int kLanes = 32;  // channels per block step
constexpr int kRows = 8;    // pixel rows per block step
// Enough blocks to fill a GPU of ~132 SMs several times over before pixels per thread grow.
constexpr int64_t kTargetBlocks = 1024;
constexpr int kSumThreads = 128;  // threads of the per-(sample, group) reduction blocks

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Pixels one block covers: as many as keep the grid at kTargetBlocks or more, 8 to 128.
int64_t pixels_per_block(const GroupNormShape& s) {
  int64_t rows = 16;
  while (rows > 1 && s.n * ceil_div(s.hw, kRows * rows) < kTargetBlocks) rows /= 2;
  return kRows * rows;
}

int64_t num_chunks(const GroupNormShape& s) {
  return ceil_div(s.hw, pixels_per_block(s));
}

__device__ __forceinline__ float load(const float* p, int64_t i) {
  return p[i];
}
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) {
  p[i] = v;
}
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);
}
__device__ __forceinline__ float sigmoid(float z) {
  return 1.f / (1.f + __expf(-z));
}

// Sums v over the block's kSumThreads threads in a fixed tree order; every thread gets the totals.
template <int N>
__device__ void block_sum(double (&v)[N]) {
  __shared__ double s[N][kSumThreads];
  const int t = threadIdx.x;
  for (int q = 0; q < N; ++q) s[q][t] = v[q];
  __syncthreads();
  for (int w = kSumThreads / 2; w > 0; w /= 2) {
    if (t < w)
      for (int q = 0; q < N; ++q) s[q][t] += s[q][t + w];
    __syncthreads();
  }
  for (int q = 0; q < N; ++q) v[q] = s[q][0];
  __syncthreads();  // s is reused by the next call
}

// The pixel range [p0, p1) of this block.
struct Chunk {
  int64_t p0, p1;
};
__device__ __forceinline__ Chunk block_chunk(int64_t hw, int64_t pixels) {
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * pixels;
  return {p0, p0 + pixels < hw ? p0 + pixels : hw};
}

// part: (chunks, n, c, 3) float: sum (v - k) and sum (v - k)^2 over the block's pixels, and the
// shift k, the channel's first value in the chunk: sums of shifted values stay of the size of
// the spread, not of the mean, so a channel offset costs no float32 precision (GroupNorm inputs
// are conv outputs with per-channel biases).
template <typename T>
__global__ void forward_partials(const T* __restrict__ x, const float* __restrict__ temb,
                                 int64_t hw, int64_t c, int64_t pixels, float* __restrict__ part) {
  __shared__ float s1[kRows][kLanes + 1], s2[kRows][kLanes + 1];
  const int64_t n = blockIdx.y, batch = gridDim.y;
  const Chunk k = block_chunk(hw, pixels);
  const int tx = threadIdx.x, ty = threadIdx.y;
  const T* xn = x + n * hw * c;
  for (int64_t c0 = 0; c0 < c; c0 += kLanes) {
    const int64_t ch = c0 + tx;
    float a = 0.f, b = 0.f, shift = 0.f;
    if (ch < c) {
      const float t = temb ? temb[n * c + ch] : 0.f;
      shift = load(xn, k.p0 * c + ch) + t;
      for (int64_t p = k.p0 + ty; p < k.p1; p += kRows) {
        const float v = load(xn, p * c + ch) + t - shift;
        a += v;
        b += v * v;
      }
    }
    s1[ty][tx] = a;
    s2[ty][tx] = b;
    __syncthreads();
    if (ty == 0 && ch < c) {
      float sa = 0.f, sb = 0.f;
      for (int r = 0; r < kRows; ++r) {
        sa += s1[r][tx];
        sb += s2[r][tx];
      }
      float* o = part + ((blockIdx.x * batch + n) * c + ch) * 3;
      o[0] = sa;
      o[1] = sb;
      o[2] = shift;
    }
    __syncthreads();
  }
}

// One block per (n, g): mean and 1 / sqrt(var + eps), the partial sums unshifted and added in
// double: sum v = s + m k, sum v^2 = q + 2 k s + m k^2 for a chunk of m pixels.
__global__ void forward_stats(const float* __restrict__ part, int64_t batch, int64_t hw, int64_t c,
                              int64_t groups, int64_t chunks, int64_t pixels, float eps,
                              float* __restrict__ mean, float* __restrict__ rstd) {
  const int64_t i = blockIdx.x, n = i / groups, g = i % groups, cg = c / groups;
  double v[2] = {0, 0};
  for (int64_t j = threadIdx.x; j < chunks * cg; j += kSumThreads) {
    const int64_t k = j / cg;
    const float* o = part + ((k * batch + n) * c + g * cg + j % cg) * 3;
    const double m = static_cast<double>(hw - k * pixels < pixels ? hw - k * pixels : pixels);
    const double sum = o[0], sq = o[1], shift = o[2];
    v[0] += sum + m * shift;
    v[1] += sq + 2 * shift * sum + m * shift * shift;
  }
  block_sum(v);
  if (threadIdx.x != 0) return;
  const double m = static_cast<double>(hw * cg);
  const double mu = v[0] / m;
  const double var = v[1] / m - mu * mu;
  mean[i] = static_cast<float>(mu);
  rstd[i] = static_cast<float>(rsqrt((var > 0 ? var : 0.0) + eps));
}

// y = act(x * a + b) with a = rstd gamma, b = beta + (t - mean) a per channel.
template <typename T, typename O>
__global__ void forward_apply(const T* __restrict__ x, const float* __restrict__ temb,
                              const float* __restrict__ gamma, const float* __restrict__ beta,
                              const float* __restrict__ mean, const float* __restrict__ rstd,
                              int64_t hw, int64_t c, int64_t groups, int64_t pixels, bool silu,
                              O* __restrict__ y) {
  const int64_t n = blockIdx.y, cg = c / groups;
  const Chunk k = block_chunk(hw, pixels);
  const T* xn = x + n * hw * c;
  O* yn = y + n * hw * c;
  for (int64_t ch = threadIdx.x; ch < c; ch += kLanes) {
    const int64_t ng = n * groups + ch / cg;
    const float a = rstd[ng] * gamma[ch];
    const float t = temb ? temb[n * c + ch] : 0.f;
    const float b = beta[ch] + (t - mean[ng]) * a;
    for (int64_t p = k.p0 + threadIdx.y; p < k.p1; p += kRows) {
      float z = load(xn, p * c + ch) * a + b;
      if (silu) z *= sigmoid(z);
      store(yn, p * c + ch, z);
    }
  }
}

// dz and xh at one element; dz = dy SiLU'(z) or dy.
struct Grad {
  float dz, xh;
};
__device__ __forceinline__ Grad element_grad(float xv, float dy, float t, float mu, float r,
                                             float gm, float be, bool silu) {
  const float xh = (xv + t - mu) * r;
  if (silu) {
    const float z = xh * gm + be, s = sigmoid(z);
    dy *= s * (1.f + z * (1.f - s));
  }
  return {dy, xh};
}

// part: (chunks, n, c, 3) float: sum dz, sum dz xh, sum xh over the block's pixels.
template <typename T, typename G>
__global__ void backward_partials(const G* __restrict__ dy, const T* __restrict__ x,
                                  const float* __restrict__ temb, const float* __restrict__ gamma,
                                  const float* __restrict__ beta, const float* __restrict__ mean,
                                  const float* __restrict__ rstd, int64_t hw, int64_t c,
                                  int64_t groups, int64_t pixels, bool silu,
                                  float* __restrict__ part) {
  __shared__ float s[3][kRows][kLanes + 1];
  const int64_t n = blockIdx.y, batch = gridDim.y, cg = c / groups;
  const Chunk k = block_chunk(hw, pixels);
  const int tx = threadIdx.x, ty = threadIdx.y;
  const T* xn = x + n * hw * c;
  const G* dyn = dy + n * hw * c;
  for (int64_t c0 = 0; c0 < c; c0 += kLanes) {
    const int64_t ch = c0 + tx;
    float a = 0.f, b = 0.f, d = 0.f;
    if (ch < c) {
      const int64_t ng = n * groups + ch / cg;
      const float mu = mean[ng], r = rstd[ng], gm = gamma[ch], be = beta[ch];
      const float t = temb ? temb[n * c + ch] : 0.f;
      for (int64_t p = k.p0 + ty; p < k.p1; p += kRows) {
        const Grad e =
            element_grad(load(xn, p * c + ch), load(dyn, p * c + ch), t, mu, r, gm, be, silu);
        a += e.dz;
        b += e.dz * e.xh;
        d += e.xh;
      }
    }
    s[0][ty][tx] = a;
    s[1][ty][tx] = b;
    s[2][ty][tx] = d;
    __syncthreads();
    if (ty == 0 && ch < c) {
      float* o = part + ((blockIdx.x * batch + n) * c + ch) * 3;
      for (int q = 0; q < 3; ++q) {
        float sum = 0.f;
        for (int r = 0; r < kRows; ++r) sum += s[q][r][tx];
        o[q] = sum;
      }
    }
    __syncthreads();
  }
}

// One block per (n, g): the per-(n, c) totals of dz and dz xh (for dgamma, dbeta), the
// coefficients k1 = -rstd A / M and k2 = -rstd B / M of dv = rstd gamma dz + k1 + k2 xh, and
// dtemb for the group's channels. The group's channels go L at a time (L = min(cg, threads)), each
// summed over the chunks by kSumThreads / L threads whose partials are then added in order.
__global__ void backward_groups(const float* __restrict__ part, const float* __restrict__ gamma,
                                const float* __restrict__ rstd, int64_t batch, int64_t hw,
                                int64_t c, int64_t groups, int64_t chunks,
                                float* __restrict__ dz_sum, float* __restrict__ dzxh_sum,
                                float* __restrict__ k1, float* __restrict__ k2,
                                float* __restrict__ dtemb) {
  __shared__ double s[3][kSumThreads], ga[kSumThreads], gb[kSumThreads], coef[2];
  const int64_t i = blockIdx.x, n = i / groups, g = i % groups, cg = c / groups;
  const int t = threadIdx.x;
  const int lanes = cg < kSumThreads ? static_cast<int>(cg) : kSumThreads;
  const int slices = kSumThreads / lanes;
  double A = 0, B = 0;  // thread 0's
  for (int64_t c0 = g * cg; c0 < (g + 1) * cg; c0 += lanes) {
    const int64_t ch = c0 + t % lanes;
    double a = 0, b = 0, d = 0;
    if (t < slices * lanes && ch < (g + 1) * cg)
      for (int64_t k = t / lanes; k < chunks; k += slices) {
        const float* o = part + ((k * batch + n) * c + ch) * 3;
        a += o[0];
        b += o[1];
        d += o[2];
      }
    s[0][t] = a;
    s[1][t] = b;
    s[2][t] = d;
    __syncthreads();
    if (t < lanes && ch < (g + 1) * cg) {
      double ta = 0, tb = 0, td = 0;
      for (int r = 0; r < slices; ++r) {
        ta += s[0][r * lanes + t];
        tb += s[1][r * lanes + t];
        td += s[2][r * lanes + t];
      }
      dz_sum[n * c + ch] = static_cast<float>(ta);
      dzxh_sum[n * c + ch] = static_cast<float>(tb);
      if (dtemb) dtemb[n * c + ch] = static_cast<float>(td);  // sum xh until the end
      ga[t] = gamma[ch] * ta;
      gb[t] = gamma[ch] * tb;
    } else if (t < lanes) {
      ga[t] = gb[t] = 0;
    }
    __syncthreads();
    if (t == 0)
      for (int l = 0; l < lanes; ++l) {
        A += ga[l];
        B += gb[l];
      }
    __syncthreads();
  }
  const double m = static_cast<double>(hw * cg), r = rstd[i];
  if (t == 0) {
    coef[0] = -r * A / m;
    coef[1] = -r * B / m;
    k1[i] = static_cast<float>(coef[0]);
    k2[i] = static_cast<float>(coef[1]);
  }
  __syncthreads();
  if (!dtemb) return;
  for (int64_t ch = g * cg + t; ch < (g + 1) * cg; ch += kSumThreads) {
    const double sum_xh = dtemb[n * c + ch];
    dtemb[n * c + ch] = static_cast<float>(r * gamma[ch] * dz_sum[n * c + ch] +
                                           static_cast<double>(hw) * coef[0] + coef[1] * sum_xh);
  }
}

// One thread per channel: dgamma = sum_n sum dz xh, dbeta = sum_n sum dz.
__global__ void backward_params(const float* __restrict__ dz_sum,
                                const float* __restrict__ dzxh_sum, int64_t batch, int64_t c,
                                float* __restrict__ dgamma, float* __restrict__ dbeta) {
  const int64_t ch = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double a = 0, b = 0;
  for (int64_t n = 0; n < batch; ++n) {
    a += dzxh_sum[n * c + ch];
    b += dz_sum[n * c + ch];
  }
  dgamma[ch] = static_cast<float>(a);
  dbeta[ch] = static_cast<float>(b);
}

// dx = rstd gamma dz + k1 + k2 xh.
template <typename T, typename G>
__global__ void backward_apply(const G* __restrict__ dy, const T* __restrict__ x,
                               const float* __restrict__ temb, const float* __restrict__ gamma,
                               const float* __restrict__ beta, const float* __restrict__ mean,
                               const float* __restrict__ rstd, const float* __restrict__ k1,
                               const float* __restrict__ k2, int64_t hw, int64_t c, int64_t groups,
                               int64_t pixels, bool silu, T* __restrict__ dx) {
  const int64_t n = blockIdx.y, cg = c / groups;
  const Chunk k = block_chunk(hw, pixels);
  const T* xn = x + n * hw * c;
  const G* dyn = dy + n * hw * c;
  T* dxn = dx + n * hw * c;
  for (int64_t ch = threadIdx.x; ch < c; ch += kLanes) {
    const int64_t ng = n * groups + ch / cg;
    const float mu = mean[ng], r = rstd[ng], gm = gamma[ch], be = beta[ch];
    const float a = r * gm, c1 = k1[ng], c2 = k2[ng];
    const float t = temb ? temb[n * c + ch] : 0.f;
    for (int64_t p = k.p0 + threadIdx.y; p < k.p1; p += kRows) {
      const Grad e =
          element_grad(load(xn, p * c + ch), load(dyn, p * c + ch), t, mu, r, gm, be, silu);
      store(dxn, p * c + ch, a * e.dz + c1 + c2 * e.xh);
    }
  }
}

template <typename T, typename O>
cudaError_t forward_typed(const GroupNormShape& s, const void* x, const float* temb,
                          const float* gamma, const float* beta, float eps, bool silu, void* y,
                          float* mean, float* rstd, float* workspace, cudaStream_t stream) {
  const int64_t pixels = pixels_per_block(s), chunks = num_chunks(s);
  const dim3 block(kLanes, kRows), grid(static_cast<unsigned>(chunks), static_cast<unsigned>(s.n));
  const auto* xt = static_cast<const T*>(x);
  forward_partials<T><<<grid, block, 0, stream>>>(xt, temb, s.hw, s.c, pixels, workspace);
  forward_stats<<<static_cast<unsigned>(s.n * s.groups), kSumThreads, 0, stream>>>(
      workspace, s.n, s.hw, s.c, s.groups, chunks, pixels, eps, mean, rstd);
  forward_apply<T, O><<<grid, block, 0, stream>>>(xt, temb, gamma, beta, mean, rstd, s.hw, s.c,
                                                  s.groups, pixels, silu, static_cast<O*>(y));
  return cudaGetLastError();
}

template <typename T, typename G>
cudaError_t backward_typed(const GroupNormShape& s, const void* dy, const void* x,
                           const float* temb, const float* gamma, const float* beta,
                           const float* mean, const float* rstd, bool silu, void* dx, float* dtemb,
                           float* dgamma, float* dbeta, float* workspace, cudaStream_t stream) {
  const int64_t pixels = pixels_per_block(s), chunks = num_chunks(s);
  const int64_t nc = s.n * s.c, ng = s.n * s.groups;
  float* part = workspace;  // (chunks, n, c, 3)
  float* dz_sum = part + chunks * nc * 3;
  float* dzxh_sum = dz_sum + nc;
  float* k1 = dzxh_sum + nc;
  float* k2 = k1 + ng;
  const dim3 block(kLanes, kRows), grid(static_cast<unsigned>(chunks), static_cast<unsigned>(s.n));
  const auto* dyt = static_cast<const G*>(dy);
  const auto* xt = static_cast<const T*>(x);
  backward_partials<T, G><<<grid, block, 0, stream>>>(dyt, xt, temb, gamma, beta, mean, rstd, s.hw,
                                                      s.c, s.groups, pixels, silu, part);
  backward_groups<<<static_cast<unsigned>(ng), kSumThreads, 0, stream>>>(
      part, gamma, rstd, s.n, s.hw, s.c, s.groups, chunks, dz_sum, dzxh_sum, k1, k2,
      temb ? dtemb : nullptr);
  backward_params<<<static_cast<unsigned>(ceil_div(s.c, 256)), 256, 0, stream>>>(
      dz_sum, dzxh_sum, s.n, s.c, dgamma, dbeta);
  backward_apply<T, G><<<grid, block, 0, stream>>>(dyt, xt, temb, gamma, beta, mean, rstd, k1, k2,
                                                   s.hw, s.c, s.groups, pixels, silu,
                                                   static_cast<T*>(dx));
  return cudaGetLastError();
}

// fn<T, U>() for the run-time pair (a, b) of float32 / bf16.
template <template <typename, typename> class F, typename... Args>
cudaError_t dispatch2(Dtype a, Dtype b, Args&&... args) {
  using bf = __nv_bfloat16;
  if (a == Dtype::BFloat16)
    return b == Dtype::BFloat16 ? F<bf, bf>::run(args...) : F<bf, float>::run(args...);
  return b == Dtype::BFloat16 ? F<float, bf>::run(args...) : F<float, float>::run(args...);
}

template <typename T, typename O>
struct Forward {
  template <typename... Args>
  static cudaError_t run(Args... args) {
    return forward_typed<T, O>(args...);
  }
};

template <typename T, typename G>
struct Backward {
  template <typename... Args>
  static cudaError_t run(Args... args) {
    return backward_typed<T, G>(args...);
  }
};

}  // namespace

bool group_norm_shape_ok(const GroupNormShape& s) {
  return s.n >= 1 && s.n <= 65535 && s.hw >= 1 && s.c >= 1 && s.groups >= 1 && s.c % s.groups == 0;
}

int64_t group_norm_act_workspace(const GroupNormShape& s) {
  const int64_t chunks = num_chunks(s), nc = s.n * s.c, ng = s.n * s.groups;
  const int64_t forward = chunks * nc * 3;
  const int64_t backward = chunks * nc * 3 + 2 * nc + 2 * ng;
  return forward > backward ? forward : backward;
}

int64_t group_norm_pixels_per_block(const GroupNormShape& s) {
  return pixels_per_block(s);
}

cudaError_t group_norm_act_forward(Dtype x_dtype, Dtype y_dtype, const GroupNormShape& s,
                                   const void* x, const float* temb, const float* gamma,
                                   const float* beta, float eps, bool silu, void* y, float* mean,
                                   float* rstd, float* workspace, cudaStream_t stream) {
  if (!group_norm_shape_ok(s)) return cudaErrorInvalidValue;
  return dispatch2<Forward>(x_dtype, y_dtype, s, x, temb, gamma, beta, eps, silu, y, mean, rstd,
                            workspace, stream);
}

cudaError_t group_norm_act_backward(Dtype x_dtype, Dtype dy_dtype, const GroupNormShape& s,
                                    const void* dy, const void* x, const float* temb,
                                    const float* gamma, const float* beta, const float* mean,
                                    const float* rstd, bool silu, void* dx, float* dtemb,
                                    float* dgamma, float* dbeta, float* workspace,
                                    cudaStream_t stream) {
  if (!group_norm_shape_ok(s)) return cudaErrorInvalidValue;
  return dispatch2<Backward>(x_dtype, dy_dtype, s, dy, x, temb, gamma, beta, mean, rstd, silu, dx,
                             dtemb, dgamma, dbeta, workspace, stream);
}

}  // namespace diffuse::kernels
