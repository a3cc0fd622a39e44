// The training step captured as one CUDA graph (--cuda-graph): its device-scalar pieces against
// their eager forms on the CPU, and graphed steps against eager steps on a GPU (skipped, with the
// reason printed, where there is none).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>

#include "diffuse/core/compat.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/models/group_norm_act.h"
#include "diffuse/models/presets.h"
#include "diffuse/pipeline/cuda_graph.h"
#include "diffuse/train/adamw.h"
#include "diffuse/train/ema.h"
#include "diffuse/train/trainer.h"
#include "support.h"

#ifdef DIFFUSE_WITH_CUDA
#include <c10/cuda/CUDAGraphsC10Utils.h>
#endif

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

// An idx3 images file of n tiny-test-sized random images with an idx1 labels file beside it
// (label i = i mod 3): class-conditional runs need labels, which --data synthetic has not.
std::string labelled_images(const std::string& dir, int64_t n) {
  const int64_t size = preset_config("tiny-test").sample_size;
  fs::create_directories(dir);
  auto be32 = [](std::string& b, int64_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<char>((v >> s) & 0xff));
  };
  std::string images = {0, 0, 8, 3}, labels = {0, 0, 8, 1};
  for (int64_t d : {n, size, size}) be32(images, d);
  be32(labels, n);
  auto pixels = diffuse::testing::random_bytes({n, size, size}, 11).contiguous();
  images.append(reinterpret_cast<const char*>(pixels.data_ptr<uint8_t>()), pixels.numel());
  for (int64_t i = 0; i < n; ++i) labels.push_back(static_cast<char>(i % 3));
  write_file_atomic(dir + "/images-idx3-ubyte", images);
  write_file_atomic(dir + "/labels-idx1-ubyte", labels);
  return "idx:" + dir + "/images-idx3-ubyte";
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

