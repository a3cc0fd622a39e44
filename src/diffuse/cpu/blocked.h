// Element-wise work on activations in oneDNN's channel-blocked layout (nChw8c / nChw16c: element
// (n, c, h, w) at ((n * C / blk + c / blk) * H * W + h * W + w) * blk + c % blk), for the steps
// the oneDNN version Debian and PyPI ship (2.6, 3.2) has no primitive for: GroupNorm (oneDNN
// gained one in 3.3) with the time-embedding add in front of it, and channel concatenation.
// Plain C++ over raw float buffers, no oneDNN types, so it is testable without oneDNN.
#pragma once
#include <cstdint>

namespace diffuse::cpu {

struct BlockedShape {
  int64_t n, c, h, w, blk;  // c a multiple of blk
  int64_t hw() const { return h * w; }
  int64_t numel() const { return n * c * h * w; }
};

// y = act(group_norm(x + temb[n, c], groups, gamma, beta, eps)) with the statistics of each
// (n, group) over its channels and all positions (Wu & He 2018, eq. 1-2), variance by the two-pass
// formula. temb: null, or row n of (N, temb_stride) floats starting at temb. act: SiLU when silu.
// dst_tokens: y in (N, H * W, C) row-major (the attention's token matrix) instead of blocked.
struct GroupNormArgs {
  const float* gamma;
  const float* beta;
  int64_t groups;
  float eps;
  const float* temb = nullptr;
  int64_t temb_stride = 0;
  bool silu = false;
  bool dst_tokens = false;
};
void group_norm_blocked(const float* x, const BlockedShape& s, const GroupNormArgs& a, float* y);

// dst (N, ca + cb, H, W) = cat(a (N, ca, H, W), b (N, cb, H, W)) along channels, all blocked with
// the same blk; ca and cb multiples of blk.
void concat_channels_blocked(const float* a, int64_t ca, const float* b, int64_t cb,
                             const BlockedShape& dst, float* out);

}  // namespace diffuse::cpu
