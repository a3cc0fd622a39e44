// Training: the optimizer against LibTorch's, EMA and clipping against their formulas, atomic
// checkpoints (damage is detected, an older one still loads), exact resume, and a tiny model that
// overfits a handful of images.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <type_traits>
#include <variant>

#include "diffuse/core/error.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/data/dataset.h"
#include "diffuse/diffusion/timestep_sampler.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/checkpoint.h"
#include "diffuse/models/presets.h"
#include "diffuse/models/weights.h"
#include "diffuse/pipeline/generate.h"
#include "diffuse/pipeline/load_model.h"
#include "diffuse/train/adamw.h"
#include "diffuse/train/ema.h"
#include "diffuse/train/lr_schedule.h"
#include "diffuse/train/power_ema.h"
#include "diffuse/train/trainer.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace diffuse;

namespace {

std::string temp_dir(const std::string& name) {
  auto p =
      fs::temp_directory_path() / ("diffuse_test_train_" + name + "_" + std::to_string(::getpid()));
  remove_tree(p);
  fs::create_directories(p);
  return p.string();
}

// An uncompressed idx3 file of n random-ish images of size x size (one channel), so tests need no
// dataset download and stay fast.
std::string write_idx_images(const std::string& dir, int64_t n, int64_t size, uint64_t seed) {
  torch::manual_seed(seed);
  auto img = (torch::rand({n, size, size}) * 255).to(torch::kUInt8).contiguous();
  std::string bytes = {0, 0, 8, 3};
  for (int64_t d : {n, size, size})
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<char>((d >> s) & 0xff));
  bytes.append(reinterpret_cast<const char*>(img.data_ptr<uint8_t>()), img.numel());
  const auto path = dir + "/images-idx3-ubyte";
  write_file_atomic(path, bytes);
  return path;
}

// The labels file idx: finds beside write_idx_images' images: label i = i mod classes.
void write_idx_labels(const std::string& dir, int64_t n, int64_t classes) {
  std::string bytes = {0, 0, 8, 1};
  for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<char>((n >> s) & 0xff));
  for (int64_t i = 0; i < n; ++i) bytes.push_back(static_cast<char>(i % classes));
  write_file_atomic(dir + "/labels-idx1-ubyte", bytes);
}

TrainConfig tiny_config(const std::string& run, const std::string& images, int64_t steps) {
  TrainConfig c;
  c.data = "idx:" + images;
  c.model = "tiny-test";
  c.out = run;
  c.steps = steps;
  c.batch = 4;
  c.lr = 1e-3;
  c.warmup = 0;
  c.ema_decay = 0.9;
  c.log_every = 5;
  c.sample_every = 0;
  c.ckpt_every = 0;
  c.device = "cpu";
  c.threads = 1;
  c.seed = 3;
  return c;
}

void expect_same_weights(const std::map<std::string, torch::Tensor>& a,
                         const std::map<std::string, torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, v] : a) {
    ASSERT_TRUE(b.count(k)) << k;
    EXPECT_TRUE(torch::equal(v, b.at(k))) << k << " differs";
  }
}

}  // namespace

TEST(AdamW, MatchesLibTorchAdamW) {
  torch::manual_seed(0);
  auto w0 = torch::randn({5, 3});
  auto a = w0.clone().requires_grad_(true), b = w0.clone().requires_grad_(true);
  AdamW ours({{"w", a}}, AdamWOptions{1e-2, 0.9, 0.999, 1e-8, 0.1});
  torch::optim::AdamW ref({b}, torch::optim::AdamWOptions(1e-2).weight_decay(0.1));
  for (int i = 0; i < 20; ++i) {
    auto target = torch::randn({5, 3});
    ours.zero_grad();
    ref.zero_grad();
    (a - target).pow(2).sum().backward();
    (b - target).pow(2).sum().backward();
    ours.step(1e-2);
    ref.step();
  }
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-6)) << (a - b).abs().max();
  EXPECT_EQ(ours.steps_taken(), 20);
}

TEST(AdamW, ClipsOnTheDeviceAndRoundTripsState) {
  auto p = torch::zeros({4}).requires_grad_(true);
  auto q = torch::zeros({3}).requires_grad_(true);
  AdamW opt({{"p", p}, {"q", q}}, {});
  p.mutable_grad() = torch::full({4}, 3.0);
  q.mutable_grad() = torch::full({3}, 4.0);
  const double norm = std::sqrt(4 * 9.0 + 3 * 16.0);
  auto got = opt.clip_grad_norm(1.0);
  EXPECT_EQ(got.dim(), 0);
  EXPECT_NEAR(got.item<double>(), norm, 1e-5);
  const double after =
      std::sqrt(p.grad().pow(2).sum().item<double>() + q.grad().pow(2).sum().item<double>());
  EXPECT_NEAR(after, 1.0, 1e-5);
  // Below the threshold nothing changes.
  opt.clip_grad_norm(100.0);
  EXPECT_NEAR(p.grad()[0].item<double>(), 3.0 / norm, 1e-6);
  opt.step(0.1);
  auto st = opt.state_dict();
  EXPECT_EQ(st.at("step").item<int64_t>(), 1);
  AdamW other({{"p", p}, {"q", q}}, {});
  other.load_state_dict(st, "mem");
  EXPECT_EQ(other.steps_taken(), 1);
  st.erase("exp_avg.q");
  try {
    other.load_state_dict(st, "opt.safetensors");
    FAIL() << "missing state accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exp_avg.q"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("opt.safetensors"), std::string::npos);
  }
}

