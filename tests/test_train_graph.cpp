// The training step captured as one CUDA graph (--cuda-graph): its device-scalar pieces against
// their eager forms on the CPU, and graphed steps against eager steps on a GPU (skipped, with the
// reason printed, where there is none).
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "diffuse/core/compat.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/models/group_norm_act.h"
#include "diffuse/pipeline/cuda_graph.h"
#include "diffuse/train/adamw.h"
#include "diffuse/train/ema.h"
#include "diffuse/train/trainer.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace diffuse;
using diffuse::testing::expect_error;

namespace {

std::string temp_dir(const std::string& name) {
  auto p =
      fs::temp_directory_path() / ("diffuse_test_graph_" + name + "_" + std::to_string(::getpid()));
  remove_tree(p);
  return p.string();
}

TrainConfig synthetic_config(const std::string& name, const std::string& device) {
  TrainConfig c;
  c.data = "synthetic";
  c.model = "tiny-test";
  c.out = temp_dir(name);
  c.batch = 8;
  c.lr = 1e-3;
  // Longer than CapturedStep's 3 eager warm-up calls, so the learning rate still changes at every
  // replay: a learning rate frozen into the graph would not pass.
  c.warmup = 10;
  c.ema_decay = 0.99;
  c.sample_every = c.ckpt_every = 0;
  c.device = device;
  c.precision = "fp32";
  return c;
}

std::vector<torch::Tensor> params_of(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (auto& p : m.parameters()) out.push_back(p.detach().to(torch::kCPU, torch::kFloat64));
  return out;
}

// mean |a - b| over all parameters.
double mean_abs_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double sum = 0;
  int64_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sum += (a[i] - b[i]).abs().sum().item<double>();
    n += a[i].numel();
  }
  return sum / static_cast<double>(n);
}

}  // namespace

TEST(CapturedStep, RunsEagerlyOffCuda) {
  CapturedStep step(torch::Device("cpu"), 1);
  int calls = 0;
  for (int i = 0; i < 4; ++i) step([&] { ++calls; });
  EXPECT_EQ(calls, 4);
  EXPECT_FALSE(step.captured());
}

TEST(GraphPieces, EmaWithADeviceDecayFollowsTheHostOne) {
  torch::manual_seed(0);
  torch::nn::Linear a(4, 3), a_shadow(4, 3), b(4, 3), b_shadow(4, 3);
  {
    torch::NoGradGuard no_grad;
    for (auto* m : {&a_shadow, &b, &b_shadow}) {
      auto src = a->parameters(), dst = (*m)->parameters();
      for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i] * (m == &b ? 1.0 : 0.5));
    }
  }
  Ema host(*a, a_shadow.ptr(), 0.9, true), device(*b, b_shadow.ptr(), 0.9, true);
  host.update(5);
  device.update(torch::tensor(static_cast<float>(host.decay_at(5))));
  for (size_t i = 0; i < 2; ++i)
    EXPECT_TRUE(torch::allclose(a_shadow->parameters()[i], b_shadow->parameters()[i], 1e-6, 1e-7));
  // And it moved: shadow = d * shadow + (1 - d) * model with d = min(0.9, 6 / 15) = 0.4.
  auto expected = 0.4 * 0.5 * a->weight + 0.6 * a->weight;
  EXPECT_TRUE(torch::allclose(b_shadow->weight, expected, 1e-6, 1e-7));
}

// The tensor learning rate the step body passes is the host one, bit for bit, off CUDA.
TEST(GraphPieces, AdamWWithATensorLearningRateIsTheHostStep) {
  torch::manual_seed(1);
  auto a = torch::randn({5}, torch::requires_grad()), b = a.detach().clone().requires_grad_();
  AdamW host({{"p", a}}, AdamWOptions{}), tensor({{"p", b}}, AdamWOptions{});
  for (int i = 0; i < 3; ++i) {
    a.mutable_grad() = torch::full({5}, 0.5 + i);
    b.mutable_grad() = torch::full({5}, 0.5 + i);
    host.step(1e-3 * (i + 1));
    tensor.step(torch::tensor(1e-3 * (i + 1), torch::kFloat64));
  }
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_EQ(tensor.steps_taken(), 3);
  EXPECT_FALSE(torch::equal(a, torch::randn({5})));
}

