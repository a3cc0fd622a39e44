#include "diffuse/samplers/sampler.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/core/progress.h"
#include "diffuse/samplers/ddim.h"
#include "diffuse/samplers/ddpm.h"
#include "diffuse/samplers/deis.h"
#include "diffuse/samplers/dpm_solver_pp.h"
#include "diffuse/samplers/euler.h"
#include "diffuse/samplers/euler_ancestral.h"
#include "diffuse/samplers/heun.h"
#include "diffuse/samplers/ipndm.h"
#include "diffuse/samplers/timesteps.h"
#include "diffuse/samplers/unipc.h"

namespace diffuse {

// clang-format off
const std::vector<SamplerKind>& sampler_kinds() {
  static const std::vector<SamplerKind> kinds = {
      {"ddpm",
       "ancestral sampling, Ho et al. 2020 Algorithm 2; with fewer steps than T the respaced "
       "process of Nichol & Dhariwal 2021 sec. 4 (beta'_i = 1 - abar_{S_i} / abar_{S_(i-1)}), "
       "learned variances (eq. 15) on the respaced betas when the model has them",
       1000, "even", sample_ddpm},
      {"ddim", "Song et al. 2021 eq. 12, --eta as in eq. 16 (0: deterministic)", 50, "leading",
       sample_ddim},
      {"dpm++2m", "DPM-Solver++ 2M, Lu et al. 2022 Algorithm 2 (multistep, second order)", 20,
       "linspace", sample_dpmpp_2m},
      {"dpm++3m",
       "DPM-Solver++ 3M, Lu et al. 2022 (multistep, third order, warm-up through orders 1 and 2, "
       "as diffusers' DPMSolverMultistepScheduler with solver_order 3)",
       20, "linspace", sample_dpmpp_3m},
      {"dpm++2m-sde",
       "SDE-DPM-Solver++ 2M, Lu et al. 2022 sec. 5 (stochastic, second order, midpoint; "
       "diffusers' algorithm_type sde-dpmsolver++); noise from the per-image streams",
       20, "linspace", sample_dpmpp_2m_sde},
      {"unipc",
       "UniPC-bh2, Zhao et al. 2023: order-2 predictor UniP with the free order-2 corrector UniC "
       "after every step but the last (diffusers' UniPCMultistepScheduler defaults)",
       20, "linspace", sample_unipc},
      {"deis",
       "DEIS tAB3, Zhang & Chen 2023: exponential integrator with a third-order polynomial in "
       "log rho (diffusers' DEISMultistepScheduler, solver_order 3); ends at timestep 0's noise "
       "level as diffusers does",
       20, "linspace", sample_deis},
      {"euler",
       "Euler on the probability-flow ODE in sigma, Karras et al. 2022 (EDM) eq. 4 and "
       "Algorithm 1 without its correction; Karras sigmas (eq. 5, rho 7) by default",
       50, "karras", sample_euler},
      {"heun",
       "Heun's 2nd-order method on the probability-flow ODE, Karras et al. 2022 (EDM) "
       "Algorithm 1, deterministic, last step Euler; --steps N noise levels cost 2N - 1 "
       "network evaluations (EDM's CIFAR-10 setting: 18 levels, 35 evaluations); with --churn "
       "S (and --s-tmin, --s-tmax, --s-noise) EDM's stochastic Algorithm 2",
       18, "karras", sample_heun},
      {"ipndm",
       "iPNDM, Zhang & Chen 2023 sec. 5: fourth-order Adams-Bashforth on the probability-flow ODE "
       "in sigma (EDM eq. 4) with lower-order warm-up steps, one evaluation per level; Karras "
       "levels as heun",
       20, "karras", sample_ipndm},
      {"euler-a",
       "Euler ancestral as k-diffusion's sample_euler_ancestral with eta 1: an Euler step on the "
       "probability-flow ODE down to sigma_down, then fresh noise up to the next sigma (on equal "
       "timesteps the DDPM posterior step, Ho et al. 2020 eq. 7)",
       50, "karras", sample_euler_ancestral},
  };
  return kinds;
}
// clang-format on

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

Denoiser::Denoiser(ModelFn model, const Schedule& schedule, PredictionType prediction,
                   VarianceType variance, bool clip_x0, std::string who)
    : model_(std::move(model)),
      schedule_(schedule),
      prediction_(prediction),
      variance_(variance),
      clip_x0_(clip_x0),
      who_(std::move(who)) {
  check(static_cast<bool>(model_), who_, ": no model given");
}

double Denoiser::alpha_bar(int64_t t) const {
  if (t == -1) return 1.0;
  check(t >= 0 && t < schedule_.num_timesteps(), who_, ": timestep ", t, " is outside [0, ",
        schedule_.num_timesteps() - 1, "]");
  return schedule_.alphas_cumprod[t];
}

X0Eps Denoiser::split(const torch::Tensor& output, const torch::Tensor& x_t, double abar) const {
  const auto pred = output.narrow(1, 0, x_t.size(1));
  // 0-dim CPU tensors act as scalars next to tensors on any device and keep x's dtype.
  const auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  const auto a = torch::scalar_tensor(std::sqrt(abar), opts);
  const auto s = torch::scalar_tensor(std::sqrt(1.0 - abar), opts);
  return clip_x0_ ? split_prediction_clipped(prediction_, pred, x_t, a, s)
                  : split_prediction(prediction_, pred, x_t, a, s);
}

Denoised Denoiser::operator()(const torch::Tensor& x_t, int64_t t) const {
  check(x_t.defined() && x_t.dim() >= 2, who_, ": x must be (B, C, ...)");
  const double abar = alpha_bar(t);
  const auto tt = torch::full({x_t.size(0)}, t,
                              torch::TensorOptions().dtype(torch::kLong).device(x_t.device()));
  auto out = model_(x_t, tt);
  check_model_output(out, x_t, variance_, who_);
  out = out.to(x_t.scalar_type());
  auto p = split(out, x_t, abar);
  return {p.x0, p.eps, out};
}

void check_model_output(const torch::Tensor& out, const torch::Tensor& x, VarianceType variance,
                        const std::string& who) {
  check(out.defined(), who, ": the model returned an undefined tensor");
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

bool EdmChurn::is_default() const {
  const EdmChurn d;
  return churn == d.churn && s_tmin == d.s_tmin && s_tmax == d.s_tmax && s_noise == d.s_noise;
}

void check_churn(const EdmChurn& c, const std::string& kind) {
  check(kind == "heun" || c.is_default(),
        "--churn, --s-tmin, --s-tmax and --s-noise are only used ",
        "by --sampler heun (EDM Algorithm 2), not by ", kind);
  check(std::isfinite(c.churn) && c.churn >= 0, "--churn must be finite and >= 0, got ", c.churn);
  check(c.s_tmin >= 0 && c.s_tmin <= c.s_tmax, "--s-tmin (", c.s_tmin,
        ") must be >= 0 and at most --s-tmax (", c.s_tmax, ")");
  check(std::isfinite(c.s_noise) && c.s_noise > 0, "--s-noise must be finite and > 0, got ",
        c.s_noise);
}

Sampler::Sampler(const SamplerOptions& options, const Schedule& schedule,
                 std::vector<int64_t> timesteps)
    : kind_(&sampler_kind(options.kind)),
      options_(options),
      schedule_(schedule),
      timesteps_(std::move(timesteps)) {
  check(options.eta >= 0.0 && options.eta <= 1.0, "--eta must be in [0, 1], got ", options.eta);
  check(options.kind == "ddim" || options.eta == 0.0, "--eta ", options.eta,
        " is only used by --sampler ddim (", options.kind, " has no eta)");
  check_churn(options.churn, options.kind);
  try {
    variance_ = parse_variance_type(options.variance);
  } catch (const Error& e) {
    fail("--variance: ", e.what());
  }
  validate_timesteps(timesteps_, schedule.num_timesteps());
}

torch::Tensor Sampler::sample(const ModelFn& model, torch::Tensor x_T, NoiseSource& noise,
                              const SampleCallbacks& callbacks) const {
  check(x_T.defined() && x_T.dim() >= 2, name(), ": x_T must be (B, C, ...)");
  c10::InferenceMode guard;
  Denoiser denoiser(model, schedule_, options_.prediction, variance_, options_.clip_x0, name());
  ProgressBar bar(static_cast<int64_t>(num_steps()), callbacks.label, "step",
                  callbacks.show_progress);
  SamplerRun run{timesteps_, options_.eta, &noise, options_.churn, {}};
  run.on_step = [&](size_t i, int64_t t, const torch::Tensor& x_t, const torch::Tensor& x0) {
    if (callbacks.on_step) callbacks.on_step(i, t, x_t, x0);
    bar.update();
  };
  auto x = kind_->run(denoiser, std::move(x_T), run);
  bar.finish();
  return x;
}

std::unique_ptr<Sampler> make_sampler(const SamplerOptions& o, const Schedule& schedule) {
  const int64_t T = schedule.num_timesteps();
  const auto& kind = sampler_kind(o.kind);
  check(o.steps >= 1 && o.steps <= T, "--steps must be in [1, ", T,
        "] (the training timesteps), got ", o.steps);
  check(o.eta >= 0.0 && o.eta <= 1.0, "--eta must be in [0, 1], got ", o.eta);
  auto ts = make_timesteps(o.spacing.empty() ? kind.default_spacing : o.spacing,
                           schedule.alphas_cumprod, o.steps);
  return std::make_unique<Sampler>(o, schedule, std::move(ts));
}

}  // namespace diffuse
