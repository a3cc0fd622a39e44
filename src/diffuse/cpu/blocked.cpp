#include "diffuse/cpu/blocked.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "diffuse/core/error.h"

namespace diffuse::cpu {

namespace {

// Per (n, channel) sums over the H * W positions of one channel block: sum of x when mean is
// null, else sum of (x + shift)^2 with shift[l] = temb - mean for lane l. BLK is a compile-time
// lane count so the lane loop vectorises.
template <int BLK>
void block_sums(const float* p, int64_t hw, const float* shift, double* out) {
  float acc[BLK] = {};
  if (shift == nullptr) {
    for (int64_t i = 0; i < hw; ++i)
      for (int l = 0; l < BLK; ++l) acc[l] += p[i * BLK + l];
  } else {
    for (int64_t i = 0; i < hw; ++i)
      for (int l = 0; l < BLK; ++l) {
        const float d = p[i * BLK + l] + shift[l];
        acc[l] += d * d;
      }
  }
  for (int l = 0; l < BLK; ++l) out[l] = acc[l];
}

template <int BLK>
void block_apply(const float* p, int64_t hw, const float* scale, const float* shift, bool silu,
                 float* y, int64_t y_stride) {
  for (int64_t i = 0; i < hw; ++i) {
    float v[BLK];
    for (int l = 0; l < BLK; ++l) v[l] = p[i * BLK + l] * scale[l] + shift[l];
    if (silu)
      for (int l = 0; l < BLK; ++l) v[l] = v[l] / (1.0f + std::exp(-v[l]));
    float* o = y + i * y_stride;
    for (int l = 0; l < BLK; ++l) o[l] = v[l];
  }
}

// Runs f(n, cb) for every channel block of every image, split over the intra-op threads.
template <typename F>
void for_each_block(const BlockedShape& s, const F& f) {
  const int64_t cbs = s.c / s.blk;
  at::parallel_for(0, s.n * cbs, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) f(b / cbs, b % cbs);
  });
}

template <int BLK>
void group_norm_impl(const float* x, const BlockedShape& s, const GroupNormArgs& a, float* y) {
  const int64_t N = s.n, C = s.c, HW = s.hw(), cpg = C / a.groups;
  std::vector<float> temb(N * C, 0.0f);
  if (a.temb)
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(&temb[n * C], a.temb + n * a.temb_stride, C * sizeof(float));
  std::vector<double> sums(N * C);
  for_each_block(s, [&](int64_t n, int64_t cb) {
    block_sums<BLK>(x + (n * (C / BLK) + cb) * HW * BLK, HW, nullptr, &sums[n * C + cb * BLK]);
  });
  const double count = static_cast<double>(cpg * HW);
  std::vector<float> mean(N * a.groups), shift(N * C);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < a.groups; ++g) {
      double m = 0;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c)
        m += sums[n * C + c] + static_cast<double>(HW) * temb[n * C + c];
      mean[n * a.groups + g] = static_cast<float>(m / count);
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c)
        shift[n * C + c] = temb[n * C + c] - mean[n * a.groups + g];
    }
  for_each_block(s, [&](int64_t n, int64_t cb) {
    const int64_t c0 = n * C + cb * BLK;
    block_sums<BLK>(x + (n * (C / BLK) + cb) * HW * BLK, HW, &shift[c0], &sums[c0]);
  });
  std::vector<float> scale(N * C), offset(N * C);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < a.groups; ++g) {
      double q = 0;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) q += sums[n * C + c];
      const double rstd = 1.0 / std::sqrt(q / count + a.eps);
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        scale[n * C + c] = static_cast<float>(rstd * a.gamma[c]);
        offset[n * C + c] = shift[n * C + c] * scale[n * C + c] + a.beta[c];
      }
    }
  for_each_block(s, [&](int64_t n, int64_t cb) {
    const int64_t c0 = n * C + cb * BLK, src = (n * (C / BLK) + cb) * HW * BLK;
    float* out = a.dst_tokens ? y + n * HW * C + cb * BLK : y + src;
    block_apply<BLK>(x + src, HW, &scale[c0], &offset[c0], a.silu, out, a.dst_tokens ? C : BLK);
  });
}

}  // namespace

void group_norm_blocked(const float* x, const BlockedShape& s, const GroupNormArgs& a, float* y) {
  check(s.blk == 8 || s.blk == 16, "group_norm_blocked: block size must be 8 or 16, got ", s.blk);
  check(s.c % s.blk == 0 && a.groups > 0 && s.c % a.groups == 0, "group_norm_blocked: ", s.c,
        " channels do not split into blocks of ", s.blk, " and ", a.groups, " groups");
  if (s.blk == 8)
    group_norm_impl<8>(x, s, a, y);
  else
    group_norm_impl<16>(x, s, a, y);
}

void concat_channels_blocked(const float* a, int64_t ca, const float* b, int64_t cb,
                             const BlockedShape& dst, float* out) {
  check(ca + cb == dst.c && ca % dst.blk == 0 && cb % dst.blk == 0, "concat_channels_blocked: ", ca,
        " + ", cb, " channels into ", dst.c, " (blocks of ", dst.blk, ")");
  const int64_t hw = dst.hw();
  at::parallel_for(0, dst.n, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      float* o = out + n * dst.c * hw;
      std::memcpy(o, a + n * ca * hw, ca * hw * sizeof(float));
      std::memcpy(o + ca * hw, b + n * cb * hw, cb * hw * sizeof(float));
    }
  });
}

}  // namespace diffuse::cpu
