// GroupNorm + time-embedding add + SiLU: the reference composite against the math and the old
// module path (CPU), the fused kernel's input checks (CPU), and the fused CUDA kernel and the
// channels-last U-Net against the ATen path, forward and gradients (GPU only; skipped with the
// reason printed when this build or machine has none).
#include <gtest/gtest.h>

#include <cmath>

#include "diffuse/core/compat.h"
#include "diffuse/models/group_norm_act.h"
#include "diffuse/models/presets.h"
#include "diffuse/models/unet.h"
#include "support.h"

using diffuse::group_norm_act;
using diffuse::group_norm_act_fused;
using diffuse::group_norm_act_reference;
using diffuse::testing::expect_error;

namespace {

// Tolerances of the fused kernel against the reference computed in float64 on the same values,
// as max |a - b| / max |b|. float32: the kernel sums in float32 per block and float64 across
// blocks, ATen in its own order; 1e-4 leaves two orders of margin over float32 rounding of
// ~4,000-element sums. bf16: inputs are the same bf16 values, statistics float32, the output
// rounded to bf16 (relative step 2^-8 = 3.9e-3), so 1e-2.
constexpr double kFloat32Tol = 1e-4;
constexpr double kBf16Tol = 1e-2;

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  auto a64 = a.detach().to(torch::kCPU, torch::kFloat64);
  auto b64 = b.detach().to(torch::kCPU, torch::kFloat64);
  return (a64 - b64).abs().max().item<double>() / b64.abs().max().item<double>();
}

// Restores the process-wide switch whatever a test does.
struct FusedSwitch {
  bool before = diffuse::fused_group_norm_enabled();
  explicit FusedSwitch(bool on) { diffuse::set_fused_group_norm(on); }
  ~FusedSwitch() { diffuse::set_fused_group_norm(before); }
};

// The reason a GPU test cannot run here, or "" when it can.
std::string gpu_skip_reason() {
  if (!diffuse::fused_group_norm_compiled())
    return "this build has no CUDA kernels (needs a CUDA LibTorch and nvcc)";
  if (!torch::cuda::is_available()) return "no CUDA device on this machine";
  return "";
}

#define DIFFUSE_REQUIRE_GPU()                    \
  do {                                           \
    const auto reason = gpu_skip_reason();       \
    if (!reason.empty()) GTEST_SKIP() << reason; \
  } while (0)

}  // namespace

TEST(GroupNormActReference, MatchesTheDefinitionInFloat64) {
  // group_norm(x + temb) * gamma + beta then SiLU, written out per group.
  torch::manual_seed(0);
  const int64_t B = 2, C = 6, G = 3, H = 3, W = 4;
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto x = torch::randn({B, C, H, W}, opts) * 2 + 0.5;
  auto temb = torch::randn({B, C}, opts);
  auto gamma = torch::randn({C}, opts), beta = torch::randn({C}, opts);
  const double eps = 1e-5;
  auto out = group_norm_act_reference(x, temb, G, gamma, beta, eps, true);
  auto v = x + temb.view({B, C, 1, 1});
  auto expected = torch::empty_like(x);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t g = 0; g < G; ++g) {
      auto part = v[n].slice(0, g * C / G, (g + 1) * C / G);  // (C/G, H, W)
      const double mean = part.mean().item<double>();
      const double var = (part - mean).pow(2).mean().item<double>();  // biased, as GroupNorm
      for (int64_t c = g * C / G; c < (g + 1) * C / G; ++c) {
        auto z = (v[n][c] - mean) / std::sqrt(var + eps) * gamma[c] + beta[c];
        expected[n][c] = z / (1 + torch::exp(-z));
      }
    }
  EXPECT_LT(rel_err(out, expected), 1e-12);
  // Without SiLU and without temb it is plain GroupNorm.
  auto plain = group_norm_act_reference(x, {}, G, gamma, beta, eps, false);
  EXPECT_TRUE(torch::allclose(plain, torch::group_norm(x, G, gamma, beta, eps), 0, 1e-14));
}

