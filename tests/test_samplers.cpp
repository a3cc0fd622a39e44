// Samplers checked with the exact noise predictor of Gaussian data (golden README): against
// trajectories computed by diffusers (tests/data/samplers.json), against the exact law of the
// ancestral chain, and against each other where the papers say they coincide.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "diffuse/core/error.h"
#include "diffuse/diffusion/gaussian_diffusion.h"
#include "diffuse/samplers/ddim.h"
#include "diffuse/samplers/ddpm.h"
#include "diffuse/samplers/dpm_solver_pp.h"
#include "diffuse/samplers/euler.h"
#include "diffuse/samplers/euler_ancestral.h"
#include "diffuse/samplers/guided.h"
#include "diffuse/samplers/heun.h"
#include "diffuse/samplers/inversion.h"
#include "diffuse/samplers/ipndm.h"
#include "diffuse/samplers/sampler.h"
#include "diffuse/samplers/score.h"
#include "diffuse/samplers/timesteps.h"
#include "support.h"

using namespace diffuse;
using namespace diffuse::testing;

namespace {

double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// The timestep of a (B) tensor whose rows all hold it (as every sampler calls the model).
int64_t one_timestep(const torch::Tensor& t) {
  EXPECT_EQ(t.dim(), 1);
  const auto t0 = t[0].item<int64_t>();
  EXPECT_TRUE(t.eq(t0).all().item<bool>()) << t;
  return t0;
}

// A ModelFn from a function of (x, timestep).
ModelFn model_of(std::function<torch::Tensor(const torch::Tensor&, int64_t)> f) {
  return [f](const torch::Tensor& x, const torch::Tensor& t) { return f(x, one_timestep(t)); };
}

// Data x0 ~ N(mu, s^2) elementwise; the exact MMSE predictor in any parameterisation, float64.
struct Analytic {
  Schedule sch;
  torch::Tensor mu;
  double s;

