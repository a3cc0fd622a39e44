#include "diffuse/samplers/sampler.h"

#include "diffuse/core/error.h"
#include "diffuse/samplers/ddim.h"
#include "diffuse/samplers/ddpm.h"
#include "diffuse/samplers/dpm_solver_pp.h"
#include "diffuse/samplers/euler.h"
#include "diffuse/samplers/euler_ancestral.h"
#include "diffuse/samplers/heun.h"
#include "diffuse/samplers/timesteps.h"

namespace diffuse {

const std::vector<SamplerKind>& sampler_kinds() {
  static const std::vector<SamplerKind> kinds = {
      {"ddpm",
       "ancestral sampling, Ho et al. 2020 Algorithm 2; with fewer steps than T the respaced "
       "process of Nichol & Dhariwal 2021 sec. 4 (beta'_i = 1 - abar_{S_i} / abar_{S_(i-1)}), "
       "learned variances (eq. 15) on the respaced betas when the model has them",
       1000, "even",
       [](const SamplerOptions& o, const Schedule& s, std::vector<int64_t> ts,
          VarianceType v) -> std::unique_ptr<Sampler> {
         return std::make_unique<DdpmSampler>(s, std::move(ts), o.prediction, v, o.clip_x0);
       }},
      {"ddim", "Song et al. 2021 eq. 12, --eta as in eq. 16 (0: deterministic)", 50, "leading",
       [](const SamplerOptions& o, const Schedule& s, std::vector<int64_t> ts,
          VarianceType v) -> std::unique_ptr<Sampler> {
         return std::make_unique<DdimSampler>(s, std::move(ts), o.eta, o.prediction, v, o.clip_x0);
       }},
      {"dpm++2m", "DPM-Solver++ 2M, Lu et al. 2022 Algorithm 2 (multistep, second order)", 20,
       "linspace",
       [](const SamplerOptions& o, const Schedule& s, std::vector<int64_t> ts,
          VarianceType v) -> std::unique_ptr<Sampler> {
         return std::make_unique<DpmSolverPPSampler>(s, std::move(ts), o.prediction, v, o.clip_x0);
       }},
      {"euler",
       "Euler on the probability-flow ODE in sigma, Karras et al. 2022 (EDM) eq. 4 and "
       "Algorithm 1 without its correction; Karras sigmas (eq. 5, rho 7) by default",
       50, "karras",
       [](const SamplerOptions& o, const Schedule& s, std::vector<int64_t> ts,
          VarianceType v) -> std::unique_ptr<Sampler> {
         return std::make_unique<EulerSampler>(s, std::move(ts), o.prediction, v, o.clip_x0);
       }},
      {"heun",
       "Heun's 2nd-order method on the probability-flow ODE, Karras et al. 2022 (EDM) "
       "Algorithm 1, deterministic, last step Euler; --steps N noise levels cost 2N - 1 "
       "network evaluations (EDM's CIFAR-10 setting: 18 levels, 35 evaluations)",
       18, "karras",
       [](const SamplerOptions& o, const Schedule& s, std::vector<int64_t> ts,
          VarianceType v) -> std::unique_ptr<Sampler> {
         return std::make_unique<HeunSampler>(s, ts, o.prediction, v, o.clip_x0);
       }},
      {"euler-a",
       "Euler ancestral as k-diffusion's sample_euler_ancestral with eta 1: an Euler step on the "
       "probability-flow ODE down to sigma_down, then fresh noise up to the next sigma (on equal "
       "timesteps the DDPM posterior step, Ho et al. 2020 eq. 7)",
       50, "karras",
       [](const SamplerOptions& o, const Schedule& s, std::vector<int64_t> ts,
          VarianceType v) -> std::unique_ptr<Sampler> {
         return std::make_unique<EulerAncestralSampler>(s, std::move(ts), o.prediction, v,
                                                        o.clip_x0);
       }},
  };
  return kinds;
}

const SamplerKind& sampler_kind(const std::string& name) {
  for (const auto& k : sampler_kinds())
    if (k.name == name) return k;
  fail("--sampler: unknown '", name, "' (expected ", sampler_names(", "), ")");
}

std::string sampler_names(const std::string& separator) {
  std::string out;
  for (const auto& k : sampler_kinds()) out += (out.empty() ? "" : separator) + k.name;
  return out;
}

std::string samplers_help() {
  // Wrapped at 100 columns, continuation lines indented under the name.
  const size_t width = 100;
  std::string out;
  for (const auto& k : sampler_kinds()) {
    const std::string text = k.reference + ". Default " + std::to_string(k.default_steps) +
                             " steps, spacing " + k.default_spacing + ".";
    std::string line = "  " + k.name + ":";
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find(' ', start);
      if (end == std::string::npos) end = text.size();
      const auto word = text.substr(start, end - start);
      if (line.size() + 1 + word.size() > width) {
        out += line + "\n";
        line = "    ";
      } else {
        line += " ";
      }
      line += word;
      start = end + 1;
    }
    out += line + "\n";
  }
  return out;
}

std::string default_spacing(const std::string& kind) {
  return sampler_kind(kind).default_spacing;
}

Sampler::Sampler(std::string name, const Schedule& schedule, std::vector<int64_t> timesteps,
                 PredictionType prediction, VarianceType variance, bool clip_x0,
                 bool repeated_timesteps)
    : name_(std::move(name)),
      timesteps_(std::move(timesteps)),
      prediction_(prediction),
      variance_(variance),
      clip_x0_(clip_x0) {
  validate_timesteps(timesteps_, schedule.num_timesteps(), repeated_timesteps);
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
  const auto& kind = sampler_kind(o.kind);
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
  auto ts = make_timesteps(o.spacing.empty() ? kind.default_spacing : o.spacing,
                           schedule.alphas_cumprod, o.steps);
  return kind.make(o, schedule, std::move(ts), variance);
}

}  // namespace diffuse
