// The sampler interface: a reverse-process stepper over host-side schedule values. Samplers know
// nothing of networks; the loop (sample_loop.h) calls the denoiser and hands its output to step().
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "diffuse/diffusion/gaussian_diffusion.h"
#include "diffuse/diffusion/prediction.h"
#include "diffuse/diffusion/schedule.h"
#include "diffuse/samplers/noise.h"

namespace diffuse {

// The raw network output for the whole batch at timestep t. x: (B, C, H, W) -> (B, C, H, W), or
// (B, 2C, H, W) for a learned-range model: the prediction, then v in [-1, 1] interpolating the
// log-variance.
using Denoiser = std::function<torch::Tensor(const torch::Tensor& x, int64_t t)>;

struct SamplerOptions {
  std::string kind = "ddim";  // a name from sampler_kinds()
  // Noise levels visited: the number of model evaluations, except heun's 2 steps - 1.
  int64_t steps = 50;
  double eta = 0.0;     // DDIM only: 0 deterministic, 1 the DDPM posterior variance
  std::string spacing;  // a name from spacing_names() (timesteps.h); "" = the kind's default
  PredictionType prediction = PredictionType::Epsilon;
  std::string variance = "fixed-small";  // fixed-small | fixed-large | learned-range
  bool clip_x0 = false;                  // clamp the predicted x_0 to [-1, 1]
};

// The kind's default spacing (SamplerKind::default_spacing).
std::string default_spacing(const std::string& kind);

struct StepResult {
  torch::Tensor prev;     // x at the next (lower) timestep, or the sample after the last step
  torch::Tensor pred_x0;  // the x_0 the model output implied at this step
};

class Sampler {
 public:
  // timesteps: where the model is evaluated, strictly descending in [0, T-1] (descending if
  // repeated_timesteps: a two-stage solver evaluates twice at one level).
  Sampler(std::string name, const Schedule& schedule, std::vector<int64_t> timesteps,
          PredictionType prediction, VarianceType variance, bool clip_x0,
          bool repeated_timesteps = false);
  virtual ~Sampler() = default;

  const std::string& name() const { return name_; }
  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  size_t num_steps() const { return timesteps_.size(); }
  // Where step i lands: timesteps[i + 1], or -1 for "none" (the data, abar = 1) after the last.
  int64_t prev_timestep(size_t i) const;
  double alpha_bar(size_t i) const { return abar_.at(i); }
  // abar at prev_timestep(i); 1 after the last step.
  double alpha_bar_prev(size_t i) const { return i + 1 < abar_.size() ? abar_[i + 1] : 1.0; }
  PredictionType prediction() const { return prediction_; }
  VarianceType variance() const { return variance_; }

  // One reverse step from x = x_{timesteps[i]} given the model output there. Steps must be taken
  // in order i = 0, 1, ... (multistep solvers keep history). model_output: (B, C or 2C, ...) as
  // for Denoiser; x: (B, C, ...). Throws diffuse::Error on mismatched shapes or i out of range.
  torch::Tensor step(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                     NoiseSource& noise) {
    return step_full(model_output, i, x, noise).prev;
  }
  StepResult step_full(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                       NoiseSource& noise);

 protected:
  // model_output is already checked and in x's dtype.
  virtual StepResult do_step(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                             NoiseSource& noise) = 0;
  // {x0, eps} implied by the prediction channels of model_output at x = x_t with abar_t = abar
  // (clipped if requested).
  X0Eps predict(const torch::Tensor& model_output, const torch::Tensor& x, double abar) const;

 private:
  std::string name_;
  std::vector<int64_t> timesteps_;
  std::vector<double> abar_;  // abar at each of timesteps_
  PredictionType prediction_;
  VarianceType variance_;
  bool clip_x0_;
};

// Throws diffuse::Error (prefixed with who) unless out is (B, C, ...) like x, or (B, 2C, ...) for
// learned-range.
void check_model_output(const torch::Tensor& out, const torch::Tensor& x, VarianceType variance,
                        const std::string& who);

// Every sampler --sampler accepts, in the order --help lists them: the one list of them.
struct SamplerKind {
  std::string name;
  std::string reference;  // the paper and its equation or algorithm, for --help
  int64_t default_steps;  // what --steps 0 means
  std::string default_spacing;
  // Builds the sampler on timesteps made with the options' steps and spacing.
  std::unique_ptr<Sampler> (*make)(const SamplerOptions& options, const Schedule& schedule,
                                   std::vector<int64_t> timesteps, VarianceType variance);
};
const std::vector<SamplerKind>& sampler_kinds();
// The kind called name; diffuse::Error naming --sampler and the accepted names otherwise.
const SamplerKind& sampler_kind(const std::string& name);
// "ddpm | ddim | ..." with the given separator.
std::string sampler_names(const std::string& separator = " | ");
// The manual's list: one paragraph per sampler with its reference and defaults.
std::string samplers_help();

// Validates the options against the schedule (Errors name --sampler, --steps, --eta, --spacing,
// --variance) and builds the sampler.
std::unique_ptr<Sampler> make_sampler(const SamplerOptions& options, const Schedule& schedule);

}  // namespace diffuse