namespace {

// A stand-in device: counts what CapturedStep asks of it. Its capture runs fn (as a capture
// records it) and then throws `fail_with` when set, as a capture_end that finds a broken capture.
struct FakeRunner : GraphRunner {
  int eager_calls = 0, captures = 0, replays = 0, discards = 0;
  std::function<void()> fail_with;
  void eager(const std::function<void()>& fn) override {
    ++eager_calls;
    fn();
  }
  void capture(const std::function<void()>& fn) override {
    ++captures;
    fn();
    if (fail_with) fail_with();
  }
  void replay() override { ++replays; }
  void discard() override { ++discards; }
};

struct FakeStep {
  FakeRunner* runner;
  CapturedStep step;
  explicit FakeStep(int64_t warmup) : FakeStep(std::make_unique<FakeRunner>(), warmup) {}
  FakeStep(std::unique_ptr<FakeRunner> r, int64_t warmup)
      : runner(r.get()), step(std::move(r), warmup) {}
};

// Runs `calls` steps of a body that counts its runs; -> (body runs, stderr).
std::pair<int, std::string> run_steps(CapturedStep& step, int calls) {
  int runs = 0;
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < calls; ++i) step([&] { ++runs; });
  return {runs, ::testing::internal::GetCapturedStderr()};
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST(CapturedStep, WarmsUpOnTheRunnerThenCapturesOnceAndReplays) {
  FakeStep f(2);
  auto [runs, err] = run_steps(f.step, 5);
  // 2 warm-ups on the capture stream, 1 capture (the body recorded), then replays: the capture
  // call's own step and the 2 after it.
  EXPECT_EQ(f.runner->eager_calls, 2);
  EXPECT_EQ(f.runner->captures, 1);
  EXPECT_EQ(f.runner->replays, 3);
  EXPECT_EQ(runs, 3);
  EXPECT_TRUE(f.step.captured());
  EXPECT_FALSE(f.step.failed());
  EXPECT_EQ(err, "");
}

// Whatever the capture throws (diffuse::Error from a launch check, c10::Error from CUDA, any
// std::exception), the graph is dropped, one warning names the cause, and every call from the
// failing one on runs the body eagerly: no step is lost, none replayed.
TEST(CapturedStep, AFailedCaptureFallsBackToEagerWithOneWarning) {
  const std::vector<std::pair<std::string, std::function<void()>>> faults = {
      {"launch check said no", [] { fail("launch check said no"); }},
      {"capture invalidated", [] { TORCH_CHECK(false, "capture invalidated"); }},
      {"plain runtime error", [] { throw std::runtime_error("plain runtime error"); }},
  };
  for (const auto& [why, fault] : faults) {
    FakeStep f(1);
    f.runner->fail_with = fault;
    auto [runs, err] = run_steps(f.step, 4);
    EXPECT_FALSE(f.step.captured()) << why;
    EXPECT_TRUE(f.step.failed()) << why;
    EXPECT_EQ(f.runner->captures, 1) << why;
    EXPECT_EQ(f.runner->discards, 1) << why;
    EXPECT_EQ(f.runner->replays, 0) << why;
    // 1 warm-up + the failing call's step + 2 later ones, all eager.
    EXPECT_EQ(f.runner->eager_calls, 4) << why;
    EXPECT_EQ(runs, 5) << why;  // those 4 and the run the failed capture recorded
    EXPECT_EQ(count_of(err, "diffuse: warning: CUDA graph capture of the training step failed"), 1)
        << err;
    EXPECT_NE(err.find(why), std::string::npos) << err;
  }
}

// The test hook throws inside the capture, before the body: the body is then only run eagerly.
TEST(CapturedStep, TheInjectedFaultThrowsInsideTheCaptureOnce) {
  FakeStep f(0), g(0);
  set_capture_fault_for_testing([] { fail("injected fault"); });
  auto [runs, err] = run_steps(f.step, 3);
  EXPECT_TRUE(f.step.failed());
  EXPECT_EQ(f.runner->captures, 1);
  EXPECT_EQ(runs, 3);  // never recorded: the fault came first
  EXPECT_EQ(count_of(err, "injected fault"), 1) << err;
  // Taken once: the next capture in the process succeeds.
  run_steps(g.step, 2);
  EXPECT_TRUE(g.step.captured());
  set_capture_fault_for_testing({});
}

TEST(CapturedStep, ANullRunnerRunsEveryCallAsItIs) {
  CapturedStep step(std::unique_ptr<GraphRunner>(), 0);
  auto [runs, err] = run_steps(step, 3);
  EXPECT_EQ(runs, 3);
  EXPECT_FALSE(step.captured());
  EXPECT_FALSE(step.failed());
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

// What a graphed-vs-eager comparison varies.
struct GraphCase {
  bool channels_last_fused = false;
  std::function<void(TrainConfig&)> tweak;
  // Set: injected into the capture (set_capture_fault_for_testing), which must then fail and
  // leave the device usable, the graphed trainer stepping eagerly.
  std::function<void()> fault;
  // Relative tolerances of the loss and of the weights (in units of lr * steps).
  double loss_tol = 1e-4, weight_tol = 1e-3;
};

// Eager steps and graphed steps (3 eager warm-ups, the capture, replays) from the same seed. The
// learning-rate warmup (10 steps) outlasts the 7 steps, so the rate changes at every replay.
void expect_graph_matches_eager(const GraphCase& g) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device on this machine";
#if !DIFFUSE_TORCH_AT_LEAST(2, 4)
  GTEST_SKIP() << "the captured step needs LibTorch >= 2.4";
#endif
  if (g.channels_last_fused && !fused_group_norm_compiled())
    GTEST_SKIP() << "this build has no CUDA kernels";
  auto eager_cfg = synthetic_config("gpu_eager", "cuda");
  auto graph_cfg = synthetic_config("gpu_graph", "cuda");
  graph_cfg.cuda_graph = true;
  for (auto* c : {&eager_cfg, &graph_cfg}) {
    c->channels_last = c->fused_norm = g.channels_last_fused;
    if (g.tweak) g.tweak(*c);
  }
  Trainer eager(eager_cfg), graphed(graph_cfg);
  // The same kernels for both: deterministic cuDNN algorithms, no TF32.
  at::globalContext().setBenchmarkCuDNN(false);
  at::globalContext().setDeterministicCuDNN(true);
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  if (g.fault) set_capture_fault_for_testing(g.fault);
  const int steps = 7;
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < steps; ++i) {
    const double le = eager.train_step().item<double>();
    const double lg = graphed.train_step().item<double>();
    EXPECT_NEAR(lg, le, g.loss_tol * std::abs(le)) << "loss at step " << i + 1;
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  set_capture_fault_for_testing({});
  EXPECT_EQ(graphed.step_captured(), !g.fault);
  if (g.fault) {
    EXPECT_EQ(count_of(err, "diffuse: warning: CUDA graph capture"), 1) << err;
    // The stream left capture mode and the allocator serves ordinary memory again.
#ifdef DIFFUSE_WITH_CUDA
    EXPECT_EQ(c10::cuda::currentStreamCaptureStatusMayInitCtx(), c10::cuda::CaptureStatus::None);
#endif
    EXPECT_EQ(torch::ones({1000}, torch::kCUDA).sum().item<double>(), 1000.0);
  } else {
    EXPECT_EQ(err.find("diffuse: warning"), std::string::npos) << err;
  }
  EXPECT_EQ(graphed.step(), steps);
  // Adam moves each weight by about lr per step: a graph that missed an input, the learning
  // rate or a step would be off by that much; float noise amplified by Adam stays far below.
  const double scale = eager_cfg.lr * steps;
  EXPECT_LT(mean_abs_diff(params_of(*graphed.model()), params_of(*eager.model())),
            g.weight_tol * scale);
  EXPECT_LT(mean_abs_diff(params_of(*graphed.ema_model()), params_of(*eager.ema_model())),
            g.weight_tol * scale);
  EXPECT_GT(mean_abs_diff(params_of(*graphed.model()), params_of(*graphed.ema_model())), 0);
  set_fused_group_norm(false);
  for (const auto* c : {&eager_cfg, &graph_cfg}) {
    remove_tree(c->out);
    remove_tree(c->out + "_data");
  }
}

GraphCase sampler_case() {
  GraphCase g;
  // T = 4 fills the sampler's history within the 7 steps.
  g.tweak = [](TrainConfig& c) {
    c.timestep_sampler = "loss-second-moment";
    c.schedule = "cosine";  // the linear schedule's 1000/T scaling needs T > 20
    c.timesteps = c.sample_steps = 4;
  };
  return g;
}

GraphCase hybrid_case() {
  GraphCase g;
  g.tweak = [](TrainConfig& c) {
    c.variance = "learned-range";
    c.loss = "hybrid";
  };
  return g;
}

GraphCase class_cond_case() {
  GraphCase g;
  g.tweak = [](TrainConfig& c) {
    c.data = labelled_images(c.out + "_data", 32);
    c.class_cond = true;
    c.label_dropout = 0.5;
  };
  return g;
}

GraphCase bf16_case(bool fused) {
  GraphCase g;
  g.channels_last_fused = fused;
  g.tweak = [](TrainConfig& c) { c.precision = "bf16"; };
  // The same kernels replayed: bit-equal in principle; bf16 rounding bounds any reordering.
  g.loss_tol = 1e-2;
  g.weight_tol = 1e-2;
  return g;
}

}  // namespace