TEST(GroupNormActReference, CpuPathIsTheModulePathBitForBit) {
  // What ResnetBlock2D computed before group_norm_act existed: silu(norm2(h + temb)). On the CPU
  // the switch changes nothing, in either layout.
  torch::manual_seed(1);
  torch::nn::GroupNorm norm(torch::nn::GroupNormOptions(4, 8).eps(1e-6));
  {
    torch::NoGradGuard no_grad;
    norm->weight.normal_();
    norm->bias.normal_();
  }
  auto h = torch::randn({3, 8, 5, 5}), temb = torch::randn({3, 8});
  auto before = torch::silu(norm(h + temb.unsqueeze(-1).unsqueeze(-1)));
  for (bool on : {false, true}) {
    FusedSwitch sw(on);
    EXPECT_TRUE(torch::equal(group_norm_act(norm, h, temb, true), before));
    auto h_cl = h.contiguous(at::MemoryFormat::ChannelsLast);
    EXPECT_TRUE(torch::allclose(group_norm_act(norm, h_cl, temb, true), before, 1e-6, 1e-6));
    EXPECT_TRUE(torch::equal(group_norm_act(norm, h, {}, false), norm(h)));
  }
}

TEST(GroupNormActFused, RejectsBadInputBeforeTouchingADevice) {
  auto cl = [](torch::Tensor t) { return t.contiguous(at::MemoryFormat::ChannelsLast); };
  auto x = cl(torch::randn({2, 8, 4, 4}));
  auto w = torch::ones({8}), b = torch::zeros({8}), temb = torch::zeros({2, 8});
  expect_error(
      [&] {
        group_norm_act_fused(torch::randn({2, 8, 4}), {}, 4, w, b, 1e-5, true);
      },
      {"(B, C, H, W)"});
  expect_error([&] { group_norm_act_fused(x.to(torch::kFloat64), {}, 4, w, b, 1e-5, true); },
               {"float32 or bfloat16", "Double"});
  expect_error([&] { group_norm_act_fused(x, {}, 3, w, b, 1e-5, true); },
               {"3 groups do not divide 8 channels"});
  expect_error([&] { group_norm_act_fused(x.contiguous(), {}, 4, w, b, 1e-5, true); },
               {"channels-last"});
  expect_error([&] { group_norm_act_fused(x, {}, 4, torch::ones({4}), b, 1e-5, true); },
               {"weight and bias must be (8)"});
  expect_error(
      [&] {
        group_norm_act_fused(x, torch::zeros({2, 4}), 4, w, b, 1e-5, true);
      },
      {"time embedding must be (B, C) = (2, 8)", "[2, 4]"});
  expect_error(
      [&] {
        group_norm_act_fused(cl(torch::randn({0, 8, 4, 4})), {}, 4, w, b, 1e-5, true);
      },
      {"non-empty"});
  // A valid CPU input: this build has no kernels, or the tensor is not on CUDA.
  expect_error([&] { group_norm_act_fused(x, temb, 4, w, b, 1e-5, true); },
               {diffuse::fused_group_norm_compiled() ? "needs a CUDA tensor" : "no CUDA kernels"});
}

