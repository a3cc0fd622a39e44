// Samplers as k-diffusion writes them: each is one function over (denoiser, x_T, timesteps) that
// calls the denoiser as often as its algorithm needs and keeps whatever history it needs in its own
// local variables. They know the network only as a ModelFn; the process (schedule, prediction and
// variance types) turns its output into x_0 and eps (Denoiser below).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "diffuse/diffusion/gaussian_diffusion.h"
#include "diffuse/diffusion/model_fn.h"
#include "diffuse/diffusion/prediction.h"
#include "diffuse/diffusion/schedule.h"
#include "diffuse/samplers/noise.h"

namespace diffuse {

// EDM's stochastic churn (Karras et al. 2022, Algorithm 2): before level i, with sigma_i in
// [s_tmin, s_tmax], the noise is raised to sigma_hat = (1 + gamma) sigma_i, gamma =
// min(churn / N, sqrt(2) - 1), by adding N(0, (sigma_hat^2 - sigma_i^2) s_noise^2) noise. churn 0
// is Algorithm 1. Used by heun only.
struct EdmChurn {
  double churn = 0.0;
  double s_tmin = 0.0;
  double s_tmax = std::numeric_limits<double>::infinity();
  double s_noise = 1.0;
  bool is_default() const;
};

struct SamplerOptions {
  std::string kind = "ddim";  // a name from sampler_kinds()
  int64_t steps = 50;         // noise levels visited (heun evaluates the network 2 steps - 1 times)
  double eta = 0.0;           // DDIM only: 0 deterministic, 1 the DDPM posterior variance
  std::string spacing;        // a name from spacing_names() (timesteps.h); "" = the kind's default
  PredictionType prediction = PredictionType::Epsilon;
  std::string variance = "fixed-small";  // fixed-small | fixed-large | learned-range
  bool clip_x0 = false;                  // clamp the predicted x_0 to [-1, 1]
  EdmChurn churn;                        // heun only
};

// What one evaluation of the network at (x_t, t) says: the x_0 and eps it implies (x_0 clamped to
// [-1, 1] and eps recomputed from it when clipping) and the raw output (learned variances read its
// last C channels).
struct Denoised {
  torch::Tensor x0, eps, output;
};

// The network read through the process.
class Denoiser {
 public:
  Denoiser(ModelFn model, const Schedule& schedule, PredictionType prediction,
           VarianceType variance, bool clip_x0, std::string who = "sampler");

  // The network at x_t (B, C, ...) and timestep t, its output checked (diffuse::Error naming who
  // otherwise) and in x_t's dtype.
  Denoised operator()(const torch::Tensor& x_t, int64_t t) const;
  // {x0, eps} of an output at x_t with abar_t = abar.
  X0Eps split(const torch::Tensor& output, const torch::Tensor& x_t, double abar) const;
  // abar_t; 1 for t = -1 (the data, below the first timestep).
  double alpha_bar(int64_t t) const;

  const Schedule& schedule() const { return schedule_; }
  PredictionType prediction() const { return prediction_; }
  VarianceType variance() const { return variance_; }
  bool clip_x0() const { return clip_x0_; }

 private:
  ModelFn model_;
  Schedule schedule_;
  PredictionType prediction_;
  VarianceType variance_;
  bool clip_x0_;
  std::string who_;
};

// Called after step i with the model's timestep t there, the step's input x_t and the x_0 the
// model predicted from it (trajectory strips, progress). x_t, pred_x0: (B, C, H, W).
using StepCallback = std::function<void(size_t i, int64_t t, const torch::Tensor& x_t,
                                        const torch::Tensor& pred_x0)>;

// Everything a sampler function is given besides the denoiser and x_T.
struct SamplerRun {
  // The noise levels visited, as timesteps in [0, T-1], strictly descending; the step from
  // timesteps[i] lands on timesteps[i + 1], and on the data (abar = 1) after the last.
  std::vector<int64_t> timesteps;
  double eta = 0.0;
  NoiseSource* noise = nullptr;  // the ancestral samplers' z; deterministic ones draw none
  EdmChurn churn;
  StepCallback on_step;

  // abar at timesteps[i], and at the level step i lands on (1 after the last step).
  double alpha_bar(const Denoiser& d, size_t i) const { return d.alpha_bar(timesteps[i]); }
  double alpha_bar_next(const Denoiser& d, size_t i) const {
    return i + 1 < timesteps.size() ? d.alpha_bar(timesteps[i + 1]) : 1.0;
  }
  void step_done(size_t i, const torch::Tensor& x_t, const torch::Tensor& x0) const {
    if (on_step) on_step(i, timesteps[i], x_t, x0);
  }
};

// Throws diffuse::Error naming the options unless the churn is valid and, when not the default,
// kind is heun.
void check_churn(const EdmChurn& churn, const std::string& kind);

// Throws diffuse::Error (prefixed with who) unless out is (B, C, ...) like x, or (B, 2C, ...) for
// learned-range, and floating point.
void check_model_output(const torch::Tensor& out, const torch::Tensor& x, VarianceType variance,
                        const std::string& who);

using SamplerFn = torch::Tensor (*)(const Denoiser& denoiser, torch::Tensor x,
                                    const SamplerRun& run);

// Every sampler --sampler accepts, in the order --help lists them: the one list of them.
struct SamplerKind {
  std::string name;
  std::string reference;  // the paper and its equation or algorithm, for --help
  int64_t default_steps;  // what --steps 0 means
  std::string default_spacing;
  SamplerFn run;
};
const std::vector<SamplerKind>& sampler_kinds();
// The kind called name; diffuse::Error naming --sampler and the accepted names otherwise.
const SamplerKind& sampler_kind(const std::string& name);
// "ddpm | ddim | ..." with the given separator.
std::string sampler_names(const std::string& separator = " | ");
// The manual's list: one paragraph per sampler with its reference and defaults.
std::string samplers_help();
// The kind's default spacing (SamplerKind::default_spacing).
std::string default_spacing(const std::string& kind);

struct SampleCallbacks {
  StepCallback on_step;
  bool show_progress = true;
  std::string label = "sample";
};

// A sampler with its options checked and its timesteps chosen; sample() runs it.
class Sampler {
 public:
  // Timesteps given explicitly (strictly descending in [0, T-1]); options.spacing and steps are
  // then unused.
  Sampler(const SamplerOptions& options, const Schedule& schedule, std::vector<int64_t> timesteps);

  const std::string& name() const { return kind_->name; }
  const SamplerOptions& options() const { return options_; }
  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  size_t num_steps() const { return timesteps_.size(); }
  VarianceType variance() const { return variance_; }
  const Schedule& schedule() const { return schedule_; }

  // x_T (B, C, H, W) -> the sample, under c10::InferenceMode, with a progress bar over the steps.
  torch::Tensor sample(const ModelFn& model, torch::Tensor x_T, NoiseSource& noise,
                       const SampleCallbacks& callbacks = {}) const;

 private:
  const SamplerKind* kind_;
  SamplerOptions options_;
  Schedule schedule_;
  std::vector<int64_t> timesteps_;
  VarianceType variance_;
};

// Validates the options against the schedule (Errors name --sampler, --steps, --eta, --spacing,
// --variance) and chooses the timesteps.
std::unique_ptr<Sampler> make_sampler(const SamplerOptions& options, const Schedule& schedule);

inline torch::Tensor sample(const Sampler& sampler, const ModelFn& model, torch::Tensor x_T,
                            NoiseSource& noise, const SampleCallbacks& callbacks = {}) {
  return sampler.sample(model, std::move(x_T), noise, callbacks);
}

}  // namespace diffuse