  torch::Tensor eps(const torch::Tensor& x, int64_t t) const {
    const double ab = sch.alphas_cumprod[t];
    return std::sqrt(1 - ab) * (x - std::sqrt(ab) * mu) / (ab * s * s + 1 - ab);
  }
  torch::Tensor output(PredictionType p, const torch::Tensor& x, int64_t t) const {
    const double a = sch.sqrt_alphas_cumprod[t], sd = sch.sqrt_one_minus_alphas_cumprod[t];
    const auto e = eps(x, t);
    const auto x0 = (x - sd * e) / a;
    if (p == PredictionType::Sample) return x0;
    if (p == PredictionType::V) return a * e - sd * x0;
    return e;
  }
  // The analytic model as a ModelFn; every row of t must be the same timestep.
  ModelFn denoiser(PredictionType p = PredictionType::Epsilon) const {
    return [this, p](const torch::Tensor& x, const torch::Tensor& t) {
      return output(p, x, one_timestep(t));
    };
  }
};

torch::Tensor from_json(const nlohmann::json& v, at::IntArrayRef shape) {
  return torch::tensor(v.get<std::vector<double>>(), torch::kFloat64).reshape(shape);
}

struct Golden {
  nlohmann::json json;
  std::vector<int64_t> shape;
  Analytic model;
  torch::Tensor x_T;
};

Golden load_golden(const std::string& file = "samplers.json") {
  Golden g{load_json(file), {}, {Schedule::linear(1000), {}, 0.0}, {}};
  g.shape = g.json["shape"].get<std::vector<int64_t>>();
  g.model.mu = from_json(g.json["mu"], g.shape);
  g.model.s = g.json["s"].get<double>();
  g.x_T = from_json(g.json["x_T"], g.shape);
  return g;
}

// The probability-flow ODE's exact x_0 from g.x_T at sigma_max = sigma_{T-1} (derivation in
// Edm.HeunAndEulerConvergeToTheExactOdeSolution).
torch::Tensor exact_ode_x0(const Golden& g) {
  const auto& m = g.model;
  const double abar_T = m.sch.alphas_cumprod.back(), smax = sigma_of_alpha_bar(abar_T);
  return m.mu + m.s * (g.x_T / std::sqrt(abar_T) - m.mu) / std::sqrt(m.s * m.s + smax * smax);
}

SampleCallbacks quiet() {
  SampleCallbacks cb;
  cb.show_progress = false;
  return cb;
}

SamplerOptions options(const std::string& kind, int64_t steps, const std::string& spacing = "") {
  SamplerOptions o;
  o.kind = kind;
  o.steps = steps;
  o.spacing = spacing;
  return o;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Against diffusers

TEST(Samplers, ReproduceDiffusersTrajectories) {
  auto g = load_golden();
  for (const auto& run : g.json["runs"]) {
    const auto kind = run["sampler"].get<std::string>() == "ddim" ? "ddim" : "dpm++2m";
    const auto steps = run["steps"].get<int64_t>();
    auto sampler = make_sampler(options(kind, steps), g.model.sch);
    EXPECT_EQ(sampler->timesteps(), run["timesteps"].get<std::vector<int64_t>>())
        << kind << " " << steps;
    NoiseSource noise(0);
    auto x0 = sample(*sampler, g.model.denoiser(), g.x_T, noise, quiet());
    EXPECT_LT(max_abs(x0, from_json(run["x_0"], g.shape)), 1e-5) << kind << " " << steps;
    // The defaults are the golden spacings: leading for DDIM, linspace for DPM-Solver++.
    auto named =
        make_sampler(options(kind, steps, run["timestep_spacing"].get<std::string>()), g.model.sch);
    EXPECT_EQ(named->timesteps(), sampler->timesteps()) << kind << " " << steps;
  }
}

TEST(Samplers, ReproduceDiffusersMultistepTrajectories) {
  // DPM-Solver++ 3M and 2M SDE, UniPC and DEIS (tests/data/make_samplers.py --multistep).
  auto g = load_golden("samplers_multistep.json");
  std::set<std::string> kinds;
  for (const auto& run : g.json["runs"]) {
    const auto kind = run["sampler"].get<std::string>();
    const auto steps = run["steps"].get<int64_t>();
    kinds.insert(kind);
    auto sampler = make_sampler(options(kind, steps), g.model.sch);
    EXPECT_EQ(sampler->timesteps(), run["timesteps"].get<std::vector<int64_t>>())
        << kind << " " << steps;
    const uint64_t seed = run.value("seed", 0);
    if (run.contains("first_noise")) {
      // The script reproduces NoiseSource's streams; this ties its noise to ours.
      NoiseSource probe(seed);
      ASSERT_TRUE(torch::equal(probe.randn(g.shape, torch::kFloat64),
                               from_json(run["first_noise"], g.shape)))
          << "make_samplers.py no longer draws NoiseSource's noise";
    }
    NoiseSource noise(seed);
    auto x0 = sample(*sampler, g.model.denoiser(), g.x_T, noise, quiet());
    const double err = max_abs(x0, from_json(run["x_0"], g.shape));
    std::cout << kind << " " << steps << " steps: max |x_0 - diffusers| = " << err << "\n";
    EXPECT_LT(err, 1e-5) << kind << " " << steps;
  }
  EXPECT_EQ(kinds, (std::set<std::string>{"dpm++3m", "dpm++2m-sde", "unipc", "deis"}));
}

// ---------------------------------------------------------------------------------------------
// Timestep spacings

TEST(Timesteps, LeadingIsAFixedStrideFromZero) {
  auto ts = leading_timesteps(1000, 10);
  ASSERT_EQ(ts.size(), 10u);
  for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(ts[i], 100 * (9 - static_cast<int64_t>(i)));
  // floor(T / S) when S does not divide T: exactly S steps, the largest (S-1) floor(T/S).
  auto odd = leading_timesteps(1000, 300);
  ASSERT_EQ(odd.size(), 300u);
  EXPECT_EQ(odd.front(), 299 * 3);
  EXPECT_EQ(odd.back(), 0);
}

TEST(Timesteps, LinspaceStartsAtTheLastTimestep) {
  for (int64_t S : {1, 7, 10, 20, 999}) {
    auto ts = linspace_timesteps(1000, S);
    ASSERT_EQ(static_cast<int64_t>(ts.size()), S);
    EXPECT_EQ(ts.front(), 999);
    EXPECT_NO_THROW(validate_timesteps(ts, 1000)) << S;
    // The last is the first interior point of linspace(0, 999, S + 1), rounded.
    EXPECT_LE(std::abs(static_cast<double>(ts.back()) - 999.0 / S), 0.5) << S;
  }
}

TEST(Timesteps, TrailingStartsAtTheLastTimestepAndIsNotAFixedStride) {
  for (int64_t S : {1, 3, 10, 250, 1000}) {
    auto ts = trailing_timesteps(1000, S);
    ASSERT_EQ(static_cast<int64_t>(ts.size()), S);
    EXPECT_EQ(ts.front(), 999) << S;
    EXPECT_NO_THROW(validate_timesteps(ts, 1000)) << S;
  }
  auto ts = trailing_timesteps(1000, 10);
  for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(ts[i], 999 - 100 * static_cast<int64_t>(i));
  // round(1000 - i * 333.33) - 1: 999, 666, 332. A stride of T/S = 333 would give 333.
  EXPECT_EQ(trailing_timesteps(1000, 3), (std::vector<int64_t>{999, 666, 332}));
}

TEST(Timesteps, QuadraticGapsGrowWithT) {
  auto ts = quadratic_timesteps(1000, 10);
  ASSERT_EQ(ts.size(), 10u);
  EXPECT_EQ(ts.back(), 0);
  EXPECT_NEAR(static_cast<double>(ts.front()), 800.0, 1.0);  // (sqrt(0.8 T))^2
  // The exact gaps (u_i^2 - u_{i-1}^2) grow by 2 (sqrt(800) / 9)^2 ~ 19.8, so the floored ones
  // grow.
  for (size_t i = 2; i < ts.size(); ++i) EXPECT_GT(ts[i - 2] - ts[i - 1], ts[i - 1] - ts[i]) << i;
}

TEST(Timesteps, RepeatsAreRejectedWithTheLargestValidCount) {
  auto msg = error_of([] { make_timesteps("quadratic", 1000, 100); });
  EXPECT_NE(msg.find("--steps"), std::string::npos) << msg;
  EXPECT_NE(msg.find("quadratic"), std::string::npos) << msg;
  const auto pos = msg.find("at most ");
  ASSERT_NE(pos, std::string::npos) << msg;
  const int64_t most = std::stoll(msg.substr(pos + 8));
  EXPECT_NO_THROW(make_timesteps("quadratic", 1000, most));
  EXPECT_FALSE(error_of([&] { make_timesteps("quadratic", 1000, most + 1); }).empty());
  // linspace over [0, T-1] repeats with S = T; trailing and leading never do.
  EXPECT_NE(error_of([] { make_timesteps("linspace", 1000, 1000); }).find("at most 999"),
            std::string::npos);
  EXPECT_NO_THROW(make_timesteps("trailing", 1000, 1000));
  EXPECT_NO_THROW(make_timesteps("leading", 1000, 1000));
}

TEST(Timesteps, StepLandsOnTheNextListedTimestep) {
  Analytic m{Schedule::linear(1000), torch::full({1, 2, 4, 4}, 0.2, torch::kFloat64), 0.5};
  Sampler ddim(options("ddim", 3), m.sch, trailing_timesteps(1000, 3));
  // Each step's input, and the x_0 predicted at the last one.
  std::vector<torch::Tensor> xs;
  torch::Tensor last_x0;
  auto cb = quiet();
  cb.on_step = [&](size_t, int64_t, const torch::Tensor& x_t, const torch::Tensor& x0) {
    xs.push_back(x_t.clone());
    last_x0 = x0.clone();
  };
  NoiseSource noise(1);
  auto x0 = sample(ddim, m.denoiser(), torch::randn({1, 2, 4, 4}, torch::kFloat64), noise, cb);
  ASSERT_EQ(xs.size(), 3u);
  const auto& x = xs[1];           // at t = 666
  auto direct = [&](int64_t to) {  // DDIM eq. 12, eta = 0, written out
    const double ab = m.sch.alphas_cumprod[666], ab_to = m.sch.alphas_cumprod[to];
    const auto e = m.eps(x, 666);
    const auto x0 = (x - std::sqrt(1 - ab) * e) / std::sqrt(ab);
    return std::sqrt(ab_to) * x0 + std::sqrt(1 - ab_to) * e;
  };
  EXPECT_LT(max_abs(xs[2], direct(332)), 1e-12);
  EXPECT_GT(max_abs(xs[2], direct(333)), 1e-5);  // where a fixed stride would land
  // After the last step abar = 1: the sample is the x_0 prediction.
  EXPECT_LT(max_abs(x0, last_x0), 1e-12);
}

// ---------------------------------------------------------------------------------------------
// DDPM ancestral sampling

namespace {

// The ancestral chain on the analytic model is linear-Gaussian elementwise: x_0 = c mu + N(0, v),
// from x_T ~ N(0, 1). Its exact (c, v) by the recursion of Ho et al. eq. 6-7 on the respaced
// schedule.
std::pair<double, double> ddpm_law(const Schedule& sch, std::vector<int64_t> kept, double s,
                                   bool large) {
  std::reverse(kept.begin(), kept.end());  // ascending
  double c = 0.0, v = 1.0;
  for (int64_t j = static_cast<int64_t>(kept.size()) - 1; j >= 0; --j) {
    const double a = sch.alphas_cumprod[kept[j]], ap = j > 0 ? sch.alphas_cumprod[kept[j - 1]] : 1;
    const double beta = 1 - a / ap;
    const double k = std::sqrt(1 - a) / (a * s * s + 1 - a);  // eps = k (x - sqrt(a) mu)
    // x0_hat = A0 x + B0 mu; x_{j-1} = c1 x0_hat + c2 x + sigma z
    const double A0 = (1 - std::sqrt(1 - a) * k) / std::sqrt(a), B0 = std::sqrt(1 - a) * k;
    const double c1 = beta * std::sqrt(ap) / (1 - a), c2 = (1 - ap) * std::sqrt(1 - beta) / (1 - a);
    const double var = j == 0 ? 0.0 : large ? beta : beta * (1 - ap) / (1 - a);
    c = (c1 * A0 + c2) * c + c1 * B0;
    v = (c1 * A0 + c2) * (c1 * A0 + c2) * v + var;
  }
  return {c, v};
}

}  // namespace

TEST(Ddpm, AncestralSamplesFollowTheChainsExactLaw) {
  auto gen = at::detail::createCPUGenerator(3);
  const double s = 0.3;
  Analytic m{Schedule::linear(1000), 0.5 * torch::randn({1, 4, 16, 16}, gen, torch::kFloat64), s};
  const double N = 8 * 4 * 16 * 16;
  // Four standard errors: of a mean of N standard normals 1/sqrt(N), of their variance
  // sqrt(2/(N-1)). With N = 8192 these are 0.044 and 0.062.
  const double tol_mean = 4 / std::sqrt(N), tol_var = 4 * std::sqrt(2 / (N - 1));
  uint64_t seed = 10;
  for (int64_t steps : {1000, 100}) {
    for (const std::string variance : {"fixed-small", "fixed-large"}) {
      auto o = options("ddpm", steps);
      o.variance = variance;
      auto sampler = make_sampler(o, m.sch);
      NoiseSource noise(seed++);
      auto x_T = noise.randn({8, 4, 16, 16}, torch::kFloat64);
      auto x0 = sample(*sampler, m.denoiser(), x_T, noise, quiet());
      const auto [c, v] = ddpm_law(m.sch, sampler->timesteps(), s, variance == "fixed-large");
      auto z = (x0 - c * m.mu) / std::sqrt(v);
      EXPECT_LT(std::abs(z.mean().item<double>()), tol_mean) << steps << " " << variance;
      EXPECT_LT(std::abs(z.var().item<double>() - 1), tol_var) << steps << " " << variance;
      if (steps == 1000) {
        // With all T steps the chain's law is N(mu, s^2) up to a discretisation bias the
        // recursion puts at |c - 1| < 1e-5 and |v / s^2 - 1| < 2.5% (fixed-small the worst).
        EXPECT_LT(std::abs(c - 1), 1e-4);
        EXPECT_LT(std::abs(v / (s * s) - 1), 0.03);
        auto r = (x0 - m.mu) / s;
        EXPECT_LT(std::abs(r.mean().item<double>()), tol_mean);
        EXPECT_LT(std::abs(r.var().item<double>() - 1), tol_var + 0.03);
      }
    }
  }
  // The 100-step laws differ enough (beta~ vs beta) for the tolerance above to tell them apart.
  auto kept = leading_timesteps(1000, 100);
  EXPECT_GT(ddpm_law(m.sch, kept, s, true).second / ddpm_law(m.sch, kept, s, false).second - 1,
            2 * tol_var);
}

TEST(Ddpm, LearnedRangeEndsAreTheFixedVariances) {
  Analytic m{Schedule::linear(1000), torch::full({1, 3, 4, 4}, -0.1, torch::kFloat64), 0.4};
  auto x_T = torch::randn({2, 3, 4, 4}, torch::kFloat64);
  auto run = [&](const std::string& variance, double v) {
    auto o = options("ddpm", 20, "leading");
    o.variance = variance;
    auto model = model_of([&](const torch::Tensor& x, int64_t t) {
      const auto e = m.eps(x, t);
      return variance == "learned-range" ? torch::cat({e, torch::full_like(e, v)}, 1) : e;
    });
    NoiseSource noise(3);
    return sample(*make_sampler(o, m.sch), model, x_T, noise, quiet());
  };
  // v = -1: frac 0, log beta~; v = +1: frac 1, log beta; the same noise, so the same chain.
  auto lo = run("learned-range", -1.0), hi = run("learned-range", 1.0);
  EXPECT_LT(max_abs(lo, run("fixed-small", 0.0)), 1e-10);
  EXPECT_LT(max_abs(hi, run("fixed-large", 0.0)), 1e-10);
  EXPECT_GT(max_abs(lo, hi), 1e-4);
}

TEST(Ddpm, SameSeedSameSamplesDifferentSeedDifferent) {
  Analytic m{Schedule::linear(1000), torch::zeros({1, 3, 8, 8}, torch::kFloat64), 0.5};
  auto sampler = make_sampler(options("ddpm", 25), m.sch);
  auto run = [&](uint64_t seed) {
    NoiseSource noise(seed);
    auto x_T = noise.randn({2, 3, 8, 8}, torch::kFloat64);
    return sample(*sampler, m.denoiser(), x_T, noise, quiet());
  };
  auto a = run(7), b = run(7), c = run(8);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_GT(max_abs(a, c), 0.1);
}

// ---------------------------------------------------------------------------------------------
// DDIM

TEST(Ddim, EtaOneIsTheDdpmPosteriorOnTheRespacedSchedule) {
  Analytic m{Schedule::linear(1000), torch::full({1, 2, 4, 4}, 0.3, torch::kFloat64), 0.5};
  for (const auto& ts : {leading_timesteps(1000, 10), trailing_timesteps(1000, 3)}) {
    const auto respaced =
        respaced_process(m.sch, ts, PredictionType::Epsilon, VarianceType::FixedSmall).schedule();
    for (size_t i = 0; i < ts.size(); ++i) {
      const auto j = ts.size() - 1 - i;
      const double abar = m.sch.alphas_cumprod[ts[i]];
      const double abar_next = i + 1 < ts.size() ? m.sch.alphas_cumprod[ts[i + 1]] : 1.0;
      const double sigma = ddim_sigma(abar, abar_next, 1.0);
      EXPECT_NEAR(sigma * sigma, j == 0 ? 0.0 : respaced.posterior_variance[j], 1e-15);
    }
    // With the same noise the two chains coincide step by step.
    auto o = options("ddim", 0);
    o.eta = 1.0;
    Sampler ddim(o, m.sch, ts);
    Sampler ddpm(options("ddpm", 0), m.sch, ts);
    auto x_T = torch::randn({3, 2, 4, 4}, torch::kFloat64);
    std::vector<torch::Tensor> a, b;
    auto record = [](std::vector<torch::Tensor>& into) {
      auto cb = quiet();
      cb.on_step = [&into](size_t, int64_t, const torch::Tensor& x_t, const torch::Tensor&) {
        into.push_back(x_t.clone());
      };
      return cb;
    };
    NoiseSource n1(42), n2 = n1;
    auto xa = sample(ddim, m.denoiser(), x_T, n1, record(a));
    auto xb = sample(ddpm, m.denoiser(), x_T, n2, record(b));
    ASSERT_EQ(a.size(), ts.size());
    for (size_t i = 0; i < ts.size(); ++i) EXPECT_LT(max_abs(a[i], b[i]), 1e-12) << i;
    EXPECT_LT(max_abs(xa, xb), 1e-12);
  }
}

TEST(Ddim, AllParameterisationsOfOneModelAgree) {
  auto g = load_golden();
  for (const std::string kind : {"ddim", "dpm++2m", "euler", "heun"}) {
    std::vector<torch::Tensor> results;
    for (auto p : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::V}) {
      auto o = options(kind, 10);
      o.prediction = p;
      auto sampler = make_sampler(o, g.model.sch);
      NoiseSource noise(0);
      results.push_back(sample(*sampler, g.model.denoiser(p), g.x_T, noise, quiet()));
    }
    EXPECT_LT(max_abs(results[0], results[1]), 1e-9) << kind;
    EXPECT_LT(max_abs(results[0], results[2]), 1e-9) << kind;
  }
}

TEST(Ddim, ClippingBoundsThePredictedX0) {
  Analytic m{Schedule::linear(1000), torch::full({1, 1, 4, 4}, 2.0, torch::kFloat64), 0.1};
  auto o = options("ddim", 10);
  o.clip_x0 = true;
  auto sampler = make_sampler(o, m.sch);
  NoiseSource noise(0);
  double most = 0;
  auto cb = quiet();
  cb.on_step = [&](size_t, int64_t, const torch::Tensor&, const torch::Tensor& x0) {
    most = std::max(most, x0.abs().max().item<double>());
  };
  auto x0 = sample(*sampler, m.denoiser(), torch::randn({2, 1, 4, 4}, torch::kFloat64), noise, cb);
  EXPECT_LE(most, 1.0);
  EXPECT_LE(x0.abs().max().item<double>(), 1.0 + 1e-12);  // the data mean 2 is out of range
}

TEST(SampleLoop, CallbackSeesEveryStepInOrder) {
  auto g = load_golden();
  auto sampler = make_sampler(options("ddim", 10), g.model.sch);
  std::vector<int64_t> seen;
  torch::Tensor last_x0;
  auto cb = quiet();
  cb.on_step = [&](size_t i, int64_t t, const torch::Tensor& x_t, const torch::Tensor& x0) {
    EXPECT_EQ(i, seen.size());
    EXPECT_EQ(x_t.sizes(), g.x_T.sizes());
    seen.push_back(t);
    last_x0 = x0;
  };
  NoiseSource noise(0);
  auto x0 = sample(*sampler, g.model.denoiser(), g.x_T, noise, cb);
  EXPECT_EQ(seen, sampler->timesteps());
  EXPECT_TRUE(torch::equal(x0, last_x0));  // abar = 1 after the last step
}

// ---------------------------------------------------------------------------------------------
// DDIM inversion and latent interpolation

TEST(Inversion, RoundTripErrorShrinksWithSteps) {
  auto g = load_golden();
  auto gen = at::detail::createCPUGenerator(5);
  auto x0 = g.model.mu + g.model.s * torch::randn(g.shape, gen, torch::kFloat64);
  std::vector<double> errors;
  for (int64_t steps : {10, 50, 200, 1000}) {
    auto o = options("ddim", steps);
    auto z = encode(g.model.denoiser(), g.model.sch, o, x0, quiet());
    errors.push_back(max_abs(decode(g.model.denoiser(), g.model.sch, o, z, quiet()), x0));
    // The latent of data drawn from the model's distribution is close to N(0, I) once the ODE is
    // followed closely; its std over 384 values has a standard error of about 0.036.
    if (steps >= 200) {
      EXPECT_LT(std::abs(z.std().item<double>() - 1), 0.15) << steps;
    }
  }
  std::cout << "inversion max |error| at 10/50/200/1000 steps: " << errors[0] << " " << errors[1]
            << " " << errors[2] << " " << errors[3] << "\n";
  // Euler both ways: the error is first order in 1/S (measured 0.49, 0.13, 0.035, 0.0071), so 4x
  // and 5x more steps must cut it by well over 2x.
  EXPECT_GT(errors[0], 2 * errors[1]);
  EXPECT_GT(errors[1], 2 * errors[2]);
  EXPECT_GT(errors[2], 2 * errors[3]);
  EXPECT_LT(errors[2], 0.05);
  EXPECT_LT(errors[3], 0.012);
}

TEST(Inversion, NeedsTheDeterministicDdim) {
  auto g = load_golden();
  auto o = options("dpm++2m", 10);
  EXPECT_NE(error_of([&] {
              encode(g.model.denoiser(), g.model.sch, o, g.x_T, quiet());
            }).find("--sampler"),
            std::string::npos);
  o = options("ddim", 10);
  o.eta = 0.5;
  EXPECT_NE(
      error_of([&] { decode(g.model.denoiser(), g.model.sch, o, g.x_T, quiet()); }).find("--eta"),
      std::string::npos);
}

TEST(Inversion, SlerpKeepsTheNormBetweenOrthogonalLatents) {
  auto a = torch::zeros({2, 1, 2, 2}, torch::kFloat64), b = torch::zeros_like(a);
  a.view({2, -1}).index_put_({torch::indexing::Slice(), 0}, 1.0);
  b.view({2, -1}).index_put_({torch::indexing::Slice(), 1}, 1.0);
  EXPECT_TRUE(torch::allclose(slerp(a, b, 0.0), a));
  EXPECT_TRUE(torch::allclose(slerp(a, b, 1.0), b));
  auto mid = slerp(a, b, 0.5).view({2, -1});
  EXPECT_NEAR(mid.norm(2, 1).min().item<double>(), 1.0, 1e-12);  // lerp would give 0.707
  EXPECT_NEAR(mid.index({0, 0}).item<double>(), std::sqrt(0.5), 1e-12);
  // Parallel latents fall back to lerp.
  EXPECT_TRUE(torch::allclose(slerp(a, 3 * a, 0.5), 2 * a));
  EXPECT_FALSE(error_of([&] { slerp(a, b.view({2, 4}), 0.5); }).empty());
}

TEST(Inversion, InterpolateMakesFramesFromTheTwoLatents) {
  auto za = torch::randn({3, 4, 4}), zb = torch::randn({3, 4, 4});
  auto frames = interpolate(za, zb, 5);
  ASSERT_EQ(frames.sizes(), (std::vector<int64_t>{5, 3, 4, 4}));
  EXPECT_TRUE(torch::allclose(frames[0], za, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(frames[4], zb, 1e-5, 1e-6));
  EXPECT_FALSE(error_of([&] { interpolate(za, zb, 0); }).empty());
  EXPECT_FALSE(error_of([&] { interpolate(torch::randn({2, 3, 4, 4}), zb, 3); }).empty());
}

// ---------------------------------------------------------------------------------------------
// Noise

TEST(Noise, CopiesReplayAndDtypesShareOneStream) {
  NoiseSource a(123);
  auto first = a.randn({1000}, torch::kFloat32);
  NoiseSource b = a;  // continues from here, independently
  auto from_a = a.randn({64}, torch::kFloat64);
  auto from_b = b.randn({64}, torch::kFloat32);
  EXPECT_TRUE(torch::equal(from_a.to(torch::kFloat32), from_b));
  EXPECT_FALSE(torch::equal(first.narrow(0, 0, 64), from_b));
  NoiseSource fresh(123);
  EXPECT_TRUE(torch::equal(fresh.randn({1000}, torch::kFloat32), first));
  // The state round-trips.
  auto state = fresh.state();
  auto next = fresh.randn({16}, torch::kFloat32);
  fresh.set_state(state);
  EXPECT_TRUE(torch::equal(fresh.randn({16}, torch::kFloat32), next));
  EXPECT_THROW(fresh.set_state(torch::zeros({3}, torch::kUInt8)), Error);
  EXPECT_THROW(fresh.randn({2}, torch::kLong), Error);
}

TEST(Noise, EachImageHasItsOwnStream) {
  // Image i's rows are the same whether it is drawn alone, in a batch, or after other images.
  NoiseSource all(77);
  auto a = all.randn({5, 3, 4}, torch::kFloat32);
  auto a2 = all.randn({5, 3, 4}, torch::kFloat32);  // each stream continues
  for (int64_t i = 0; i < 5; ++i) {
    NoiseSource one(77, i);
    EXPECT_TRUE(torch::equal(one.randn({1, 3, 4}, torch::kFloat32)[0], a[i])) << i;
    EXPECT_TRUE(torch::equal(one.randn({1, 3, 4}, torch::kFloat32)[0], a2[i])) << i;
  }
  // Neighbouring images and neighbouring seeds share no noise.
  EXPECT_FALSE(torch::equal(a[0], a[1]));
  NoiseSource next_seed(78);
  EXPECT_FALSE(
      torch::equal(next_seed.randn({4, 3, 4}, torch::kFloat32).narrow(0, 0, 4), a.narrow(0, 1, 4)));
  EXPECT_NE(image_seed(77, 1), image_seed(78, 0));
}

TEST(Samplers, TheBatchNeverChangesAnImage) {
  // Every sampler, the ancestral ones included: images 0-4 sampled at once, and as batches of 2,
  // 2 and 1 whose noise streams start at their first image.
  Analytic m{Schedule::linear(1000), torch::full({1, 2, 4, 4}, 0.1, torch::kFloat64), 0.4};
  for (const auto& k : sampler_kinds()) {
    auto o = options(k.name, 8);
    if (k.name == "ddim") o.eta = 1.0;  // DDIM's ancestral form
    auto sampler = make_sampler(o, m.sch);
    auto run = [&](int64_t first, int64_t n) {
      NoiseSource noise(5, first);
      auto x_T = noise.randn({n, 2, 4, 4}, torch::kFloat64);
      return sample(*sampler, m.denoiser(), x_T, noise, quiet());
    };
    auto whole = run(0, 5);
    auto parts = torch::cat({run(0, 2), run(2, 2), run(4, 1)});
    EXPECT_LT(max_abs(whole, parts), 1e-12) << k.name;
    EXPECT_GT(max_abs(whole[0], whole[1]), 1e-3) << k.name;
  }
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEST(Samplers, BadOptionsNameTheOption) {
  auto sch = Schedule::linear(1000);
  auto msg = [&](SamplerOptions o) { return error_of([&] { make_sampler(o, sch); }); };
  auto o = options("lms", 10);
  EXPECT_NE(msg(o).find("--sampler"), std::string::npos);
  EXPECT_NE(msg(o).find(sampler_names(", ")), std::string::npos) << msg(o);
  for (int64_t steps : {0, -3, 1001}) {
    o = options("ddim", steps);
    EXPECT_NE(msg(o).find("--steps"), std::string::npos) << steps;
  }
  for (double eta : {-0.1, 1.5, std::nan("")}) {
    o = options("ddim", 10);
    o.eta = eta;
    EXPECT_NE(msg(o).find("--eta"), std::string::npos) << eta;
  }
  o = options("ddpm", 10);
  o.eta = 0.5;
  EXPECT_NE(msg(o).find("--eta"), std::string::npos);
  o = options("ddim", 10, "log");
  EXPECT_NE(msg(o).find("--spacing"), std::string::npos);
  o = options("ddim", 10);
  o.variance = "learned";
  EXPECT_NE(msg(o).find("--variance"), std::string::npos);
  o = options("dpm++2m", 1000);  // linspace repeats a timestep at S = T
  EXPECT_NE(msg(o).find("--steps"), std::string::npos);
  // EDM's churn options belong to heun alone, and must make sense there.
  for (const auto& k : sampler_kinds()) {
    o = options(k.name, 10);
    o.churn.s_noise = 1.003;
    if (k.name == "heun") {
      EXPECT_NO_THROW(make_sampler(o, sch));
    } else {
      EXPECT_NE(msg(o).find("--s-noise"), std::string::npos) << k.name;
      EXPECT_NE(msg(o).find(k.name), std::string::npos) << k.name;
    }
  }
  const std::vector<std::pair<EdmChurn, std::string>> bad_churn = {
      {{-1.0, 0.0, 1e9, 1.0}, "--churn"},
      {{std::nan(""), 0.0, 1e9, 1.0}, "--churn"},
      {{10.0, 2.0, 1.0, 1.0}, "--s-tmin"},
      {{10.0, -1.0, 1.0, 1.0}, "--s-tmin"},
      {{10.0, 0.0, 1.0, 0.0}, "--s-noise"}};
  for (const auto& [churn, name] : bad_churn) {
    o = options("heun", 10);
    o.churn = churn;
    EXPECT_NE(msg(o).find(name), std::string::npos) << name << ": " << msg(o);
  }
}

TEST(Samplers, BadModelOutputsThrow) {
  Analytic m{Schedule::linear(100), torch::zeros({1, 2, 4, 4}, torch::kFloat64), 0.5};
  auto x = torch::randn({2, 2, 4, 4}, torch::kFloat64);
  auto returning = [](torch::Tensor out) {
    return [out](const torch::Tensor&, const torch::Tensor&) { return out; };
  };
  for (const auto& k : sampler_kinds()) {
    const auto& kind = k.name;
    auto sampler = make_sampler(options(kind, 5), m.sch);
    NoiseSource noise(0);
    for (const auto& bad : {torch::randn({2, 4, 4, 4}), torch::randn({2, 2, 4, 5}), torch::Tensor(),
                            torch::zeros({2, 2, 4, 4}, torch::kLong)})
      EXPECT_THROW(sample(*sampler, returning(bad), x, noise, quiet()), Error) << kind;
  }
  auto o = options("ddim", 5);
  o.variance = "learned-range";  // needs 2C channels
  NoiseSource noise(0);
  EXPECT_NE(error_of([&] {
              sample(*make_sampler(o, m.sch), m.denoiser(), x, noise, quiet());
            }).find("2C"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// The score view (score.h)

TEST(Score, ConversionsFollowTheirFormulas) {
  auto gen = at::detail::createCPUGenerator(11);
  auto eps = torch::randn({2, 3, 4, 4}, gen, torch::kFloat64);
  auto x_t = torch::randn({2, 3, 4, 4}, gen, torch::kFloat64);
  auto close = [](const torch::Tensor& a, const torch::Tensor& b) {
    return torch::allclose(a, b, 1e-12, 1e-12);
  };
  for (double abar : {0.9999, 0.5, 4e-5}) {
    const double sigma = sigma_of_alpha_bar(abar);
    EXPECT_NEAR(sigma * sigma * abar, 1 - abar, 1e-15) << abar;
    EXPECT_NEAR(alpha_bar_of_sigma(sigma), abar, 1e-15) << abar;
    auto x_s = to_variance_exploding(x_t, abar);
    EXPECT_TRUE(close(x_s * std::sqrt(abar), x_t)) << abar;
    EXPECT_TRUE(close(to_variance_preserving(x_s, abar), x_t)) << abar;
    auto score = score_from_eps(eps, abar);
    EXPECT_TRUE(close(score * -std::sqrt(1 - abar), eps)) << abar;
    EXPECT_TRUE(close(eps_from_score(score, abar), eps)) << abar;
    // D is the x_0 of x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps.
    auto D = denoised_from_eps(x_s, eps, sigma);
    EXPECT_TRUE(close(std::sqrt(abar) * D + std::sqrt(1 - abar) * eps, x_t)) << abar;
    EXPECT_TRUE(close(eps_from_denoised(x_s, D, sigma), eps)) << abar;
    // The VE score is -eps / sigma, and sqrt(abar) times the VP score (chain rule).
    auto ve = ve_score_from_denoised(x_s, D, sigma);
    EXPECT_TRUE(close(ve * -sigma, eps)) << abar;
    EXPECT_TRUE(close(ve, std::sqrt(abar) * score)) << abar;
  }
  EXPECT_DOUBLE_EQ(sigma_of_alpha_bar(1.0), 0.0);
  EXPECT_THROW(sigma_of_alpha_bar(0.0), Error);
  EXPECT_THROW(score_from_eps(eps, 1.0), Error);
}

TEST(Score, AnalyticModelGivesTheExactScoreAndDenoiser) {
  auto g = load_golden();
  const auto& m = g.model;
  const double s2 = m.s * m.s;
  for (int64_t t : {0, 300, 999}) {
    const double ab = m.sch.alphas_cumprod[t], sigma = sigma_of_alpha_bar(ab);
    auto x_t = torch::randn(g.shape, torch::kFloat64);
    // p_t = N(sqrt(abar) mu, abar s^2 + 1 - abar): its score in closed form.
    auto score = -(x_t - std::sqrt(ab) * m.mu) / (ab * s2 + 1 - ab);
    EXPECT_TRUE(torch::allclose(score_from_eps(m.eps(x_t, t), ab), score, 1e-10, 1e-12)) << t;
    // D(x_sigma) = E[x_0 | x_0 + sigma n = x_sigma] = (s^2 x_sigma + sigma^2 mu) / (s^2 + sigma^2).
    auto x_s = to_variance_exploding(x_t, ab);
    auto D = (s2 * x_s + sigma * sigma * m.mu) / (s2 + sigma * sigma);
    for (auto p : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::V}) {
      Denoiser edm(m.denoiser(p), m.sch, p, VarianceType::FixedSmall, false);
      EXPECT_TRUE(torch::allclose(edm_denoised(edm, x_s, t), D, 1e-10, 1e-10))
          << t << " " << to_string(p);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Improved DDPM's even spacing and Karras et al.'s sigmas

TEST(Timesteps, EvenIsImprovedDiffusionsRespacing) {
  // space_timesteps(T, "S"), one section: a float index advanced by (T-1)/(S-1) and rounded half
  // to even at each of the S points.
  for (auto [T, S] : std::vector<std::pair<int64_t, int64_t>>{
           {1000, 100}, {1000, 3}, {1000, 7}, {1000, 1000}, {4000, 250}, {50, 49}}) {
    std::vector<int64_t> want;
    double cur = 0;
    for (int64_t i = 0; i < S; ++i, cur += (T - 1.0) / (S - 1))
      want.insert(want.begin(), static_cast<int64_t>(std::nearbyint(cur)));
    EXPECT_EQ(even_timesteps(T, S), want) << T << " " << S;
  }
  EXPECT_EQ(even_timesteps(1000, 1), std::vector<int64_t>{999});
  // DDPM's default: 100 steps are Improved DDPM's, from T-1 down to 0.
  auto ts = make_sampler(options("ddpm", 100), Schedule::linear(1000))->timesteps();
  EXPECT_EQ(ts, even_timesteps(1000, 100));
  EXPECT_EQ(ts.front(), 999);
  EXPECT_EQ(ts.back(), 0);
}

TEST(Timesteps, KarrasSigmasAreEvenInSigmaToTheOneOverRho) {
  auto sig = karras_sigmas(0.01, 157.4, 10);
  ASSERT_EQ(sig.size(), 10u);
  EXPECT_NEAR(sig.front(), 157.4, 1e-12);
  EXPECT_NEAR(sig.back(), 0.01, 1e-15);
  const double d = std::pow(0.01, 1 / 7.0) - std::pow(157.4, 1 / 7.0);
  for (size_t i = 1; i < sig.size(); ++i)
    EXPECT_NEAR(std::pow(sig[i], 1 / 7.0) - std::pow(sig[i - 1], 1 / 7.0), d / 9, 1e-12) << i;
  auto lin = karras_sigmas(1.0, 4.0, 4, 1.0);  // rho = 1: evenly spaced
  EXPECT_NEAR(lin[1], 3.0, 1e-12);
  EXPECT_NEAR(lin[2], 2.0, 1e-12);
  ASSERT_EQ(karras_sigmas(0.01, 157.4, 1).size(), 1u);
  EXPECT_NEAR(karras_sigmas(0.01, 157.4, 1)[0], 157.4, 1e-12);
  EXPECT_THROW(karras_sigmas(2.0, 1.0, 5), Error);
}

TEST(Timesteps, TimestepOfSigmaInterpolatesLogSigma) {
  const auto& ab = Schedule::linear(1000).alphas_cumprod;
  auto sigma = [&](int64_t t) { return sigma_of_alpha_bar(ab[t]); };
  for (int64_t t : {0, 1, 500, 998, 999}) EXPECT_NEAR(timestep_of_sigma(ab, sigma(t)), t, 1e-9);
  for (int64_t t : {0, 17, 700})  // the geometric mean is half way in log sigma
    EXPECT_NEAR(timestep_of_sigma(ab, std::sqrt(sigma(t) * sigma(t + 1))), t + 0.5, 1e-9);
  EXPECT_EQ(timestep_of_sigma(ab, 1e-5), 0.0);
  EXPECT_EQ(timestep_of_sigma(ab, 1e5), 999.0);
  EXPECT_THROW(timestep_of_sigma(ab, 0.0), Error);
}

TEST(Timesteps, KarrasRoundsTheKarrasSigmasToTimesteps) {
  const auto lin = Schedule::linear(1000);
  const auto& ab = lin.alphas_cumprod;
  const double smin = sigma_of_alpha_bar(ab[0]), smax = sigma_of_alpha_bar(ab[999]);
  for (int64_t S : {2, 5, 10, 18, 50, 78}) {
    auto ts = karras_timesteps(ab, S);
    const auto sig = karras_sigmas(smin, smax, S);
    ASSERT_EQ(static_cast<int64_t>(ts.size()), S);
    for (int64_t i = 0; i < S; ++i)
      EXPECT_EQ(ts[i], std::llround(timestep_of_sigma(ab, sig[i]))) << S << " " << i;
    EXPECT_EQ(ts.front(), 999);
    EXPECT_EQ(ts.back(), 0);
  }
  // From a separate float64 transcription of diffusers' _sigma_to_t, rounded.
  EXPECT_EQ(karras_timesteps(ab, 10),
            (std::vector<int64_t>{999, 937, 864, 775, 663, 511, 301, 102, 18, 0}));
  // Where rounding would repeat (many levels on linear; near t = T-1 on cosine, whose last sigma is
  // 2e4) the levels are pushed apart: still S distinct timesteps from T-1 to 0.
  const auto cos = Schedule::cosine(1000);
  for (auto [abar, S] : std::vector<std::pair<const std::vector<double>*, int64_t>>{
           {&ab, 200}, {&ab, 1000}, {&cos.alphas_cumprod, 20}}) {
    auto ts = karras_timesteps(*abar, S);
    ASSERT_EQ(static_cast<int64_t>(ts.size()), S);
    EXPECT_NO_THROW(validate_timesteps(ts, 1000));
    EXPECT_EQ(ts.front(), 999);
    EXPECT_EQ(ts.back(), 0);
  }
  EXPECT_EQ(karras_timesteps(cos.alphas_cumprod, 20)[1], 998);
  // The sampler takes it by name; the T-only form cannot make it.
  EXPECT_EQ(make_sampler(options("ddim", 10, "karras"), lin)->timesteps(),
            karras_timesteps(ab, 10));
  EXPECT_NE(error_of([] { make_timesteps("karras", 1000, 10); }).find("karras"), std::string::npos);
  EXPECT_NE(error_of([] { make_timesteps("log", 1000, 10); }).find(spacing_names(", ")),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// EDM's Euler and Heun, Euler ancestral

TEST(Edm, EulerIsDdimOnTheSameTimesteps) {
  auto g = load_golden();
  for (const auto& ts :
       {leading_timesteps(1000, 10), karras_timesteps(g.model.sch.alphas_cumprod, 18)}) {
    Sampler euler(options("euler", 0), g.model.sch, ts);
    Sampler ddim(options("ddim", 0), g.model.sch, ts);
    NoiseSource n1(0), n2(0);
    auto a = sample(euler, g.model.denoiser(), g.x_T, n1, quiet());
    auto b = sample(ddim, g.model.denoiser(), g.x_T, n2, quiet());
    EXPECT_LT(max_abs(a, b), 1e-12);
  }
}

TEST(Edm, EulerAncestralIsTheDdpmPosteriorStep) {
  Analytic m{Schedule::linear(1000), torch::full({1, 2, 4, 4}, 0.3, torch::kFloat64), 0.4};
  const auto ts = karras_timesteps(m.sch.alphas_cumprod, 20);
  Sampler ea(options("euler-a", 0), m.sch, ts);
  Sampler ddpm(options("ddpm", 0), m.sch, ts);
  for (size_t i = 0; i < ts.size(); ++i) {
    // sigma_up is DDIM's eta = 1 sigma in the VE scaling; sigma_down^2 + sigma_up^2 = sigma'^2.
    const double abar = m.sch.alphas_cumprod[ts[i]];
    const double abar_next = i + 1 < ts.size() ? m.sch.alphas_cumprod[ts[i + 1]] : 1.0;
    const double s_next = sigma_of_alpha_bar(abar_next);
    const auto step = ancestral_step(sigma_of_alpha_bar(abar), s_next);
    EXPECT_NEAR(step.sigma_up * std::sqrt(abar_next), ddim_sigma(abar, abar_next, 1.0), 1e-12) << i;
    EXPECT_NEAR(step.sigma_up * step.sigma_up + step.sigma_down * step.sigma_down, s_next * s_next,
                1e-9 * s_next * s_next)
        << i;
  }
  NoiseSource n1(5), n2(5);
  auto x_T = torch::randn({3, 2, 4, 4}, torch::kFloat64);
  auto a = sample(ea, m.denoiser(), x_T, n1, quiet());
  auto b = sample(ddpm, m.denoiser(), x_T, n2, quiet());
  EXPECT_LT(max_abs(a, b), 1e-12);
}

TEST(Edm, HeunEvaluatesTwicePerLevelButTheLast) {
  Analytic m{Schedule::linear(1000), torch::full({1, 2, 4, 4}, -0.2, torch::kFloat64), 0.5};
  const auto& ab = m.sch.alphas_cumprod;
  const auto levels = karras_timesteps(ab, 6);
  Sampler heun(options("heun", 0), m.sch, levels);
  EXPECT_EQ(heun.timesteps(), levels);
  std::vector<int64_t> want{levels[0]}, seen;
  for (size_t k = 1; k < levels.size(); ++k) want.insert(want.end(), {levels[k], levels[k]});
  auto counting = model_of([&](const torch::Tensor& x, int64_t t) {
    seen.push_back(t);
    return m.eps(x, t);
  });
  std::vector<torch::Tensor> xs;
  auto cb = quiet();
  cb.on_step = [&](size_t, int64_t, const torch::Tensor& x_t, const torch::Tensor&) {
    xs.push_back(x_t.clone());
  };
  NoiseSource noise(0);
  auto x = torch::randn({2, 2, 4, 4}, torch::kFloat64);
  sample(heun, counting, x, noise, cb);
  EXPECT_EQ(seen.size(), 2u * 6 - 1);
  EXPECT_EQ(seen, want);  // t_0, then t_1, t_1 (corrector, next predictor), ...
  // The first level by hand (EDM Algorithm 1, lines 3-7), in x_sigma = x_t / sqrt(abar).
  const double a0 = ab[levels[0]], a1 = ab[levels[1]];
  const double h = sigma_of_alpha_bar(a1) - sigma_of_alpha_bar(a0);
  const auto d0 = m.eps(x, levels[0]);
  const auto x_euler = std::sqrt(a1) * (x / std::sqrt(a0) + h * d0);
  const auto d1 = m.eps(x_euler, levels[1]);
  const auto x1 = std::sqrt(a1) * (x / std::sqrt(a0) + h * 0.5 * (d0 + d1));
  ASSERT_EQ(xs.size(), levels.size());
  EXPECT_LT(max_abs(xs[1], x1), 1e-12);
  EXPECT_GT(max_abs(xs[1], x_euler), 1e-6);  // the correction is not a no-op
}

TEST(Edm, HeunAndEulerConvergeToTheExactOdeSolution) {
  // For N(mu, s^2) data the probability-flow ODE in x_sigma = x_t / sqrt(abar) reads
  // dx/dsigma = eps = sigma (x - mu) / (s^2 + sigma^2) (score.h with the analytic eps), so
  // (x - mu) / sqrt(s^2 + sigma^2) is constant along a path: from x_T at sigma_max = sigma_{T-1},
  //   x_0 = mu + s (x_T / sqrt(abar_{T-1}) - mu) / sqrt(s^2 + sigma_max^2).
  auto g = load_golden();
  const auto& m = g.model;
  const auto exact = exact_ode_x0(g);
  const std::vector<int64_t> Ns{8, 16, 32, 64};
  std::map<std::string, std::vector<double>> err;
  for (const std::string kind : {"euler", "heun"}) {
    for (int64_t N : Ns) {
      auto sampler = make_sampler(options(kind, N), m.sch);  // Karras levels by default
      NoiseSource noise(0);
      err[kind].push_back(max_abs(sample(*sampler, m.denoiser(), g.x_T, noise, quiet()), exact));
    }
    std::cout << kind << " max |x_0 - exact| at 8/16/32/64 levels:";
    for (double e : err[kind]) std::cout << " " << e;
    std::cout << "  order (log2 of the 8 -> 64 ratio / 3): "
              << std::log2(err[kind].front() / err[kind].back()) / 3 << "\n";
  }
  // Measured: euler 0.37, 0.19, 0.096, 0.049 (order 0.97); heun 0.50, 0.091, 0.019, 0.0041 (order
  // 2.3: rounding the levels to timesteps perturbs the grid a little). First order halves the
  // error with each doubling, second order quarters it.
  for (size_t k = 0; k + 1 < Ns.size(); ++k) {
    const double r_euler = err["euler"][k] / err["euler"][k + 1];
    const double r_heun = err["heun"][k] / err["heun"][k + 1];
    EXPECT_GT(r_euler, 1.7) << Ns[k];
    EXPECT_LT(r_euler, 2.3) << Ns[k];
    EXPECT_GT(r_heun, 3.5) << Ns[k];
  }
  const double order_heun = std::log2(err["heun"].front() / err["heun"].back()) / 3;
  EXPECT_GT(order_heun, 1.8);
  EXPECT_LT(order_heun, 2.7);
  EXPECT_LT(err["heun"].back(), 0.01);
  EXPECT_LT(err["euler"].back(), 0.06);
  // At equal evaluations (63 vs 64) Heun is the more accurate.
  EXPECT_LT(err["heun"][2], err["euler"][3]);
}

TEST(Ipndm, ConvergesToTheExactOdeSolutionFasterThanHeun) {
  // The closed-form PF-ODE solution of HeunAndEulerConvergeToTheExactOdeSolution, against iPNDM at
  // 8..64 levels (one evaluation each) and Heun at equal evaluations.
  auto g = load_golden();
  const auto& m = g.model;
  const auto exact = exact_ode_x0(g);
  const std::vector<int64_t> Ns{8, 16, 32, 64};
  std::vector<double> err, err_heun;
  int64_t calls = 0;
  auto counting = model_of([&](const torch::Tensor& x, int64_t t) {
    ++calls;
    return m.eps(x, t);
  });
  for (int64_t N : Ns) {
    auto sampler = make_sampler(options("ipndm", N), m.sch);
    EXPECT_EQ(sampler->timesteps(), karras_timesteps(m.sch.alphas_cumprod, N));
    NoiseSource noise(0);
    calls = 0;
    err.push_back(max_abs(sample(*sampler, counting, g.x_T, noise, quiet()), exact));
    EXPECT_EQ(calls, N);
    auto heun = make_sampler(options("heun", (N + 1) / 2), m.sch);
    err_heun.push_back(max_abs(sample(*heun, m.denoiser(), g.x_T, noise, quiet()), exact));
  }
  std::cout << "ipndm max |x_0 - exact| at 8/16/32/64 levels:";
  for (double e : err) std::cout << " " << e;
  std::cout << "  order: " << std::log2(err.front() / err.back()) / 3 << "\n";
  std::cout << "heun at the same evaluations:";
  for (double e : err_heun) std::cout << " " << e;
  std::cout << "\n";
  // Measured: ipndm 0.054, 0.033, 0.0069, 0.0010 (ratios 1.7, 4.7, 6.9: order 2.8 from 32 to 64
  // levels); heun at the same evaluations 2.0, 0.50, 0.091, 0.019. The fixed coefficients are
  // exact for equal steps only, so on the Karras grid (rounded to timesteps) the local error keeps
  // a term in h times the change of h: the asymptotic order is 2, not 4, and a pre-asymptotic
  // 2.8 is what 8..64 levels show.
  EXPECT_GT(err[1] / err[2], 3.5);
  EXPECT_GT(err[2] / err[3], 5.0);
  EXPECT_GT(err[2] / err[3], err_heun[2] / err_heun[3]);
  EXPECT_LT(err.back(), 2e-3);
  for (size_t k = 0; k < Ns.size(); ++k) EXPECT_LT(err[k], 0.5 * err_heun[k]) << Ns[k];
}

namespace {

// Today's Heun (EDM Algorithm 1) written out, the reference for churn 0.
torch::Tensor algorithm1(const Analytic& m, const std::vector<int64_t>& ts, torch::Tensor x) {
  for (size_t i = 0; i < ts.size(); ++i) {
    const double abar = m.sch.alphas_cumprod[ts[i]];
    const double abar_next = i + 1 < ts.size() ? m.sch.alphas_cumprod[ts[i + 1]] : 1.0;
    const double t_cur = sigma_of_alpha_bar(abar), t_next = sigma_of_alpha_bar(abar_next);
    const auto x_cur = x * (1.0 / std::sqrt(abar));
    const auto d_cur = m.eps(x, ts[i]);
    auto x_next = x_cur + (t_next - t_cur) * d_cur;
    if (i + 1 < ts.size()) {
      const auto d_prime = m.eps(x_next * std::sqrt(abar_next), ts[i + 1]);
      x_next = x_cur + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime);
    }
    x = x_next * std::sqrt(abar_next);
  }
  return x;
}

// The churned Heun chain on the analytic model, elementwise linear-Gaussian as Euler ancestral's
// below: in y = x_sigma - mu, level i adds N(0, c^2) (c = sqrt(sh^2 - s_i^2) s_noise), then y' =
// f y with f from the Euler and trapezoid steps of dy/dsigma = sigma y / (s^2 + sigma^2). sh: the
// churned sigma of each level (the one the network saw first), s: the levels, then 0.
std::pair<double, double> churned_heun_law(const std::vector<double>& sh,
                                           const std::vector<double>& sg, double s,
                                           double s_noise) {
  const auto slope = [s](double sigma) { return sigma / (s * s + sigma * sigma); };
  double A = 1.0, V = 0.0;
  for (size_t i = 0; i + 1 < sg.size(); ++i) {
    const double h = sg[i + 1] - sh[i], c2 = (sh[i] * sh[i] - sg[i] * sg[i]) * s_noise * s_noise;
    const double a1 = 1 + h * slope(sh[i]);
    const double f = i + 2 < sg.size() ? 1 + 0.5 * h * (slope(sh[i]) + a1 * slope(sg[i + 1])) : a1;
    A *= f;
    V = f * f * (V + c2);
  }
  return {1 - A, A * A * (1 + sg[0] * sg[0]) + V};
}

}  // namespace

TEST(HeunChurn, ZeroChurnIsAlgorithmOneBitForBitAndDrawsNoNoise) {
  auto g = load_golden();
  for (int64_t N : {5, 18}) {
    auto o = options("heun", N);
    auto sampler = make_sampler(o, g.model.sch);
    NoiseSource noise(3), untouched(3);
    auto x = sample(*sampler, g.model.denoiser(), g.x_T, noise, quiet());
    EXPECT_TRUE(torch::equal(x, algorithm1(g.model, sampler->timesteps(), g.x_T))) << N;
    EXPECT_TRUE(torch::equal(noise.randn({2, 3}, torch::kFloat32),
                             untouched.randn({2, 3}, torch::kFloat32)));
    // Churn confined to sigmas above every level is no churn either.
    o.churn.churn = 40;
    o.churn.s_tmin = o.churn.s_tmax = 1e6;
    NoiseSource n2(3);
    auto y = sample(*make_sampler(o, g.model.sch), g.model.denoiser(), g.x_T, n2, quiet());
    EXPECT_TRUE(torch::equal(x, y)) << N;
  }
}

TEST(HeunChurn, SamplesFollowTheChurnedChainsExactLaw) {
  auto gen = at::detail::createCPUGenerator(8);
  const double s = 0.3;
  Analytic m{Schedule::linear(1000), 0.5 * torch::randn({1, 4, 16, 16}, gen, torch::kFloat64), s};
  auto o = options("heun", 24);
  o.churn = {10.0, 0.05, 50.0, 1.003};  // EDM's ImageNet-64 s_tmin, s_tmax, s_noise
  auto sampler = make_sampler(o, m.sch);
  const auto& ts = sampler->timesteps();
  std::vector<int64_t> first_calls;
  size_t calls = 0;
  auto recording = model_of([&](const torch::Tensor& x, int64_t t) {
    if (calls++ % 2 == 0) first_calls.push_back(t);  // level i's first call is at its sigma_hat
    return m.eps(x, t);
  });
  NoiseSource noise(21);
  auto x_T = noise.randn({32, 4, 16, 16}, torch::kFloat64);
  auto x0 = sample(*sampler, recording, x_T, noise, quiet());
  ASSERT_EQ(first_calls.size(), ts.size());
  std::vector<double> sg, sh;
  const double gamma = 10.0 / 24;
  size_t churned = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    sg.push_back(sigma_of_alpha_bar(m.sch.alphas_cumprod[ts[i]]));
    sh.push_back(sigma_of_alpha_bar(m.sch.alphas_cumprod[first_calls[i]]));
    const bool in_range = sg[i] >= 0.05 && sg[i] <= 50.0;
    EXPECT_GE(first_calls[i], ts[i]) << i;
    if (!in_range) EXPECT_EQ(first_calls[i], ts[i]) << i;
    // Rounded to a timestep, sigma_hat is (1 + gamma) sigma_i to a few percent (or capped at T-1).
    if (in_range && first_calls[i] < 999)
      EXPECT_NEAR(sh[i] / sg[i], 1 + gamma, 0.05 * (1 + gamma)) << i;
    churned += first_calls[i] != ts[i];
  }
  sg.push_back(0.0);
  EXPECT_GE(churned, ts.size() / 2);
  const double N = 32 * 4 * 16 * 16;
  const double tol_mean = 4 / std::sqrt(N), tol_var = 4 * std::sqrt(2 / (N - 1));
  const auto [c, v] = churned_heun_law(sh, sg, s, 1.003);
  auto z = (x0 - c * m.mu) / std::sqrt(v);
  EXPECT_LT(std::abs(z.mean().item<double>()), tol_mean);
  EXPECT_LT(std::abs(z.var().item<double>() - 1), tol_var);
  // Measured: v / s^2 = 1.21 at these 24 levels (1.08 without churn). Without the churn noise
  // (the levels churned all the same) the law would be another, which the variance test above
  // tells apart.
  std::cout << "churned heun: law c = " << c << ", v / s^2 = " << v / (s * s) << "\n";
  EXPECT_LT(std::abs(c - 1), 1e-3);
  const auto [c_quiet, v_quiet] = churned_heun_law(sh, sg, s, 0.0);
  EXPECT_GT(std::abs(v - v_quiet) / v, 3 * tol_var) << v_quiet / (s * s);
}

namespace {

// The Euler-ancestral chain on the analytic model is linear-Gaussian elementwise: x_0 = c mu +
// N(0, v) from x_T ~ N(0, 1). In y = x_sigma - mu each step is y' = f y + sigma_up z with
// f = 1 + (sigma_down - sigma) sigma / (s^2 + sigma^2) (k-diffusion's get_ancestral_step, eta 1).
std::pair<double, double> euler_ancestral_law(const Schedule& sch, const std::vector<int64_t>& ts,
                                              double s) {
  std::vector<double> sig;
  for (int64_t t : ts)
    sig.push_back(std::sqrt((1 - sch.alphas_cumprod[t]) / sch.alphas_cumprod[t]));
  sig.push_back(0.0);
  double A = 1.0, V = 0.0;
  for (size_t i = 0; i + 1 < sig.size(); ++i) {
    const double a = sig[i], b = sig[i + 1];
    const double up = std::min(b, std::sqrt(b * b * (a * a - b * b) / (a * a)));
    const double down = std::sqrt(b * b - up * up);
    const double f = 1 + (down - a) * a / (s * s + a * a);
    A *= f;
    V = f * f * V + up * up;
  }
  // y_0 = x_T / sqrt(abar_T) - mu: mean -mu, variance 1 + sigma_max^2.
  return {1 - A, A * A * (1 + sig[0] * sig[0]) + V};
}

}  // namespace

TEST(EulerAncestral, SamplesFollowTheChainsExactLaw) {
  auto gen = at::detail::createCPUGenerator(4);
  const double s = 0.3;
  Analytic m{Schedule::linear(1000), 0.5 * torch::randn({1, 4, 16, 16}, gen, torch::kFloat64), s};
  const double N = 32 * 4 * 16 * 16;
  // Four standard errors of the mean and variance of N standard normals: 0.022 and 0.031.
  const double tol_mean = 4 / std::sqrt(N), tol_var = 4 * std::sqrt(2 / (N - 1));
  auto sampler = make_sampler(options("euler-a", 30), m.sch);
  NoiseSource noise(21);
  auto x_T = noise.randn({32, 4, 16, 16}, torch::kFloat64);
  auto x0 = sample(*sampler, m.denoiser(), x_T, noise, quiet());
  const auto [c, v] = euler_ancestral_law(m.sch, sampler->timesteps(), s);
  auto z = (x0 - c * m.mu) / std::sqrt(v);
  EXPECT_LT(std::abs(z.mean().item<double>()), tol_mean);
  EXPECT_LT(std::abs(z.var().item<double>() - 1), tol_var);
  // The chain's law tends to the data's, N(mu, s^2), as the levels grow: its variance is 35% low
  // at 30 levels, 23% at 50, 6.5% at 200 and 2.5% at all 1000 timesteps (DDPM's own bias).
  double last = 1;
  for (int64_t S : {30, 50, 200, 1000}) {
    const auto [cs, vs] = euler_ancestral_law(m.sch, karras_timesteps(m.sch.alphas_cumprod, S), s);
    EXPECT_LT(std::abs(cs - 1), 1e-4) << S;
    const double bias = std::abs(vs / (s * s) - 1);
    EXPECT_LT(bias, last) << S;
    last = bias;
  }
  EXPECT_LT(last, 0.03);
  // Same seed, same samples.
  NoiseSource again(21);
  auto x_T2 = again.randn({32, 4, 16, 16}, torch::kFloat64);
  EXPECT_TRUE(torch::equal(sample(*sampler, m.denoiser(), x_T2, again, quiet()), x0));
}

// ---------------------------------------------------------------------------------------------
// Improved DDPM's respaced process

TEST(Ddpm, RespacedScheduleFollowsImprovedDiffusion) {
  const auto sch = Schedule::linear(1000);
  for (const auto& ts :
       {even_timesteps(1000, 100), trailing_timesteps(1000, 7), leading_timesteps(1000, 50)}) {
    const auto process =
        respaced_process(sch, ts, PredictionType::Epsilon, VarianceType::FixedSmall);
    const auto& r = process.schedule();
    std::vector<int64_t> kept(ts.rbegin(), ts.rend());
    ASSERT_EQ(r.num_timesteps(), static_cast<int64_t>(kept.size()));
    std::vector<double> post(kept.size());
    for (size_t j = 0; j < kept.size(); ++j) {
      // beta'_j = 1 - abar_{S_j} / abar_{S_j-1} (abar 1 before the first kept step) and the
      // posterior of Ho et al. eq. 7 on those betas.
      const double a = sch.alphas_cumprod[kept[j]], ap = j ? sch.alphas_cumprod[kept[j - 1]] : 1.0;
      const double beta = 1 - a / ap;
      post[j] = beta * (1 - ap) / (1 - a);
      const auto rel = [](double x) { return 1e-12 * std::abs(x) + 1e-300; };
      EXPECT_NEAR(r.betas[j], beta, rel(beta)) << j;
      EXPECT_NEAR(r.alphas_cumprod[j], a, rel(a)) << j;
      EXPECT_NEAR(r.posterior_variance[j], post[j], rel(post[j]) + 1e-18) << j;
      EXPECT_NEAR(r.posterior_mean_coef1[j], beta * std::sqrt(ap) / (1 - a), 1e-12) << j;
      EXPECT_NEAR(r.posterior_mean_coef2[j], (1 - ap) * std::sqrt(1 - beta) / (1 - a), 1e-12) << j;
    }
    for (size_t j = 1; j < kept.size(); ++j)
      EXPECT_NEAR(r.posterior_log_variance_clipped[j], std::log(post[j]), 1e-10) << j;
    EXPECT_NEAR(r.posterior_log_variance_clipped[0], std::log(post[1]), 1e-10);
  }
}

TEST(Ddpm, AllTimestepsIsTheOriginalProcess) {
  Analytic m{Schedule::linear(1000), torch::full({1, 2, 4, 4}, 0.1, torch::kFloat64), 0.6};
  const auto& sch = m.sch;
  auto ddpm = make_sampler(options("ddpm", 1000), sch);
  const auto all =
      respaced_process(sch, ddpm->timesteps(), PredictionType::Epsilon, VarianceType::FixedSmall);
  const auto& r = all.schedule();
  for (int64_t t = 0; t < 1000; ++t) {
    EXPECT_NEAR(r.betas[t], sch.betas[t], 1e-12 * sch.betas[t]) << t;
    EXPECT_NEAR(r.posterior_variance[t], sch.posterior_variance[t], 1e-12 * sch.betas[t]) << t;
    EXPECT_NEAR(r.posterior_mean_coef1[t], sch.posterior_mean_coef1[t], 1e-12) << t;
    EXPECT_NEAR(r.posterior_mean_coef2[t], sch.posterior_mean_coef2[t], 1e-12) << t;
  }
  // The step's p(x_{t-1} | x_t) is the unrespaced process's for every variance type.
  auto x = torch::randn({2, 2, 4, 4}, torch::kFloat64);
  auto v = torch::rand({2, 2, 4, 4}, torch::kFloat64) * 2 - 1;
  for (const std::string variance : {"fixed-small", "fixed-large", "learned-range"}) {
    const auto V = parse_variance_type(variance);
    const auto respaced = respaced_process(sch, ddpm->timesteps(), PredictionType::Epsilon, V);
    GaussianDiffusion process(sch, PredictionType::Epsilon, V);
    for (int64_t t : {999, 500, 1}) {
      auto out = variance == "learned-range" ? torch::cat({m.eps(x, t), v}, 1) : m.eps(x, t);
      const auto tt = torch::full({2}, t, torch::kLong);
      auto got = respaced.p_mean_variance(out, x, tt);
      auto want = process.p_mean_variance(out, x, tt);
      EXPECT_LT(max_abs(got.mean, want.mean), 1e-12) << variance << " " << t;
      EXPECT_LT(max_abs(got.log_variance, want.log_variance), 1e-10) << variance << " " << t;
    }
  }
}

TEST(Ddpm, HundredRespacedStepsWithTheExactLearnedVarianceReproduceTheData) {
  // For Gaussian data the reverse step from kept step t to the one before, t', is exactly
  //   q(x_t' | x_t) = N(coef1' E[x_0 | x_t] + coef2' x_t, beta~' + coef1'^2 Var[x_0 | x_t]),
  //   Var[x_0 | x_t] = s^2 (1 - abar_t) / (abar_t s^2 + 1 - abar_t),
  // on the respaced betas. That variance lies between beta~' (s = 0) and beta' (s = 1, where
  // x_t ~ N(0, I) for all t), so a learned-range model outputs it exactly with
  // v = 2 (log var - log beta~') / (log beta' - log beta~') - 1. Each step then carries the true
  // marginal at t to the one at t', and x_0 ~ N(mu, s^2) up to x_T (abar_T = 4e-5 of signal) and
  // the last step's Var[x_0 | x_{t=0}] (0.1% of s^2), both far below the tolerance.
  auto gen = at::detail::createCPUGenerator(8);
  const double s = 0.3;
  Analytic m{Schedule::linear(1000), 0.5 * torch::randn({1, 4, 16, 16}, gen, torch::kFloat64), s};
  auto o = options("ddpm", 100);
  o.variance = "learned-range";
  auto sampler = make_sampler(o, m.sch);
  const auto& ts = sampler->timesteps();
  const auto process =
      respaced_process(m.sch, ts, PredictionType::Epsilon, VarianceType::LearnedRange);
  const auto& r = process.schedule();
  double v_min = 1, v_max = -1;
  auto oracle = model_of([&](const torch::Tensor& x, int64_t t) {
    const auto j = static_cast<size_t>(std::find(ts.rbegin(), ts.rend(), t) - ts.rbegin());
    const double a = m.sch.alphas_cumprod[t];
    double v = 0;  // unused at the last step (no noise)
    if (j > 0) {
      const double var = r.posterior_variance[j] + r.posterior_mean_coef1[j] *
                                                       r.posterior_mean_coef1[j] * s * s * (1 - a) /
                                                       (a * s * s + 1 - a);
      const double lo = r.posterior_log_variance_clipped[j], hi = std::log(r.betas[j]);
      v = 2 * (std::log(var) - lo) / (hi - lo) - 1;
      v_min = std::min(v_min, v);
      v_max = std::max(v_max, v);
    }
    return torch::cat({m.eps(x, t), torch::full_like(x, v)}, 1);
  });
  const double N = 32 * 4 * 16 * 16;
  const double tol_mean = 4 / std::sqrt(N), tol_var = 4 * std::sqrt(2 / (N - 1));  // 0.022, 0.031
  NoiseSource noise(9);
  auto x_T = noise.randn({32, 4, 16, 16}, torch::kFloat64);
  auto x0 = sample(*sampler, oracle, x_T, noise, quiet());
  EXPECT_GE(v_min, -1.0);
  EXPECT_LE(v_max, 1.0);
  auto z = (x0 - m.mu) / s;
  EXPECT_LT(std::abs(z.mean().item<double>()), tol_mean);
  EXPECT_LT(std::abs(z.var().item<double>() - 1), tol_var);
  // The fixed variances on the same 100 steps miss the data's variance by far more (the chain's
  // exact law: -18% for beta~', +7.5% for beta'), so the check above has teeth.
  EXPECT_GT(1 - ddpm_law(m.sch, ts, s, false).second / (s * s), 3 * tol_var);
  EXPECT_GT(ddpm_law(m.sch, ts, s, true).second / (s * s) - 1, 2 * tol_var);
}

// ---------------------------------------------------------------------------------------------
// Image-guided generation: SDEdit and RePaint

TEST(Sdedit, StrengthZeroIsTheImageAndStartsBelowStrengthTimesT) {
  Analytic m{Schedule::linear(1000), torch::full({1, 2, 4, 4}, 0.2, torch::kFloat64), 0.4};
  auto sampler = make_sampler(options("ddim", 20), m.sch);
  auto image = torch::rand({3, 2, 4, 4}, torch::kFloat64) * 2 - 1;
  std::vector<int64_t> seen;
  auto recording = model_of([&](const torch::Tensor& x, int64_t t) {
    seen.push_back(t);
    return m.eps(x, t);
  });
  NoiseSource noise(1);
  EXPECT_TRUE(torch::equal(sdedit(*sampler, recording, image, 0.0, noise, quiet()), image));
  EXPECT_TRUE(seen.empty());
  // Strength 0.5 runs the DDIM timesteps below 500 (leading: 0, 50, ..., 950 -> 450 .. 0).
  auto half = sdedit(*sampler, recording, image, 0.5, noise, quiet());
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(seen.front(), 450);
  EXPECT_EQ(seen.back(), 0);
  EXPECT_GT(max_abs(half, image), 1e-3);
  EXPECT_EQ(sdedit_timesteps(sampler->timesteps(), 1000, 1.0), sampler->timesteps());
  // Small strengths change the image little, large ones a lot.
  NoiseSource n1(2), n2(2);
  const double small = max_abs(sdedit(*sampler, m.denoiser(), image, 0.05, n1, quiet()), image);
  const double large = max_abs(sdedit(*sampler, m.denoiser(), image, 1.0, n2, quiet()), image);
  EXPECT_LT(small, 0.5 * large);
  for (double s : {-0.1, 1.5, std::nan("")})
    EXPECT_NE(error_of([&] {
                sdedit(*sampler, m.denoiser(), image, s, noise, quiet());
              }).find("--strength"),
              std::string::npos)
        << s;
}

TEST(RePaint, LevelsFollowTheJumpSchedule) {
  // diffusers' RePaintScheduler.set_timesteps(6, jump_length=2, jump_n_sample=2) gives
  // [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0] in its convention (denoise x_t at t when t falls,
  // else undo one step up); here level k is the state after the step, x_T being level 6.
  EXPECT_EQ(repaint_levels(6, {2, 2}),
            (std::vector<int64_t>{6, 5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0}));
  EXPECT_EQ(repaint_levels(3, {10, 1}), (std::vector<int64_t>{3, 2, 1, 0}));
  EXPECT_NE(error_of([] { repaint_levels(5, {0, 2}); }).find("--jump-length"), std::string::npos);
  EXPECT_NE(error_of([] { repaint_levels(5, {2, 0}); }).find("--jump-n-sample"), std::string::npos);
}

namespace {

// The law of one generated pixel under RePaint on the elementwise analytic model (pixels are
// independent, so the known region does not enter): mean c mu and variance v, propagated through
// the DDPM posterior steps x' = sqrt(a') x0 + sqrt(1 - a' - sd^2) eps + sd z and the jumps
// x' = sqrt(a' / a) x + sqrt(1 - a' / a) z.
std::pair<double, double> repaint_law(const Schedule& sch, const std::vector<int64_t>& ts,
                                      const std::vector<int64_t>& levels, double s) {
  const auto S = static_cast<int64_t>(ts.size());
  const auto abar = [&](int64_t k) { return k == 0 ? 1.0 : sch.alphas_cumprod[ts[S - k]]; };
  double c = 0.0, v = 1.0;
  for (size_t i = 1; i < levels.size(); ++i) {
    const double a = abar(levels[i - 1]), an = abar(levels[i]);
    if (levels[i] > levels[i - 1]) {
      c *= std::sqrt(an / a);
      v = an / a * v + (1 - an / a);
      continue;
    }
    // eps = k (x - sqrt(a) mu); x0 = (x - sqrt(1 - a) eps) / sqrt(a): x' = alpha x + beta mu + sd
    // z.
    const double k = std::sqrt(1 - a) / (a * s * s + 1 - a);
    const double sd = std::sqrt((1 - an) / (1 - a) * (1 - a / an));
    const double dir = std::sqrt(std::max(0.0, 1 - an - sd * sd));
    const double x0_x = (1 - std::sqrt(1 - a) * k) / std::sqrt(a), x0_mu = std::sqrt(1 - a) * k;
    const double alpha = std::sqrt(an) * x0_x + dir * k;
    const double beta = std::sqrt(an) * x0_mu - dir * k * std::sqrt(a);
    c = alpha * c + beta;
    v = alpha * alpha * v + sd * sd;
  }
  return {c, v};
}

}  // namespace

TEST(RePaint, KnownRegionIsTheImageAndTheRestFollowsTheChainsLaw) {
  auto gen = at::detail::createCPUGenerator(5);
  const double s = 0.3;
  Analytic m{Schedule::linear(1000), 0.5 * torch::randn({1, 2, 16, 16}, gen, torch::kFloat64), s};
  Denoiser d(m.denoiser(), m.sch, PredictionType::Epsilon, VarianceType::FixedSmall, false);
  const auto ts = even_timesteps(1000, 50);
  auto image = torch::rand({32, 2, 16, 16}, gen, torch::kFloat64) * 2 - 1;
  auto mask = torch::zeros({1, 1, 16, 16}, torch::kFloat64);
  mask.narrow(3, 0, 8).fill_(1.0);  // the left half is known
  const RePaintOptions opts{5, 3};
  NoiseSource noise(9);
  auto x_T = noise.randn({32, 2, 16, 16}, torch::kFloat64);
  auto out = repaint(d, ts, x_T, image, mask, opts, noise);
  EXPECT_TRUE(torch::equal(out.narrow(3, 0, 8), image.narrow(3, 0, 8)));
  const auto [c, v] = repaint_law(m.sch, ts, repaint_levels(50, opts), s);
  auto gen_part = out.narrow(3, 8, 8), mu = m.mu.narrow(3, 8, 8);
  auto z = (gen_part - c * mu) / std::sqrt(v);
  const double N = 32 * 2 * 16 * 8;
  EXPECT_LT(std::abs(z.mean().item<double>()), 4 / std::sqrt(N));
  EXPECT_LT(std::abs(z.var().item<double>() - 1), 4 * std::sqrt(2 / (N - 1)));
  // The chain's law tends to the data's N(mu, s^2) with the steps (RePaint's own setting is 250
  // steps with jumps of 10, 10 times).
  EXPECT_LT(std::abs(c - 1), 1e-3);
  const auto [c250, v250] =
      repaint_law(m.sch, even_timesteps(1000, 250), repaint_levels(250, {10, 10}), s);
  std::cout << "repaint law v / s^2: " << v / (s * s) << " at 50 steps (jumps 5 x 3), "
            << v250 / (s * s) << " at 250 (10 x 10)\n";
  EXPECT_LT(std::abs(c250 - 1), 1e-3);
  EXPECT_LT(std::abs(v250 / (s * s) - 1), 0.5 * std::abs(v / (s * s) - 1));
  // Masks of the wrong shape are refused, naming --mask.
  for (const auto& bad :
       {torch::ones({1, 1, 16, 8}, torch::kFloat64), torch::ones({1, 3, 16, 16}, torch::kFloat64),
        torch::ones({16, 16}, torch::kFloat64)})
    EXPECT_NE(error_of([&] { repaint(d, ts, x_T, image, bad, opts, noise); }).find("--mask"),
              std::string::npos)
        << bad.sizes();
}