TEST(GraphedTrainStepGpu, MatchesEagerSteps) {
  expect_graph_matches_eager({});
}

TEST(GraphedTrainStepGpu, MatchesEagerStepsChannelsLastFused) {
  GraphCase g;
  g.channels_last_fused = true;
  expect_graph_matches_eager(g);
}

// bf16 autocast under capture, the CUDA default (--precision auto).
TEST(GraphedTrainStepGpu, MatchesEagerStepsInBf16) {
  expect_graph_matches_eager(bf16_case(false));
}

TEST(GraphedTrainStepGpu, MatchesEagerStepsInBf16ChannelsLastFused) {
  expect_graph_matches_eager(bf16_case(true));
}

// The sampler's weights are an input of the graphed step and its history is fed from the step's
// per-sample losses; T = 4 fills the history within the 7 steps.
TEST(GraphedTrainStepGpu, MatchesEagerStepsWithTheLossSecondMomentSampler) {
  expect_graph_matches_eager(sampler_case());
}

// L_simple + 0.001 L_vlb: the variational term's posterior gathers and logs run in the graph.
TEST(GraphedTrainStepGpu, MatchesEagerStepsWithTheHybridLoss) {
  expect_graph_matches_eager(hybrid_case());
}

// Labels (with dropout to the null class) are a step input; the U-Net checks their range only
// on the CPU, so the forward has no host sync to break the capture.
TEST(GraphedTrainStepGpu, MatchesEagerStepsClassConditional) {
  expect_graph_matches_eager(class_cond_case());
}