TEST(GraphPieces, FusedNormNeedsChannelsLast) {
  auto c = synthetic_config("validate", "cpu");
  c.fused_norm = true;
  expect_error([&] { c.validate(); }, {"--fused-norm needs --channels-last"});
  // The sampler and class conditioning are inputs of the one step body, so the graph takes them.
  c.fused_norm = false;
  c.cuda_graph = c.class_cond = true;
  c.timestep_sampler = "loss-second-moment";
  EXPECT_NO_THROW(c.validate());
}

TEST(GraphPieces, CpuIgnoresTheGpuSwitches) {
  // On the CPU --cuda-graph, --channels-last and --fused-norm change nothing, bit for bit.
  auto plain = synthetic_config("cpu_plain", "cpu");
  auto switched = synthetic_config("cpu_switched", "cpu");
  switched.cuda_graph = switched.channels_last = switched.fused_norm = true;
  plain.batch = switched.batch = 2;
  Trainer a(plain), b(switched);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(a.train_step(), b.train_step()));
  auto pa = params_of(*a.model()), pb = params_of(*b.model());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i]));
  EXPECT_FALSE(b.step_captured());
  remove_tree(plain.out);
  remove_tree(switched.out);
}

namespace {

// Eager steps and graphed steps (3 eager warm-ups, the capture, replays) from the same seed.
void expect_graph_matches_eager(bool channels_last_fused,
                                const std::function<void(TrainConfig&)>& tweak = {}) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device on this machine";
#if !DIFFUSE_TORCH_AT_LEAST(2, 4)
  GTEST_SKIP() << "the captured step needs LibTorch >= 2.4";
#endif
  if (channels_last_fused && !fused_group_norm_compiled())
    GTEST_SKIP() << "this build has no CUDA kernels";
  auto eager_cfg = synthetic_config("gpu_eager", "cuda");
  auto graph_cfg = synthetic_config("gpu_graph", "cuda");
  graph_cfg.cuda_graph = true;
  for (auto* c : {&eager_cfg, &graph_cfg}) {
    c->channels_last = c->fused_norm = channels_last_fused;
    if (tweak) tweak(*c);
  }
  Trainer eager(eager_cfg), graphed(graph_cfg);
  // The same kernels for both: deterministic cuDNN algorithms, no TF32.
  at::globalContext().setBenchmarkCuDNN(false);
  at::globalContext().setDeterministicCuDNN(true);
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  const int steps = 7;
  for (int i = 0; i < steps; ++i) {
    const double le = eager.train_step().item<double>();
    const double lg = graphed.train_step().item<double>();
    EXPECT_NEAR(lg, le, 1e-4 * std::abs(le)) << "loss at step " << i + 1;
  }
  EXPECT_TRUE(graphed.step_captured());
  EXPECT_EQ(graphed.step(), steps);
  // Adam moves each weight by about lr per step: a graph that missed an input, the learning
  // rate or a step would be off by that much; float noise amplified by Adam stays far below.
  const double scale = eager_cfg.lr * steps;
  EXPECT_LT(mean_abs_diff(params_of(*graphed.model()), params_of(*eager.model())), 1e-3 * scale);
  EXPECT_LT(mean_abs_diff(params_of(*graphed.ema_model()), params_of(*eager.ema_model())),
            1e-3 * scale);
  EXPECT_GT(mean_abs_diff(params_of(*graphed.model()), params_of(*graphed.ema_model())), 0);
  set_fused_group_norm(false);
  remove_tree(eager_cfg.out);
  remove_tree(graph_cfg.out);
}

}  // namespace

TEST(GraphedTrainStepGpu, MatchesEagerSteps) {
  expect_graph_matches_eager(false);
}

TEST(GraphedTrainStepGpu, MatchesEagerStepsChannelsLastFused) {
  expect_graph_matches_eager(true);
}

// The sampler's weights are an input of the graphed step and its history is fed from the step's
// per-sample losses; T = 4 fills the history within the 7 steps.
TEST(GraphedTrainStepGpu, MatchesEagerStepsWithTheLossSecondMomentSampler) {
  expect_graph_matches_eager(false, [](TrainConfig& c) {
    c.timestep_sampler = "loss-second-moment";
    c.schedule = "cosine";  // the linear schedule's 1000/T scaling needs T > 20
    c.timesteps = c.sample_steps = 4;
  });
}