// The closed forms of lr_schedule.h at points worked out by hand: cos(pi/4) = sqrt(2)/2.
TEST(LrSchedule, MatchesTheClosedForms) {
  LrSchedule warm{LrScheduleKind::Constant, 1.0, 4, 100, 0.2};
  EXPECT_DOUBLE_EQ(warm.lr(0), 0.25);
  EXPECT_DOUBLE_EQ(warm.lr(3), 1.0);
  EXPECT_DOUBLE_EQ(warm.lr(99), 1.0);
  LrSchedule cosine{LrScheduleKind::Cosine, 2.0, 0, 100, 0.2};
  EXPECT_DOUBLE_EQ(cosine.lr(0), 2.0);
  EXPECT_NEAR(cosine.lr(25), 1.0 + std::sqrt(0.5), 1e-12);
  EXPECT_NEAR(cosine.lr(50), 1.0, 1e-12);
  EXPECT_NEAR(cosine.lr(75), 1.0 - std::sqrt(0.5), 1e-12);
  EXPECT_NEAR(cosine.lr(100), 0.0, 1e-12);
  // Warmup multiplies the decay: step 1 of 10 warmup steps at p = 0.5.
  LrSchedule both{LrScheduleKind::Cosine, 1.0, 10, 2, 0.2};
  EXPECT_NEAR(both.lr(1), 0.2 * 0.5, 1e-12);
  LrSchedule wsd{LrScheduleKind::Wsd, 1.0, 0, 100, 0.2};
  EXPECT_DOUBLE_EQ(wsd.lr(0), 1.0);
  EXPECT_DOUBLE_EQ(wsd.lr(70), 1.0);
  EXPECT_NEAR(wsd.lr(90), 0.5, 1e-12);
  EXPECT_NEAR(wsd.lr(95), 0.25, 1e-12);
  EXPECT_NEAR(wsd.lr(100), 0.0, 1e-12);
  // The time budget, when it is spent faster than the steps, sets the progress.
  LrSchedule long_run{LrScheduleKind::Cosine, 1.0, 0, 1000000, 0.2};
  EXPECT_NEAR(long_run.lr(10, 0.5), 0.5, 1e-12);
  EXPECT_NEAR(long_run.lr(10, 1.0), 0.0, 1e-12);
  EXPECT_NEAR(LrSchedule({LrScheduleKind::Wsd, 1.0, 0, 1000000, 0.2}).lr(10, 0.9), 0.5, 1e-12);
  EXPECT_NEAR(long_run.progress(500000, 0.25), 0.5, 1e-15);  // max(step / steps, time)
  try {
    parse_lr_schedule("linear");
    FAIL() << "unknown schedule accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--lr-schedule"), std::string::npos) << e.what();
  }
  TrainConfig c;
  c.lr_decay_fraction = 0;
  EXPECT_THROW(c.validate(), Error);
}

TEST(Ema, FollowsTheFormula) {
  torch::nn::Linear model(2, 2), shadow(2, 2);
  {
    torch::NoGradGuard g;
    model->weight.fill_(1.0);
    shadow->weight.fill_(0.0);
  }
  Ema ema(*model, shadow.ptr(), 0.9, true);
  EXPECT_DOUBLE_EQ(ema.decay_at(0), 0.1);  // (1 + 0) / (10 + 0)
  EXPECT_DOUBLE_EQ(ema.decay_at(1000), 0.9);
  ema.update(1000);
  EXPECT_NEAR(shadow->weight[0][0].item<double>(), 0.1, 1e-7);
  ema.update(1000);
  EXPECT_NEAR(shadow->weight[0][0].item<double>(), 0.9 * 0.1 + 0.1, 1e-7);
}

namespace {

// The weight of iterate tau (1-based) in a power-function EMA of gamma after t updates, written
// from EDM2's closed form: (tau^(gamma+1) - (tau-1)^(gamma+1)) / t^(gamma+1), 0 after t.
torch::Tensor power_ema_weights(int64_t t, double gamma, int64_t length) {
  auto w = torch::zeros({length}, torch::kFloat64);
  for (int64_t tau = 1; tau <= t; ++tau)
    w[tau - 1] = (std::pow(tau, gamma + 1) - std::pow(tau - 1, gamma + 1)) / std::pow(t, gamma + 1);
  return w;
}

}  // namespace