// The GPU cases' configurations, run on the CPU (where --cuda-graph changes nothing): a case
// that cannot even build its trainer fails here, not in a GPU slot.
TEST(GraphPieces, EveryGpuCaseConfiguresAndStepsOnTheCpu) {
  const std::vector<std::pair<std::string, GraphCase>> cases = {{"bf16", bf16_case(true)},
                                                                {"sampler", sampler_case()},
                                                                {"hybrid", hybrid_case()},
                                                                {"class_cond", class_cond_case()}};
  for (const auto& [name, g] : cases) {
    auto c = synthetic_config("cpu_case_" + name, "cpu");
    c.cuda_graph = true;
    c.batch = 2;
    g.tweak(c);
    if (c.precision == "bf16") c.precision = "fp32";  // the CPU computes in float32 only
    Trainer t(c);
    EXPECT_TRUE(std::isfinite(t.train_step().item<double>())) << name;
    EXPECT_FALSE(t.step_captured()) << name;
    remove_tree(c.out);
    remove_tree(c.out + "_data");
  }
}

// A diffuse::Error thrown inside the capture (as a failed launch check would): the capture is
// ended and discarded, the stream and the allocator are usable, one warning, eager steps after.
TEST(GraphedTrainStepGpu, AThrowInsideTheCaptureFallsBackToEager) {
  GraphCase g;
  g.fault = [] {
    auto scratch = torch::ones({256}, torch::kCUDA) * 2;  // work recorded into the graph's pool
    fail("injected fault after ", scratch.numel(), " elements");
  };
  expect_graph_matches_eager(g);
}

// A host sync inside the capture invalidates it: CUDA's error comes from inside the body and
// capture_end can no longer end the capture cleanly.
TEST(GraphedTrainStepGpu, ASyncInsideTheCaptureFallsBackToEager) {
  GraphCase g;
  g.fault = [] { (void)torch::ones({4}, torch::kCUDA).sum().item<float>(); };
  expect_graph_matches_eager(g);
}

namespace {

// The sampling forward (GraphedForward) against the model's eager forward on two inputs, so a
// graph that ignored its input copy would fail the second; with `fault` the capture must fail
// and the wrapper answer eagerly, with one warning.
void expect_graphed_forward_matches(bool bf16, const std::function<void()>& fault) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device on this machine";
  torch::manual_seed(4);
  UNet2DModel m(preset_config("tiny-test"));
  m->to(torch::kCUDA);
  m->eval();
  const auto& cfg = m->config();
  auto opts = torch::TensorOptions().device(torch::kCUDA);
  const std::vector<int64_t> shape = {2, cfg.in_channels, cfg.sample_size, cfg.sample_size};
  // One set of kernels for the graph and the eager reference: no TF32, no per-shape benchmarking.
  at::globalContext().setBenchmarkCuDNN(false);
  at::globalContext().setDeterministicCuDNN(true);
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  if (fault) set_capture_fault_for_testing(fault);
  ::testing::internal::CaptureStderr();
  GraphedForward graphed(m, shape, bf16);
  const std::string err = ::testing::internal::GetCapturedStderr();
  set_capture_fault_for_testing({});
  EXPECT_EQ(graphed.captured(), !fault);
  EXPECT_EQ(count_of(err, "diffuse: warning: CUDA graph capture of the U-Net forward"),
            fault ? 1 : 0)
      << err;
  c10::InferenceMode inference;
  for (int i = 0; i < 2; ++i) {
    auto x = torch::randn(shape, opts);
    auto t = torch::full({2}, 100 + 400 * i, opts.dtype(torch::kLong));
    auto got = graphed(x, t).clone();
    torch::Tensor want;
    {
      AutocastGuard autocast(bf16);
      want = m->forward(x, t).to(torch::kFloat32);
    }
    // The same kernels replayed: float32 equal to rounding (1e-4 leaves room for an algorithm
    // cuDNN picks differently under capture); bf16 within its precision.
    EXPECT_LT((got - want).abs().max().item<double>(),
              (bf16 ? 2e-2 : 1e-4) * want.abs().max().item<double>())
        << "input " << i;
  }
}

}  // namespace

TEST(GraphedForwardGpu, MatchesTheEagerForward) {
  expect_graphed_forward_matches(false, {});
}

TEST(GraphedForwardGpu, MatchesTheEagerForwardInBf16) {
  expect_graphed_forward_matches(true, {});
}

TEST(GraphedForwardGpu, AThrowInsideTheCaptureFallsBackToEager) {
  expect_graphed_forward_matches(false, [] { fail("injected fault"); });
}