// Arguments the kernel does not take fall back to the reference instead of throwing: an
// affine=false norm, a temb of another shape or dtype, odd weights. Each case breaks one rule.
TEST(GroupNormActFused, UnusualArgumentsAreNotFusable) {
  auto cl = [](torch::Tensor t) { return t.contiguous(at::MemoryFormat::ChannelsLast); };
  auto x = cl(torch::randn({2, 8, 4, 4})).to(torch::kBFloat16);
  auto w = torch::ones({8}), b = torch::zeros({8}), temb = torch::zeros({2, 8});
  using diffuse::group_norm_act_fusable;
  EXPECT_TRUE(group_norm_act_fusable(x, temb, 4, w, b));
  EXPECT_TRUE(group_norm_act_fusable(x, {}, 4, w, b));
  EXPECT_TRUE(group_norm_act_fusable(x.to(torch::kFloat32), temb.to(torch::kBFloat16), 4, w, b));
  EXPECT_FALSE(group_norm_act_fusable(x, temb, 4, {}, {}));  // affine=false
  EXPECT_FALSE(group_norm_act_fusable(x, temb, 4, w, {}));
  EXPECT_FALSE(group_norm_act_fusable(x, temb, 4, torch::ones({4}), b));
  EXPECT_FALSE(group_norm_act_fusable(x, temb, 4, w.to(torch::kLong), b));
  EXPECT_FALSE(group_norm_act_fusable(x, temb, 4, torch::ones({8, 1}), b));
  EXPECT_FALSE(group_norm_act_fusable(x, torch::zeros({2, 4}), 4, w, b));
  EXPECT_FALSE(group_norm_act_fusable(x, torch::zeros({1, 8}), 4, w, b));  // broadcast temb
  EXPECT_FALSE(group_norm_act_fusable(x, torch::zeros({2, 8, 1, 1}), 4, w, b));
  EXPECT_FALSE(group_norm_act_fusable(x, temb.to(torch::kFloat64), 4, w, b));
  EXPECT_FALSE(group_norm_act_fusable(x, temb, 3, w, b));
  EXPECT_FALSE(group_norm_act_fusable(x, temb, 0, w, b));
  EXPECT_FALSE(group_norm_act_fusable(x.contiguous(), temb, 4, w, b));
  EXPECT_FALSE(group_norm_act_fusable(x.to(torch::kFloat16), temb, 4, w, b));
  EXPECT_FALSE(group_norm_act_fusable(cl(torch::randn({0, 8, 4, 4})), {}, 4, w, b));
  // And the dispatcher takes such a norm through the reference (here on the CPU, switch on).
  FusedSwitch sw(true);
  torch::nn::GroupNorm plain(torch::nn::GroupNormOptions(4, 8).affine(false));
  auto xf = x.to(torch::kFloat32);
  EXPECT_TRUE(torch::allclose(group_norm_act(plain, xf, temb, false),
                              torch::group_norm(xf + temb.view({2, 8, 1, 1}), 4), 1e-6, 1e-6));
}

// The fused output's dtype is the one ATen's composite gives: computed here by ATen itself.
TEST(GroupNormActFused, OutputDtypeIsAtens) {
  using diffuse::group_norm_act_output_dtype;
  auto x = torch::randn({2, 8, 4, 4}).to(torch::kBFloat16);
  auto t32 = torch::randn({2, 8}), t16 = t32.to(torch::kBFloat16);
  EXPECT_EQ(group_norm_act_output_dtype(x, {}), x.scalar_type());
  EXPECT_EQ(group_norm_act_output_dtype(x, t16), (x + t16.view({2, 8, 1, 1})).scalar_type());
  // bf16 x + float32 temb promotes: the old kernel rounded temb to bf16 and returned bf16.
  EXPECT_EQ(group_norm_act_output_dtype(x, t32), (x + t32.view({2, 8, 1, 1})).scalar_type());
  EXPECT_EQ(group_norm_act_output_dtype(x, t32), torch::kFloat32);
  // Under CUDA autocast group_norm runs (and returns) float32 (autocast's fp32 list).
  diffuse::AutocastGuard autocast(true);
  EXPECT_EQ(group_norm_act_output_dtype(x, t16), torch::kFloat32);
  EXPECT_EQ(group_norm_act_output_dtype(x, {}), torch::kFloat32);
}

TEST(GroupNormActFused, SwitchNeedsCompiledKernels) {
  FusedSwitch sw(true);
  EXPECT_EQ(diffuse::fused_group_norm_enabled(), diffuse::fused_group_norm_compiled());
  diffuse::set_fused_group_norm(false);
  EXPECT_FALSE(diffuse::fused_group_norm_enabled());
}