// Running beta_t = (1 - 1/t)^(gamma+1) over one-hot iterates (theta_tau = e_tau) leaves in the
// average each iterate's weight, which must be the closed form.
TEST(PowerEma, UpdatesGiveTheClosedFormWeights) {
  // EDM2's two profiles: sigma_rel 0.05 and 0.10 are gamma 16.97 and 6.94.
  EXPECT_NEAR(sigma_rel_to_gamma(0.05), 16.97, 0.01);
  EXPECT_NEAR(sigma_rel_to_gamma(0.10), 6.94, 0.01);
  EXPECT_NEAR(gamma_to_sigma_rel(sigma_rel_to_gamma(0.2)), 0.2, 1e-12);
  const int64_t T = 300;
  for (double gamma : {0.0, 6.94, 16.97}) {
    auto avg = torch::zeros({T}, torch::kFloat64);
    for (int64_t t = 1; t <= T; ++t) {
      const double beta = power_ema_beta(t, gamma);
      avg = beta * avg + (1 - beta) * torch::eye(T, torch::kFloat64)[t - 1];
    }
    EXPECT_TRUE(torch::allclose(avg, power_ema_weights(T, gamma, T), 1e-9, 1e-14)) << gamma;
  }
  EXPECT_DOUBLE_EQ(power_ema_beta(1, 6.94), 0.0);  // the first update takes the iterate
  EXPECT_THROW(sigma_rel_to_gamma(0.5), Error);
}

// Post-hoc EMA: snapshots of gamma 16.97 and 6.94 every 20 of 400 updates, written as a run writes
// them, reconstruct by least squares the weights of other profiles at the end: one in between
// (sigma_rel 0.075) and one of the snapshots' own. Each snapshot holds its closed-form weight
// vector over the 400 iterates, so the reconstruction is a weight vector to compare. Measured
// relative L2 errors: 0.0022 (sigma_rel 0.075) and 3e-8 (gamma 6.94, float32 rounding).
TEST(PowerEma, ReconstructsOtherProfilesFromSnapshots) {
  const auto dir = temp_dir("posthoc");
  const int64_t T = 400;
  size_t index = 0;
  for (double gamma : {16.97, 6.94}) {
    for (int64_t t = 20; t <= T; t += 20)
      save_power_ema_snapshot(power_ema_snapshot_path(dir, t, index),
                              {{"w", power_ema_weights(t, gamma, T)}},
                              {static_cast<double>(t), gamma});
    ++index;
  }
  auto error = [&](double sigma_rel) {
    auto r = posthoc_ema(dir, sigma_rel, T);
    EXPECT_EQ(r.snapshots.size(), 40u);
    auto want = power_ema_weights(T, sigma_rel_to_gamma(sigma_rel), T);
    return ((r.weights.at("w").to(torch::kFloat64) - want).norm() / want.norm()).item<double>();
  };
  const double between = error(0.075), own = error(gamma_to_sigma_rel(6.94));
  std::cout << "relative L2 error: sigma_rel 0.075 " << between << ", gamma 6.94 " << own << "\n";
  EXPECT_LT(between, 0.01);
  EXPECT_LT(own, 1e-5);
  // At t = 200 only the first 10 snapshots of each profile count.
  EXPECT_EQ(posthoc_ema(dir, 0.075, 200).snapshots.size(), 20u);
  EXPECT_THROW(posthoc_ema(dir + "/none", 0.075), Error);
  EXPECT_THROW(parse_sigma_rels("0.05,x"), Error);
  EXPECT_EQ(parse_sigma_rels("0.05,0.10"), (std::vector<double>{0.05, 0.10}));
  remove_tree(dir);
}

// The trainer's power-function EMAs after 12 steps are the closed-form weighted averages of the
// 12 iterates, and the post-hoc reconstruction of one of them from the run's snapshots is that one.
TEST(Trainer, PowerEmaIsTheClosedFormAverageOfTheIterates) {
  const auto dir = temp_dir("power_ema");
  const auto images = write_idx_images(dir, 16, model_config_from_spec("tiny-test").sample_size, 4);
  auto cfg = tiny_config(dir + "/run", images, 12);
  cfg.ema_power = "0.10,0.20";
  cfg.ema_snapshot_every = 4;
  cfg.dropout = 0.1;  // draws from the generator the power EMAs must leave alone
  Trainer t(cfg);
  std::vector<torch::Tensor> iterates;  // flattened parameters after each step
  for (int64_t k = 0; k < 12; ++k) {
    t.train_step();
    iterates.push_back(torch::cat(
                           [&] {
                             std::vector<torch::Tensor> v;
                             for (const auto& p : t.model()->parameters())
                               v.push_back(p.detach().flatten());
                             return v;
                           }(),
                           0)
                           .to(torch::kFloat64));
  }
  const std::vector<double> sigma_rels{0.10, 0.20};
  for (size_t i = 0; i < sigma_rels.size(); ++i) {
    auto w = power_ema_weights(12, sigma_rel_to_gamma(sigma_rels[i]), 12);
    auto want = torch::zeros_like(iterates[0]);
    for (int64_t k = 0; k < 12; ++k) want += w[k].item<double>() * iterates[k];
    std::vector<torch::Tensor> got;
    for (const auto& p : t.power_ema_models()[i]->parameters()) got.push_back(p.detach().flatten());
    EXPECT_TRUE(torch::allclose(torch::cat(got, 0).to(torch::kFloat64), want, 1e-5, 1e-6)) << i;
  }
  // The same recipe through run(): snapshots at steps 4, 8, 12, and sigma_rel 0.10 reconstructed
  // at step 12 is the trainer's own shadow.
  auto cfg2 = cfg;
  cfg2.out = dir + "/run2";
  Trainer t2(cfg2);
  t2.run(false);
  auto r = posthoc_ema(cfg2.out, 0.10, 12);
  EXPECT_EQ(r.snapshots.size(), 6u);
  // Keeping power EMAs does not change the training itself.
  auto plain = cfg;
  plain.out = dir + "/plain";
  plain.ema_power = "";
  Trainer t3(plain);
  t3.run(false);
  expect_same_weights(state_dict(*t2.model()), state_dict(*t3.model()));
  auto own = state_dict(*t2.power_ema_models()[0]);
  for (const auto& [name, v] : own)
    EXPECT_TRUE(torch::allclose(r.weights.at(name), v, 1e-4, 1e-5)) << name;
  remove_tree(dir);
}

