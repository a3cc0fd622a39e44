// The oneDNN CPU inference path against the ATen U-Net it must equal: every preset, the diffusers
// golden network, class-conditional, learned-variance, scaled and multi-head models, batch 1 and
// odd batches, every image size the network takes.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "diffuse/cpu/blocked.h"
#include "diffuse/cpu/unet_engine.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/safetensors.h"
#include "diffuse/models/presets.h"
#include "diffuse/models/unet.h"
#include "diffuse/models/weights.h"
#include "support.h"

using diffuse::DnnlUNet;
using diffuse::UNet2DModel;
using diffuse::UNetConfig;
using diffuse::testing::expect_error;
using json = nlohmann::json;

namespace {

const std::string kData = DIFFUSE_TEST_DATA;

// Random weights, with the norms' scales and shifts moved off PyTorch's 1 and 0 so a kernel that
// ignored them would show.
UNet2DModel random_model(const UNetConfig& cfg, uint64_t seed) {
  torch::manual_seed(seed);
  UNet2DModel m(cfg);
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters())
    if (p.dim() == 1) p.add_(torch::randn_like(p) * 0.2);
  m->eval();
  return m;
}

struct Diff {
  double max_abs, rel;
};

// The engine's output against ATen's for a batch of b at h x w; labels for class-conditional ones.
Diff compare(UNet2DModel model, int64_t b, int64_t h, int64_t w, uint64_t seed = 1) {
  const auto& cfg = model->config();
  torch::manual_seed(seed);
  auto x = torch::randn({b, cfg.in_channels, h, w});
  auto t = torch::randint(0, 1000, {b}, torch::kInt64);
  torch::Tensor labels;
  if (cfg.num_class_embeds > 0)
    labels = torch::randint(0, cfg.num_class_embeds, {b}, torch::kInt64);
  c10::InferenceMode inference;
  auto ref = model->forward(x, t, labels);
  DnnlUNet engine(model);
  auto out = engine.forward(x, t, labels);
  EXPECT_EQ(out.sizes(), ref.sizes());
  const double max_abs = (out - ref).abs().max().item<double>();
  const double rel = max_abs / ref.abs().max().item<double>();
  std::printf("[ engine ] b %lld %lldx%lld: max |dnnl - aten| %.3g (relative %.3g)\n",
              static_cast<long long>(b), static_cast<long long>(h), static_cast<long long>(w),
              max_abs, rel);
  return {max_abs, rel};
}

constexpr double kRel = 1e-4;

#define SKIP_WITHOUT_DNNL() \
  if (!diffuse::dnnl_compiled()) GTEST_SKIP() << "this build has no oneDNN"

}  // namespace

TEST(CpuEngine, EveryPresetMatchesAtenAtBatchOneAndOdd) {
  SKIP_WITHOUT_DNNL();
  for (const auto& [name, description] : diffuse::preset_names()) {
    SCOPED_TRACE(name);
    auto cfg = diffuse::preset_config(name);
    auto model = random_model(cfg, 3);
    for (int64_t b : {1, 3})
      EXPECT_LT(compare(model, b, cfg.sample_size, cfg.sample_size).rel, kRel);
  }
}

TEST(CpuEngine, EveryImageSizeMatchesAten) {
  SKIP_WITHOUT_DNNL();
  auto cfg = diffuse::preset_config("fmnist-small");  // sizes: multiples of 4
  auto model = random_model(cfg, 4);
  for (auto [h, w] :
       std::vector<std::pair<int64_t, int64_t>>{{4, 4}, {8, 8}, {16, 24}, {28, 28}, {48, 40}}) {
    SCOPED_TRACE(std::to_string(h) + "x" + std::to_string(w));
    EXPECT_LT(compare(model, 2, h, w).rel, kRel);
  }
}

TEST(CpuEngine, DiffusersGoldenUNetMatches) {
  SKIP_WITHOUT_DNNL();
  auto j = json::parse(diffuse::read_file(kData + "/unet_tiny.json"));
  UNet2DModel m(UNetConfig::from_json(j.at("config"), "unet_tiny.json"));
  const std::string w = kData + "/unet_tiny.safetensors";
  diffuse::load_state_dict(*m, diffuse::load_safetensors(w).tensors, w);
  m->eval();
  auto shape = j.at("x_shape").get<std::vector<int64_t>>();
  auto x = torch::tensor(j.at("x").get<std::vector<double>>()).reshape(shape).to(torch::kFloat32);
  auto t = torch::tensor(j.at("timesteps").get<std::vector<int64_t>>(), torch::kInt64);
  auto ref =
      torch::tensor(j.at("output_from_f32_weights").get<std::vector<double>>()).reshape(shape);
  DnnlUNet engine(m);
  auto out = engine.forward(x, t).to(torch::kFloat64);
  const double rel = (out - ref).abs().max().item<double>() / ref.abs().max().item<double>();
  std::printf("[ engine ] golden: relative difference to diffusers %.3g\n", rel);
  EXPECT_LT(rel, kRel);
  EXPECT_LT(compare(m, 1, 16, 16).rel, kRel);
  EXPECT_LT(compare(m, 5, 32, 16).rel, kRel);
}