namespace {

struct Case {
  int64_t B, C, G, H, W;
  bool temb, silu;
};

// Fused kernel vs the float64 reference on the same values: output, dx, dtemb, dgamma, dbeta.
void check_against_reference(const Case& k, torch::ScalarType dtype, double tol) {
  SCOPED_TRACE(::testing::Message()
               << "B " << k.B << " C " << k.C << " G " << k.G << " " << k.H << "x" << k.W
               << " temb " << k.temb << " silu " << k.silu << " " << c10::toString(dtype));
  torch::manual_seed(k.B * 1000 + k.C);
  auto cuda = torch::TensorOptions().device(torch::kCUDA);
  // An offset per channel, as conv outputs have, so the variance is not of zero-mean data.
  auto x = (torch::randn({k.B, k.C, k.H, k.W}, cuda) + torch::randn({1, k.C, 1, 1}, cuda))
               .to(dtype)
               .contiguous(at::MemoryFormat::ChannelsLast);
  auto temb = k.temb ? torch::randn({k.B, k.C}, cuda).to(dtype) : torch::Tensor();
  auto gamma = 1 + 0.3 * torch::randn({k.C}, cuda), beta = 0.3 * torch::randn({k.C}, cuda);
  auto dy = torch::randn({k.B, k.C, k.H, k.W}, cuda).to(dtype);
  const double eps = 1e-6;

  auto leaf = [](const torch::Tensor& t, torch::ScalarType s) {
    return t.defined() ? t.detach().to(s).requires_grad_(true) : torch::Tensor();
  };
  auto xf = leaf(x, dtype), tf = leaf(temb, dtype);
  auto gf = leaf(gamma, torch::kFloat32), bf = leaf(beta, torch::kFloat32);
  auto y = group_norm_act_fused(xf, tf, k.G, gf, bf, eps, k.silu);
  EXPECT_EQ(y.scalar_type(), dtype);
  EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
  y.backward(dy);

  auto xr = leaf(x, torch::kFloat64), tr = leaf(temb, torch::kFloat64);
  auto gr = leaf(gamma, torch::kFloat64), br = leaf(beta, torch::kFloat64);
  auto yr = group_norm_act_reference(xr, tr, k.G, gr, br, eps, k.silu);
  yr.backward(dy.to(torch::kFloat64));

  EXPECT_LT(rel_err(y, yr), tol) << "output";
  EXPECT_LT(rel_err(xf.grad(), xr.grad()), tol) << "dx";
  EXPECT_LT(rel_err(gf.grad(), gr.grad()), tol) << "dgamma";
  EXPECT_LT(rel_err(bf.grad(), br.grad()), tol) << "dbeta";
  if (k.temb) {
    EXPECT_EQ(tf.grad().scalar_type(), dtype);
    EXPECT_LT(rel_err(tf.grad(), tr.grad()), tol) << "dtemb";
  }
}

// The production shapes of the fmnist and CIFAR-10 U-Nets (B = 64, C = 128 and 256 at 32x32 and
// 16x16), channel counts that are not multiples of the 32-lane block, and batch 1.
const std::vector<Case> kProductionCases = {
    {64, 128, 32, 32, 32, true, true},   // 64 pixels a block: the multi-row path
    {64, 256, 32, 16, 16, true, true},   // 32 pixels a block
    {64, 128, 32, 16, 16, false, true},  // conv_norm_out-like, no temb
    {64, 256, 32, 8, 8, false, false},   // an attention norm at the lowest resolution
    {64, 80, 16, 32, 32, true, true},    // 80 = 2.5 blocks of 32 lanes
    {64, 48, 8, 15, 15, true, true},     // 48 channels, 225 pixels: a partial last chunk
    {1, 128, 32, 32, 32, true, true},    // batch 1: 32 groups, 128 chunks
    {1, 256, 32, 16, 16, true, true},
    {64, 512, 1, 4, 4, true, true},  // one group of 512 channels: L = 128 lanes, 4 passes
};

const std::vector<Case> kCases = {
    {2, 64, 32, 8, 8, true, true},      // a ResnetBlock2D norm2 (2 channels a group)
    {3, 48, 8, 7, 5, true, true},       // channels not a multiple of 32, odd spatial size
    {4, 128, 32, 16, 16, false, true},  // norm1 / conv_norm_out
    {2, 96, 32, 4, 4, false, false},    // an attention norm
    {1, 256, 32, 32, 32, true, true},   // batch 1, a large group (8 x 1024 elements)
    {40, 32, 32, 2, 2, true, true},     // one channel a group, many samples
};

}  // namespace

TEST(GroupNormActFusedGpu, Float32MatchesReferenceForwardAndGradients) {
  DIFFUSE_REQUIRE_GPU();
  for (const auto& k : kCases) check_against_reference(k, torch::kFloat32, kFloat32Tol);
}