// Flips were on by default and put every mirrored Fashion-MNIST shoe out of distribution
// (FD-FMNIST 2.7x diffusers' at the same budget): they are opt-in, and the run config records them.
TEST(TrainConfig, FlipsAreOptInAndRecorded) {
  const TrainConfig c;
  EXPECT_FALSE(c.flip);
  EXPECT_EQ(c.to_json().at("flip"), false);
  auto j = c.to_json();
  j["flip"] = true;
  EXPECT_TRUE(TrainConfig::from_json(j, "cfg.json").flip);
}

TEST(TrainConfig, PrecisionIsRecordedAndOldBf16KeyReads) {
  TrainConfig c;
  EXPECT_EQ(c.precision, "auto");
  c.precision = "fp32";
  EXPECT_EQ(TrainConfig::from_json(c.to_json(), "cfg.json").precision, "fp32");
  auto j = c.to_json();
  j.erase("precision");
  j["bf16"] = false;  // a run made before --precision: no-bf16 meant TF32
  EXPECT_EQ(TrainConfig::from_json(j, "cfg.json").precision, "tf32");
  j["bf16"] = true;
  EXPECT_EQ(TrainConfig::from_json(j, "cfg.json").precision, "auto");
  c.precision = "fp16";
  try {
    c.validate();
    FAIL() << "fp16 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--precision"), std::string::npos) << e.what();
  }
}

// The first EMA update uses decay (1 + 0) / (10 + 0): n counts the updates before this one, as in
// diffusers' EMAModel, so the average is not held back one step.
TEST(Trainer, FirstEmaUpdateCountsFromZero) {
  const auto dir = temp_dir("ema_first");
  const auto images = write_idx_images(dir, 8, 16, 5);
  auto cfg = tiny_config(dir + "/run", images, 1);
  cfg.ema_decay = 0.999;
  Trainer trainer(cfg);
  std::vector<torch::Tensor> init;
  for (const auto& p : trainer.model()->parameters()) init.push_back(p.detach().clone());
  trainer.train_step();
  const auto params = trainer.model()->parameters();
  const auto shadow = trainer.ema_model()->parameters();
  ASSERT_EQ(shadow.size(), init.size());
  for (size_t i = 0; i < init.size(); ++i)
    EXPECT_TRUE(torch::allclose(shadow[i], 0.1 * init[i] + 0.9 * params[i], 1e-6, 1e-7)) << i;
  remove_tree(dir);
}