// Class labels, learned variance (twice the output channels), several heads, the mid block's
// output scale (the convolution epilogue's scale) and input centring.
TEST(CpuEngine, ClassConditionalLearnedVarianceScaledMultiHeadMatch) {
  SKIP_WITHOUT_DNNL();
  auto cfg = diffuse::preset_config("tiny-test");
  cfg.num_class_embeds = 10;
  cfg.out_channels = 2 * cfg.in_channels;
  cfg.attention_head_dim = 8;
  cfg.mid_block_scale_factor = 1.5;
  cfg.center_input_sample = true;
  cfg.validate("test");
  auto model = random_model(cfg, 5);
  for (int64_t b : {1, 3}) EXPECT_LT(compare(model, b, 16, 16).rel, kRel);
  // A label change must change the output: the class embedding reaches the engine.
  auto x = torch::randn({1, 1, 16, 16});
  auto t = torch::full({1}, 10, torch::kInt64);
  DnnlUNet engine(model);
  auto a = engine.forward(x, t, torch::full({1}, 1, torch::kInt64));
  auto b = engine.forward(x, t, torch::full({1}, 2, torch::kInt64));
  EXPECT_GT((a - b).abs().max().item<double>(), 1e-3);
}

TEST(CpuEngine, CpuForwardRepacksAfterAWeightChangeAndHonoursAten) {
  SKIP_WITHOUT_DNNL();
  auto model = random_model(diffuse::preset_config("tiny-test"), 6);
  auto x = torch::randn({2, 1, 16, 16});
  auto t = torch::tensor({3, 700}, torch::kInt64);
  c10::InferenceMode inference;
  EXPECT_TRUE(diffuse::dnnl_applies(model, x));
  auto before = diffuse::cpu_unet_forward(model, x, t);
  {
    torch::NoGradGuard no_grad;
    model->conv_out->bias.add_(1.0);  // in place: the packed copy is stale now
  }
  auto after = diffuse::cpu_unet_forward(model, x, t);
  EXPECT_NEAR((after - before).mean().item<double>(), 1.0, 1e-4);
  EXPECT_LT((after - model->forward(x, t)).abs().max().item<double>(), 1e-4);
  diffuse::set_cpu_engine(diffuse::CpuEngine::Aten);
  EXPECT_FALSE(diffuse::dnnl_applies(model, x));
  EXPECT_TRUE(diffuse::cpu_unet_forward(model, x, t).equal(model->forward(x, t)));
  diffuse::set_cpu_engine(diffuse::CpuEngine::Dnnl);
}

TEST(CpuEngine, RefusesWhatItCannotRunWithReasons) {
  SKIP_WITHOUT_DNNL();
  auto cfg = diffuse::preset_config("tiny-test");
  cfg.block_out_channels = {12, 24};
  cfg.norm_num_groups = 4;
  EXPECT_NE(diffuse::dnnl_unsupported(cfg).find("not a multiple of"), std::string::npos);
  auto odd = random_model(cfg, 7);
  auto x = torch::randn({1, 1, 16, 16});
  EXPECT_FALSE(diffuse::dnnl_applies(odd, x));
  auto model = random_model(diffuse::preset_config("tiny-test"), 7);
  model->to(torch::kFloat64);
  expect_error([&] { DnnlUNet e(model); }, {"cpu engine dnnl", "float32"});
  EXPECT_FALSE(diffuse::dnnl_applies(model, x));
  expect_error([] { diffuse::parse_cpu_engine("onnx"); }, {"--cpu-engine", "onnx"});
  EXPECT_EQ(diffuse::parse_cpu_engine("aten"), diffuse::CpuEngine::Aten);
}

// The engine checks its input as the ATen model does, with the same messages.
TEST(CpuEngine, BadInputGetsTheModelsMessages) {
  SKIP_WITHOUT_DNNL();
  auto model = random_model(diffuse::preset_config("tiny-test"), 8);
  DnnlUNet engine(model);
  auto t = torch::zeros({1}, torch::kInt64);
  expect_error(
      [&] {
        engine.forward(torch::randn({1, 1, 15, 16}), t);
      },
      {"not a positive multiple"});
  expect_error([&] { engine.forward(torch::randn({1, 3, 16, 16}), t); }, {"channels"});
}

// GroupNorm with the time-embedding add, on the blocked layout, against ATen's group_norm.
TEST(CpuEngine, BlockedGroupNormMatchesAten) {
  const int64_t N = 2, C = 32, H = 5, W = 3, blk = 8, G = 4;
  torch::manual_seed(9);
  auto x = torch::randn({N, C, H, W}) * 3 + 1;
  auto temb = torch::randn({N, C});
  auto gamma = torch::randn({C}), beta = torch::randn({C});
  auto ref = torch::silu(torch::group_norm(x + temb.view({N, C, 1, 1}), G, gamma, beta, 1e-6));
  // (N, C, H, W) -> (N, C / blk, H, W, blk)
  auto blocked = x.view({N, C / blk, blk, H, W}).permute({0, 1, 3, 4, 2}).contiguous();
  auto out = torch::empty_like(blocked);
  diffuse::cpu::GroupNormArgs a{gamma.data_ptr<float>(), beta.data_ptr<float>(), G, 1e-6f};
  a.temb = temb.data_ptr<float>();
  a.temb_stride = C;
  a.silu = true;
  diffuse::cpu::group_norm_blocked(blocked.data_ptr<float>(), {N, C, H, W, blk}, a,
                                   out.data_ptr<float>());
  auto back = out.permute({0, 1, 4, 2, 3}).reshape({N, C, H, W});
  EXPECT_LT((back - ref).abs().max().item<double>(), 1e-5);
}