TEST(GroupNormActFusedGpu, Bf16MatchesReferenceForwardAndGradients) {
  DIFFUSE_REQUIRE_GPU();
  for (const auto& k : kCases) check_against_reference(k, torch::kBFloat16, kBf16Tol);
}

TEST(GroupNormActFusedGpu, ProductionShapesReachTheMultiRowPath) {
  DIFFUSE_REQUIRE_GPU();
  EXPECT_EQ(diffuse::fused_group_norm_pixels_per_block(64, 128, 32 * 32), 64);
  EXPECT_GT(diffuse::fused_group_norm_pixels_per_block(64, 256, 16 * 16), 8);
  EXPECT_EQ(diffuse::fused_group_norm_pixels_per_block(1, 128, 32 * 32), 8);
}

TEST(GroupNormActFusedGpu, Float32MatchesReferenceAtProductionShapes) {
  DIFFUSE_REQUIRE_GPU();
  for (const auto& k : kProductionCases) check_against_reference(k, torch::kFloat32, kFloat32Tol);
}

TEST(GroupNormActFusedGpu, Bf16MatchesReferenceAtProductionShapes) {
  DIFFUSE_REQUIRE_GPU();
  for (const auto& k : kProductionCases) check_against_reference(k, torch::kBFloat16, kBf16Tol);
}

namespace {

// Under bf16 autocast: x and temb bf16 (conv and linear outputs), dy float32 (what flows back
// into a float32 output). The output must be float32 like ATen's, and, with dy read unrounded and
// temb kept in float32, the output, dgamma, dbeta and dtemb are float32-accurate against the
// float64 reference on the same bf16 values; dx is x's bf16.
void check_under_autocast(const Case& k) {
  SCOPED_TRACE(::testing::Message() << "B " << k.B << " C " << k.C << " " << k.H << "x" << k.W);
  torch::manual_seed(7 + k.B + k.C);
  auto cuda = torch::TensorOptions().device(torch::kCUDA);
  auto x = (torch::randn({k.B, k.C, k.H, k.W}, cuda) + torch::randn({1, k.C, 1, 1}, cuda))
               .to(torch::kBFloat16)
               .contiguous(at::MemoryFormat::ChannelsLast);
  auto temb = torch::randn({k.B, k.C}, cuda).to(torch::kBFloat16);
  auto gamma = 1 + 0.3 * torch::randn({k.C}, cuda), beta = 0.3 * torch::randn({k.C}, cuda);
  auto dy = torch::randn({k.B, k.C, k.H, k.W}, cuda);
  auto leaf = [](const torch::Tensor& t, torch::ScalarType s) {
    return t.detach().to(s).requires_grad_(true);
  };
  auto xf = leaf(x, torch::kBFloat16), tf = leaf(temb, torch::kBFloat16);
  auto gf = leaf(gamma, torch::kFloat32), bf = leaf(beta, torch::kFloat32);
  torch::Tensor y, ya;
  {
    diffuse::AutocastGuard autocast(true);
    y = group_norm_act_fused(xf, tf, k.G, gf, bf, 1e-6, true);
    ya = group_norm_act_reference(x, temb, k.G, gamma, beta, 1e-6, true);  // ATen
  }
  EXPECT_EQ(y.scalar_type(), ya.scalar_type());
  EXPECT_EQ(y.scalar_type(), torch::kFloat32);
  y.backward(dy);
  auto xr = leaf(x, torch::kFloat64), tr = leaf(temb, torch::kFloat64);
  auto gr = leaf(gamma, torch::kFloat64), br = leaf(beta, torch::kFloat64);
  auto yr = group_norm_act_reference(xr, tr, k.G, gr, br, 1e-6, true);
  yr.backward(dy.to(torch::kFloat64));
  EXPECT_LT(rel_err(y, yr), kFloat32Tol) << "output";
  EXPECT_LT(rel_err(gf.grad(), gr.grad()), kFloat32Tol) << "dgamma";
  EXPECT_LT(rel_err(bf.grad(), br.grad()), kFloat32Tol) << "dbeta";
  EXPECT_LT(rel_err(tf.grad().to(torch::kFloat32), tr.grad()), kBf16Tol) << "dtemb (bf16)";
  EXPECT_LT(rel_err(xf.grad(), xr.grad()), kBf16Tol) << "dx (bf16)";
}

}  // namespace