TEST(TrainConfig, JsonRoundTripAndValidation) {
  TrainConfig c;
  c.lr = 3e-4;
  c.model = "ddpm-cifar10";
  c.flip = true;
  auto back = TrainConfig::from_json(c.to_json(), "cfg.json");
  EXPECT_EQ(back.to_json(), c.to_json());
  auto j = c.to_json();
  j["learning_rate"] = 1;
  EXPECT_THROW(TrainConfig::from_json(j, "cfg.json"), Error);
  j = c.to_json();
  j["steps"] = "many";
  try {
    TrainConfig::from_json(j, "cfg.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("steps"), std::string::npos);
  }
  c.batch = 0;
  EXPECT_THROW(c.validate(), Error);
}

// Each option row binds one field: changing any field through its row shows in the JSON under the
// row's key (so no two rows share a field or a key) and survives the round trip. A config written
// before a field existed reads that field's default.
TEST(TrainConfig, EveryFieldHasOneRowAndRoundTrips) {
  const TrainConfig defaults;
  std::set<std::string> keys, flags;
  for (const auto& f : train_fields()) {
    EXPECT_TRUE(keys.insert(f.key()).second) << f.key();
    EXPECT_TRUE(flags.insert(f.flag).second) << f.flag;
    TrainConfig c;
    std::visit(
        [&](auto member) {
          using T = std::decay_t<decltype(c.*member)>;
          if constexpr (std::is_same_v<T, bool>)
            c.*member = !(c.*member);
          else if constexpr (std::is_same_v<T, std::string>)
            c.*member += "-x";
          else
            c.*member = static_cast<T>(c.*member * 2 + 3);
        },
        f.field);
    auto j = c.to_json();
    ASSERT_TRUE(j.contains(f.key())) << f.key();
    EXPECT_NE(j.at(f.key()), defaults.to_json().at(f.key())) << f.key();
    for (const auto& [k, v] : j.items())
      if (k != f.key()) EXPECT_EQ(v, defaults.to_json().at(k)) << f.flag << " also changed " << k;
    EXPECT_EQ(TrainConfig::from_json(j, "cfg.json").to_json(), j) << f.key();
  }
  EXPECT_EQ(defaults.to_json().size(), train_fields().size());
  auto old = defaults.to_json();
  old.erase("adam_beta2");
  EXPECT_EQ(TrainConfig::from_json(old, "old.json").adam_beta2, 0.999);
  // A field with a legacy value reads it when its key is missing, whatever today's default.
  for (const auto& f : train_fields()) {
    if (f.legacy.is_null()) continue;
    auto j = defaults.to_json();
    j.erase(f.key());
    EXPECT_EQ(TrainConfig::from_json(j, "old.json").to_json().at(f.key()), f.legacy) << f.key();
  }
}

namespace {

// A run of 2n steps against n steps, a resume and n more, with dropout in the network and the
// loss-second-moment sampler on a short cosine process (T = 4, so its 10-loss history per t fills
// within the first half and the draws stop being uniform before the checkpoint).
struct ResumePair {
  std::unique_ptr<Trainer> straight, resumed;
  std::vector<double> probabilities_at_split;
};

ResumePair resume_with_history(const std::string& name, const std::string& device) {
  const auto dir = temp_dir(name);
  const auto size = model_config_from_spec("tiny-test").sample_size;
  const auto images = write_idx_images(dir, 24, size, 1);
  auto config = [&](const std::string& run, int64_t steps) {
    auto c = tiny_config(run, images, steps);
    c.batch = 8;
    c.schedule = "cosine";  // the linear schedule's 1000/T scaling needs T > 20
    c.timesteps = 4;
    c.sample_steps = 4;
    c.timestep_sampler = "loss-second-moment";
    c.dropout = 0.2;
    c.device = device;
    c.precision = "fp32";
    return c;
  };
  ResumePair r;
  r.straight = std::make_unique<Trainer>(config(dir + "/straight", 24));
  r.straight->run(false);
  {
    Trainer first(config(dir + "/split", 12));
    first.run(false);
    r.probabilities_at_split =
        dynamic_cast<const LossAwareTimestepSampler&>(first.timestep_sampler()).probabilities();
  }
  r.resumed = Trainer::resume(dir + "/split", [](TrainConfig& c) { c.steps = 24; });
  r.resumed->run(false);
  return r;
}

}  // namespace

TEST(Trainer, ResumeIsBitExactWithTheLossHistoryAndDropout) {
  auto r = resume_with_history("resume_history", "cpu");
  double spread = 0;
  for (double p : r.probabilities_at_split) spread = std::max(spread, std::abs(p - 0.25));
  EXPECT_GT(spread, 1e-3) << "the history should have filled and made the draws non-uniform";
  expect_same_weights(state_dict(*r.straight->model()), state_dict(*r.resumed->model()));
  expect_same_weights(state_dict(*r.straight->ema_model()), state_dict(*r.resumed->ema_model()));
}

// On a GPU dropout draws from the CUDA generator, whose state the checkpoint must hold too. cuDNN's
// kernels are not bit-reproducible run to run, so the test asks for far less than a dropout mask
// of difference: Adam moves each weight by about lr per step, a different mask by that much.
TEST(TrainerGpu, ResumeKeepsTheCudaDropoutStream) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device on this machine";
  at::globalContext().setBenchmarkCuDNN(false);
  at::globalContext().setDeterministicCuDNN(true);
  auto r = resume_with_history("resume_history_gpu", "cuda");
  auto a = state_dict(*r.straight->model()), b = state_dict(*r.resumed->model());
  double sum = 0;
  int64_t n = 0;
  for (const auto& [k, v] : a) {
    sum += (v.to(torch::kCPU, torch::kFloat64) - b.at(k).to(torch::kCPU, torch::kFloat64))
               .abs()
               .sum()
               .item<double>();
    n += v.numel();
  }
  EXPECT_LT(sum / n, 1e-3 * 1e-3 * 12);
}

