#include "diffuse/samplers/sampler.h"

#include "diffuse/core/error.h"
#include "diffuse/samplers/ddim.h"
#include "diffuse/samplers/ddpm.h"
#include "diffuse/samplers/dpm_solver_pp.h"
#include "diffuse/samplers/timesteps.h"

namespace diffuse {

std::string default_spacing(const std::string& kind) {
  return kind == "dpm++2m" ? "linspace" : "leading";
}

Sampler::Sampler(std::string name, const Schedule& schedule, std::vector<int64_t> timesteps,
                 PredictionType prediction, VarianceType variance, bool clip_x0)
    : name_(std::move(name)),
      timesteps_(std::move(timesteps)),
      prediction_(prediction),
      variance_(variance),
      clip_x0_(clip_x0) {
  validate_timesteps(timesteps_, schedule.num_timesteps());
  for (int64_t t : timesteps_) abar_.push_back(schedule.alphas_cumprod[t]);
}

int64_t Sampler::prev_timestep(size_t i) const {
  check(i < timesteps_.size(), name_, ": step ", i, " is out of range (", timesteps_.size(),
        " steps)");
  return i + 1 < timesteps_.size() ? timesteps_[i + 1] : -1;
}

StepResult Sampler::step_full(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                              NoiseSource& noise) {
  check(i < timesteps_.size(), name_, ": step ", i, " is out of range (", timesteps_.size(),
        " steps)");
  check_model_output(model_output, x, variance_, name_);
  return do_step(model_output.to(x.scalar_type()), i, x, noise);
}

X0Eps Sampler::predict(const torch::Tensor& model_output, const torch::Tensor& x,
                       double abar) const {
  const auto pred = model_output.narrow(1, 0, x.size(1));
  // 0-dim CPU tensors act as scalars next to tensors on any device and keep x's dtype.
  const auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  const auto a = torch::scalar_tensor(std::sqrt(abar), opts);
  const auto s = torch::scalar_tensor(std::sqrt(1.0 - abar), opts);
  return clip_x0_ ? split_prediction_clipped(prediction_, pred, x, a, s)
                  : split_prediction(prediction_, pred, x, a, s);
}

void check_model_output(const torch::Tensor& out, const torch::Tensor& x, VarianceType variance,
                        const std::string& who) {
  check(x.defined() && x.dim() >= 2, who, ": x must be (B, C, ...)");
  check(out.defined(), who, ": the denoiser returned an undefined tensor");
  const int64_t C = x.size(1);
  const bool learned = variance == VarianceType::LearnedRange;
  const int64_t want = learned ? 2 * C : C;
  bool ok = out.dim() == x.dim() && out.size(1) == want;
  for (int64_t d = 0; ok && d < x.dim(); ++d) ok = d == 1 || out.size(d) == x.size(d);
  check(ok, who, ": model output has shape ", out.sizes(), ", expected ", want, " channels",
        learned ? " (learned-range: 2C)" : "", " for x of shape ", x.sizes());
  check(at::isFloatingType(out.scalar_type()), who, ": model output must be floating point, got ",
        out.scalar_type());
}

std::unique_ptr<Sampler> make_sampler(const SamplerOptions& o, const Schedule& schedule) {
  const int64_t T = schedule.num_timesteps();
  check(o.kind == "ddpm" || o.kind == "ddim" || o.kind == "dpm++2m", "--sampler: unknown '", o.kind,
        "' (expected ddpm, ddim or dpm++2m)");
  check(o.steps >= 1 && o.steps <= T, "--steps must be in [1, ", T,
        "] (the training timesteps), got ", o.steps);
  check(o.eta >= 0.0 && o.eta <= 1.0, "--eta must be in [0, 1], got ", o.eta);
  check(o.kind == "ddim" || o.eta == 0.0, "--eta ", o.eta, " is only used by --sampler ddim (",
        o.kind, " has no eta)");
  VarianceType variance;
  try {
    variance = parse_variance_type(o.variance);
  } catch (const Error& e) {
    fail("--variance: ", e.what());
  }
  const auto ts =
      make_timesteps(o.spacing.empty() ? default_spacing(o.kind) : o.spacing, T, o.steps);
  if (o.kind == "ddpm")
    return std::make_unique<DdpmSampler>(schedule, ts, o.prediction, variance, o.clip_x0);
  if (o.kind == "ddim")
    return std::make_unique<DdimSampler>(schedule, ts, o.eta, o.prediction, variance, o.clip_x0);
  return std::make_unique<DpmSolverPPSampler>(schedule, ts, o.prediction, variance, o.clip_x0);
}

}  // namespace diffuse