TEST(GroupNormActFusedGpu, UnderAutocastReturnsFloat32AndKeepsGradientsFloat32) {
  DIFFUSE_REQUIRE_GPU();
  for (const auto& k : kProductionCases) check_under_autocast(k);
}

// bf16 x with a float32 temb (no autocast): the sum is float32 in ATen, and so in the kernel.
TEST(GroupNormActFusedGpu, Float32TembIsNotRoundedToBf16) {
  DIFFUSE_REQUIRE_GPU();
  torch::manual_seed(5);
  auto cuda = torch::TensorOptions().device(torch::kCUDA);
  auto x = torch::randn({4, 64, 8, 8}, cuda)
               .to(torch::kBFloat16)
               .contiguous(at::MemoryFormat::ChannelsLast);
  auto temb = torch::randn({4, 64}, cuda) * 3;  // float32 values bf16 cannot hold
  auto w = torch::ones({64}, cuda), b = torch::zeros({64}, cuda);
  auto y = group_norm_act_fused(x, temb, 32, w, b, 1e-6, false);
  auto yr = group_norm_act_reference(x.to(torch::kFloat64), temb.to(torch::kFloat64), 32,
                                     w.to(torch::kFloat64), b.to(torch::kFloat64), 1e-6, false);
  EXPECT_EQ(y.scalar_type(), torch::kFloat32);
  EXPECT_LT(rel_err(y, yr), kFloat32Tol);
}

// An affine=false norm and a broadcast temb take the reference on CUDA too, switch on.
TEST(GroupNormActFusedGpu, UnusualNormsFallBackOnCuda) {
  DIFFUSE_REQUIRE_GPU();
  FusedSwitch sw(true);
  auto cuda = torch::TensorOptions().device(torch::kCUDA);
  auto x = torch::randn({2, 8, 4, 4}, cuda).contiguous(at::MemoryFormat::ChannelsLast);
  torch::nn::GroupNorm plain(torch::nn::GroupNormOptions(4, 8).affine(false));
  plain->to(torch::kCUDA);
  EXPECT_TRUE(
      torch::allclose(group_norm_act(plain, x, {}, true), torch::silu(plain(x)), 1e-5, 1e-6));
  torch::nn::GroupNorm affine(torch::nn::GroupNormOptions(4, 8));
  affine->to(torch::kCUDA);
  auto t = torch::randn({1, 8}, cuda);
  EXPECT_TRUE(torch::allclose(group_norm_act(affine, x, t, false), affine(x + t.view({1, 8, 1, 1})),
                              1e-5, 1e-6));
}

TEST(GroupNormActFusedGpu, DeterministicAndNoGradPathAgrees) {
  DIFFUSE_REQUIRE_GPU();
  torch::manual_seed(3);
  auto cuda = torch::TensorOptions().device(torch::kCUDA);
  auto x = torch::randn({8, 64, 16, 16}, cuda)
               .to(torch::kBFloat16)
               .contiguous(at::MemoryFormat::ChannelsLast);
  auto temb = torch::randn({8, 64}, cuda).to(torch::kBFloat16);
  auto w = torch::randn({64}, cuda), b = torch::randn({64}, cuda);
  auto a = group_norm_act_fused(x, temb, 32, w, b, 1e-6, true);
  {
    c10::InferenceMode inference;
    auto c = group_norm_act_fused(x, temb, 32, w, b, 1e-6, true);
    EXPECT_TRUE(torch::equal(a, c));  // no autograd, same kernels
  }
  auto xg = x.detach().requires_grad_(true);
  auto dy = torch::randn_like(x);
  group_norm_act_fused(xg, temb, 32, w, b, 1e-6, true).backward(dy);
  auto g1 = xg.grad().clone();
  xg.mutable_grad() = torch::Tensor();
  group_norm_act_fused(xg, temb, 32, w, b, 1e-6, true).backward(dy);
  EXPECT_TRUE(torch::equal(g1, xg.grad()));  // fixed reduction order: same bits every run
}