namespace {

// A run of 24 steps that checkpoints at step 12, against a copy of its folder as an interruption
// at step 12 would leave it (the step-24 checkpoint removed) resumed to the end. `edit_config`
// may rewrite the copy's config.json first, as an older diffuse would have written it.
struct ScheduledResume {
  std::unique_ptr<Trainer> straight, resumed;
  double lr_at_resume = 0;
};

ScheduledResume resume_from_the_middle(const std::string& name,
                                       const std::function<void(TrainConfig&)>& recipe,
                                       const std::function<void(nlohmann::json&)>& edit_config) {
  const auto dir = temp_dir(name);
  const auto size = model_config_from_spec("tiny-test").sample_size;
  const auto images = write_idx_images(dir, 24, size, 1);
  auto cfg = tiny_config(dir + "/straight", images, 24);
  cfg.ckpt_every = 12;
  cfg.dropout = 0.1;
  recipe(cfg);
  ScheduledResume r;
  r.straight = std::make_unique<Trainer>(cfg);
  r.straight->run(false);
  fs::copy(dir + "/straight", dir + "/split", fs::copy_options::recursive);
  remove_tree(dir + "/split/checkpoints/" + checkpoint_dir_name(24));
  if (edit_config) {
    auto j = nlohmann::json::parse(read_file(dir + "/split/config.json"));
    edit_config(j);
    write_file_atomic(dir + "/split/config.json", j.dump(2));
  }
  r.resumed = Trainer::resume(dir + "/split", nullptr);
  EXPECT_EQ(r.resumed->step(), 12);
  r.lr_at_resume = r.resumed->next_lr();
  r.resumed->run(false);
  return r;
}

}  // namespace

// A schedule that knows the budget and a non-uniform t stay bit-exact across a resume: with a
// steps budget the rate is a function of the step alone.
TEST(Trainer, ResumeIsBitExactWithAnLrScheduleAndTimestepDensity) {
  for (const auto& [schedule, sampler] :
       {std::pair<std::string, std::string>{"cosine", "logit-normal"}, {"wsd", "edm-log-normal"}}) {
    auto r = resume_from_the_middle(
        "resume_" + schedule,
        [&](TrainConfig& c) {
          c.lr_schedule = schedule;
          c.lr_decay_fraction = 0.75;
          c.timestep_sampler = sampler;
          c.ts_mean = sampler == "edm-log-normal" ? -1.2 : 0.0;
          c.ts_std = sampler == "edm-log-normal" ? 1.2 : 1.0;
          c.ema_power = "0.05,0.10";
          c.ema_snapshot_every = 6;
        },
        nullptr);
    // Step 12 of 24 at base 1e-3: cosine (1 + cos(pi / 2)) / 2 = 0.5; wsd (1 - 0.5) / 0.75.
    EXPECT_NEAR(r.lr_at_resume, schedule == "cosine" ? 0.5e-3 : 1e-3 * 0.5 / 0.75, 1e-15);
    EXPECT_EQ(r.resumed->config().lr_schedule, schedule);
    expect_same_weights(state_dict(*r.straight->model()), state_dict(*r.resumed->model()));
    expect_same_weights(state_dict(*r.straight->ema_model()), state_dict(*r.resumed->ema_model()));
    for (size_t i = 0; i < 2; ++i)
      expect_same_weights(state_dict(*r.straight->power_ema_models()[i]),
                          state_dict(*r.resumed->power_ema_models()[i]));
  }
}

// A run made before the recipe's options existed has none of their keys in config.json; it resumes
// with the recipe it was made with (constant rate, uniform t), whatever the defaults are now.
TEST(Trainer, OldRunResumesWithItsOwnRecipe) {
  auto r = resume_from_the_middle(
      "resume_old", [](TrainConfig& c) { c.warmup = 4; },
      [](nlohmann::json& j) {
        for (const auto* key : {"lr_schedule", "lr_decay_fraction", "ts_mean", "ts_std",
                                "ema_power", "ema_snapshot_every"})
          ASSERT_EQ(j.erase(key), 1u) << key;
      });
  EXPECT_EQ(r.resumed->config().lr_schedule, "constant");
  EXPECT_EQ(r.resumed->config().timestep_sampler, "uniform");
  EXPECT_DOUBLE_EQ(r.lr_at_resume, 1e-3);
  expect_same_weights(state_dict(*r.straight->model()), state_dict(*r.resumed->model()));
}

// With --time-limit before --steps the schedule ends with the time: the rate is near its base at
// the first log line and near 0 after the last step, and stays there on resume.
TEST(Trainer, LrScheduleEndsAtTheTimeLimit) {
  const auto dir = temp_dir("lr_time");
  const auto size = model_config_from_spec("tiny-test").sample_size;
  const auto images = write_idx_images(dir, 16, size, 1);
  auto cfg = tiny_config(dir + "/run", images, 1000000);
  cfg.lr_schedule = "cosine";
  cfg.time_limit = 2.0;
  cfg.log_every = 1;
  Trainer t(cfg);
  t.run(false);
  EXPECT_LT(t.step(), cfg.steps);
  std::ifstream log(dir + "/run/log.jsonl");
  std::string line;
  std::vector<double> lrs;
  while (std::getline(log, line)) lrs.push_back(nlohmann::json::parse(line).at("lr"));
  ASSERT_GE(lrs.size(), 3u);
  EXPECT_GT(lrs.front(), 0.9 * cfg.lr);
  for (size_t i = 1; i < lrs.size(); ++i) EXPECT_LE(lrs[i], lrs[i - 1]) << i;
  EXPECT_LT(lrs.back(), 0.05 * cfg.lr);
  EXPECT_LT(t.next_lr(), 1e-6 * cfg.lr);
  // The spent budget is in the checkpoint: resumed without a time limit, the schedule stays at
  // its end instead of starting over at step / steps = 0.
  auto resumed = Trainer::resume(cfg.out, [](TrainConfig& c) { c.time_limit = 0; });
  EXPECT_EQ(resumed->step(), t.step());
  EXPECT_LT(resumed->next_lr(), 1e-6 * cfg.lr);
  remove_tree(dir);
}

TEST(Checkpoint, DamagedNewestIsReportedAndOlderLoads) {
  const auto run = temp_dir("ckpt");
  for (int64_t step : {5, 10, 15}) {
    CheckpointFiles f;
    f.tensors["unet/w.safetensors"] = {{"w", torch::full({8}, static_cast<float>(step))}};
    f.texts["state.json"] = "{\"step\": " + std::to_string(step) + "}";
    save_checkpoint(run, step, f, 2);
  }
  auto dirs = list_checkpoints(run);
  ASSERT_EQ(dirs.size(), 2u);  // keep = 2
  EXPECT_NE(dirs[0].find("step_00000015"), std::string::npos);
  // An interrupted write leaves a .tmp- folder without a manifest: never listed.
  fs::create_directories(run + "/checkpoints/.tmp-step_00000020/unet");
  EXPECT_EQ(list_checkpoints(run).size(), 2u);
  // Flip one byte of the newest checkpoint's tensor data.
  const auto victim = dirs[0] + "/unet/w.safetensors";
  auto bytes = read_file(victim);
  bytes[bytes.size() - 3] ^= 0x5a;
  { std::ofstream(victim, std::ios::binary | std::ios::trunc) << bytes; }
  std::vector<std::string> warnings;
  auto ck = load_latest_checkpoint(run, &warnings);
  ASSERT_TRUE(ck.has_value());
  EXPECT_EQ(ck->step, 10);
  EXPECT_EQ(ck->files.tensors.at("unet/w.safetensors").at("w")[0].item<float>(), 10.0f);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step_00000015"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("CRC"), std::string::npos) << warnings[0];
  // A truncated file is named with its size problem.
  { std::ofstream(victim, std::ios::binary | std::ios::trunc) << bytes.substr(0, 20); }
  try {
    load_checkpoint(dirs[0]);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  remove_tree(run);
}

TEST(Trainer, ResumeContinuesBitExactly) {
  const auto dir = temp_dir("resume");
  const auto size = model_config_from_spec("tiny-test").sample_size;
  const auto images = write_idx_images(dir, 24, size, 1);
  auto straight_cfg = tiny_config(dir + "/straight", images, 20);
  Trainer straight(straight_cfg);
  straight.run(false);
  auto split_cfg = tiny_config(dir + "/split", images, 10);
  {
    Trainer first(split_cfg);
    first.run(false);
    EXPECT_EQ(first.step(), 10);
  }
  auto second = Trainer::resume(dir + "/split", [](TrainConfig& c) { c.steps = 20; });
  EXPECT_EQ(second->step(), 10);
  second->run(false);
  EXPECT_EQ(second->step(), 20);
  expect_same_weights(state_dict(*straight.model()), state_dict(*second->model()));
  expect_same_weights(state_dict(*straight.ema_model()), state_dict(*second->ema_model()));
  // A new run in a folder that already has checkpoints is refused.
  EXPECT_THROW(Trainer{split_cfg}, Error);
  remove_tree(dir);
}

TEST(Trainer, TinyModelOverfitsAHandfulOfImages) {
  // Four images, batch 4. The loss is measured on fixed (t, noise) pairs for those images, so
  // start and end are comparable: L_simple starts near 1 (the noise variance) and, measured here,
  // falls from 1.15 to 0.14 in 300 steps; the bounds are 0.6 at the start and 0.25 at the end.
  const auto dir = temp_dir("overfit");
  const auto size = model_config_from_spec("tiny-test").sample_size;
  const auto images = write_idx_images(dir, 4, size, 2);
  auto cfg = tiny_config(dir + "/run", images, 300);
  cfg.lr = 2e-3;
  cfg.flip = false;
  Trainer t(cfg);
  auto x0 = read_idx_images(images).to(torch::kFloat32) / 127.5 - 1.0;  // (4, 1, S, S)
  auto gen = at::detail::createCPUGenerator(11);
  const int64_t reps = 16;
  auto xs = x0.repeat({reps, 1, 1, 1});
  auto tt = torch::linspace(0, 999, 4 * reps).to(torch::kLong);
  auto noise = at::randn(xs.sizes(), gen, torch::kFloat32);
  auto fixed_loss = [&] {
    torch::NoGradGuard no_grad;
    t.model()->eval();
    auto x_t = t.diffusion().q_sample(xs, tt, noise);
    auto out = t.model()->forward(x_t, tt);
    return t.diffusion()
        .training_losses(out, xs, x_t, tt, noise, LossType::Simple)
        .loss.mean()
        .item<double>();
  };
  const double before = fixed_loss();
  for (int i = 0; i < 300; ++i) t.train_step();
  const double after = fixed_loss();
  std::cout << "overfit: fixed-draw L_simple " << before << " -> " << after << "\n";
  EXPECT_GT(before, 0.6);
  EXPECT_LT(after, 0.25);
  remove_tree(dir);
}

// Label dropout by Monte Carlo: with n = 200,000 draws at p = 0.1 the fraction of null labels has
// standard deviation sqrt(p (1 - p) / n) = 0.00067; the tolerance is 5 of them. Kept labels are
// unchanged, and the same seed gives the same draws.
TEST(LabelDropout, RateMatchesAndIsReproducible) {
  const int64_t n = 200000, null_class = 10;
  auto y = torch::arange(n, torch::kInt64).remainder(10);
  auto gen = at::detail::createCPUGenerator(42);
  auto dropped = drop_labels(y, null_class, 0.1, gen);
  auto is_null = dropped.eq(null_class);
  const double rate = is_null.to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(rate, 0.1, 5 * std::sqrt(0.1 * 0.9 / n));
  EXPECT_TRUE(torch::equal(dropped.masked_select(is_null.logical_not()),
                           y.masked_select(is_null.logical_not())));
  auto again = at::detail::createCPUGenerator(42);
  EXPECT_TRUE(torch::equal(drop_labels(y, null_class, 0.1, again), dropped));
  auto other = at::detail::createCPUGenerator(43);
  EXPECT_FALSE(torch::equal(drop_labels(y, null_class, 0.1, other), dropped));
  EXPECT_TRUE(torch::equal(drop_labels(y, null_class, 0.0, gen), y));
  EXPECT_TRUE(drop_labels(y, null_class, 0.5, gen).eq(null_class).any().item<bool>());
}

// A class-conditional run: num_class_embeds = classes + 1, the options in config.json, label
// dropout and a loss weighting in the step, and a resume that continues bit-exactly (the dropout
// draws come from the run's generator, whose state the checkpoint holds).
TEST(Trainer, ClassConditionalRunResumesBitExactly) {
  const auto dir = temp_dir("classcond");
  const auto size = model_config_from_spec("tiny-test").sample_size;
  const auto images = write_idx_images(dir, 24, size, 1);
  write_idx_labels(dir, 24, 3);
  auto conditional = [&](const std::string& run, int64_t steps) {
    auto c = tiny_config(run, images, steps);
    c.class_cond = true;
    c.label_dropout = 0.3;
    c.loss_weighting = "min-snr-5";
    return c;
  };
  Trainer straight(conditional(dir + "/straight", 8));
  EXPECT_EQ(straight.model()->config().num_class_embeds, 4);
  straight.run(false);
  auto j = nlohmann::json::parse(read_file(dir + "/straight/config.json"));
  EXPECT_EQ(j.at("class_cond"), true);
  EXPECT_EQ(j.at("label_dropout"), 0.3);
  EXPECT_EQ(j.at("loss_weighting"), "min-snr-5");
  {
    Trainer first(conditional(dir + "/split", 4));
    first.run(false);
  }
  auto second = Trainer::resume(dir + "/split", [](TrainConfig& c) { c.steps = 8; });
  second->run(false);
  expect_same_weights(state_dict(*straight.model()), state_dict(*second->model()));
  // The saved model loads with its class table.
  auto lm = load_model(dir + "/straight", torch::kCPU);
  EXPECT_EQ(lm.model->config().num_class_embeds, 4);
  EXPECT_EQ(num_classes(lm.model->config()), 3);
  EXPECT_EQ(null_class(lm.model->config()), 3);

  // Data without labels, and bad options, are refused with the option named.
  const auto unlabelled = temp_dir("unlabelled");
  auto c = tiny_config(unlabelled + "/run", write_idx_images(unlabelled, 8, size, 1), 2);
  c.class_cond = true;
  diffuse::testing::expect_error([&] { Trainer{c}; }, {"--class-cond", "no labels"});
  c = conditional(dir + "/bad", 2);
  c.label_dropout = 1.0;
  diffuse::testing::expect_error([&] { Trainer{c}; }, {"--label-dropout"});
  c = conditional(dir + "/bad", 2);
  c.loss_weighting = "uniform";
  diffuse::testing::expect_error([&] { Trainer{c}; }, {"--loss-weighting", "uniform"});
  c.loss_weighting = "vlb";
  c.variance = "learned-range";
  diffuse::testing::expect_error([&] { Trainer{c}; }, {"--loss-weighting vlb", "fixed"});
  c.variance = "fixed-small";
  c.loss = "vlb";
  diffuse::testing::expect_error([&] { Trainer{c}; }, {"--loss vlb", "--loss-weighting"});
  remove_tree(dir);
  remove_tree(unlabelled);
}