namespace {

// Output and parameter gradients of loss = mean(out^2) for the tiny preset on CUDA.
struct Run {
  torch::Tensor out;
  std::vector<torch::Tensor> grads;
};
Run unet_run(diffuse::UNet2DModel& m, const torch::Tensor& x, const torch::Tensor& t, bool bf16) {
  m->zero_grad();
  torch::Tensor out;
  {
    diffuse::AutocastGuard autocast(bf16);
    out = m->forward(x, t);
  }
  out = out.to(torch::kFloat32);
  out.pow(2).mean().backward();
  Run r{out.detach(), {}};
  for (auto& p : m->parameters()) r.grads.push_back(p.grad().detach().clone());
  return r;
}

// The U-Net (preset) on CUDA, channels-last + fused against ATen's NCHW path, forward and
// parameter gradients, in float32 and under bf16 autocast.
void expect_channels_last_unet_matches_aten(const std::string& preset, int64_t batch) {
  SCOPED_TRACE(preset);
  torch::manual_seed(0);
  diffuse::UNet2DModel m(diffuse::preset_config(preset));
  m->to(torch::kCUDA);
  // Dropout off (eval) so both runs see the same network; the backward is the same.
  m->eval();
  const auto& cfg = m->config();
  auto x = torch::randn({batch, cfg.in_channels, cfg.sample_size, cfg.sample_size},
                        torch::TensorOptions().device(torch::kCUDA));
  auto t = torch::randint(0, 1000, {batch}, torch::TensorOptions().device(torch::kCUDA));

  // True float32 convolutions in both layouts: TF32 would differ by algorithm at 1e-3.
  struct NoTf32 {
    bool before = at::globalContext().allowTF32CuDNN();
    NoTf32() { at::globalContext().setAllowTF32CuDNN(false); }
    ~NoTf32() { at::globalContext().setAllowTF32CuDNN(before); }
  } no_tf32;
  auto eager = unet_run(m, x, t, false);  // ATen, NCHW, float32
  m->set_channels_last(true);
  FusedSwitch sw(true);
  auto fused = unet_run(m, x, t, false);
  EXPECT_TRUE(fused.out.is_contiguous(at::MemoryFormat::ChannelsLast));
  // float32 through different kernels (cuDNN NHWC algorithms, the fused norm): 1e-3 of the scale.
  EXPECT_LT(rel_err(fused.out, eager.out), 1e-3);
  ASSERT_EQ(fused.grads.size(), eager.grads.size());
  for (size_t i = 0; i < eager.grads.size(); ++i)
    EXPECT_LT(rel_err(fused.grads[i], eager.grads[i]), 1e-3) << "parameter " << i;
  // bf16 autocast, forward and backward, channels-last + fused against ATen's NCHW bf16 run,
  // each measured from the float32 run: within bf16's precision through a dozen layers (5e-2),
  // and no more than twice ATen's own bf16 error plus 1e-2.
  auto bf = unet_run(m, x, t, true);
  m->set_channels_last(false);
  diffuse::set_fused_group_norm(false);
  auto aten_bf = unet_run(m, x, t, true);
  EXPECT_LT(rel_err(bf.out, eager.out), 5e-2);
  EXPECT_LT(rel_err(bf.out, eager.out), 2 * rel_err(aten_bf.out, eager.out) + 1e-2);
  for (size_t i = 0; i < eager.grads.size(); ++i) {
    const double aten_err = rel_err(aten_bf.grads[i], eager.grads[i]);
    EXPECT_LT(rel_err(bf.grads[i], eager.grads[i]), std::max(5e-2, 2 * aten_err + 1e-2))
        << "parameter " << i << " (ATen bf16: " << aten_err << ")";
  }
  for (auto& p : m->parameters()) EXPECT_TRUE(p.is_contiguous());
}

}  // namespace

TEST(GroupNormActFusedGpu, ChannelsLastUNetMatchesEagerAten) {
  DIFFUSE_REQUIRE_GPU();
  expect_channels_last_unet_matches_aten("tiny-test", 4);
}

// The production network: C = 128 and 256, 32x32 down to 4x4, attention at 16x16.
TEST(GroupNormActFusedGpu, ChannelsLastUNetMatchesEagerAtenAtProductionSize) {
  DIFFUSE_REQUIRE_GPU();
  expect_channels_last_unet_matches_aten("ddpm-cifar10", 8);
}
