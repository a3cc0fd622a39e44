// Samplers checked with the exact noise predictor of Gaussian data (golden README): against
// trajectories computed by diffusers (tests/data/samplers.json), against the exact law of the
// ancestral chain, and against each other where the papers say they coincide.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "diffuse/core/error.h"
#include "diffuse/samplers/ddim.h"
#include "diffuse/samplers/ddpm.h"
#include "diffuse/samplers/dpm_solver_pp.h"
#include "diffuse/samplers/inversion.h"
#include "diffuse/samplers/sample_loop.h"
#include "diffuse/samplers/sampler.h"
#include "diffuse/samplers/timesteps.h"
#include "support.h"

using namespace diffuse;
using namespace diffuse::testing;

namespace {

double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
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
  Denoiser denoiser(PredictionType p = PredictionType::Epsilon) const {
    return [this, p](const torch::Tensor& x, int64_t t) { return output(p, x, t); };
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

Golden load_golden() {
  Golden g{load_json("samplers.json"), {}, {Schedule::linear(1000), {}, 0.0}, {}};
  g.shape = g.json["shape"].get<std::vector<int64_t>>();
  g.model.mu = from_json(g.json["mu"], g.shape);
  g.model.s = g.json["s"].get<double>();
  g.x_T = from_json(g.json["x_T"], g.shape);
  return g;
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
  DdimSampler ddim(m.sch, trailing_timesteps(1000, 3), 0.0, PredictionType::Epsilon,
                   VarianceType::FixedSmall, false);
  EXPECT_EQ(ddim.prev_timestep(0), 666);
  EXPECT_EQ(ddim.prev_timestep(1), 332);
  EXPECT_EQ(ddim.prev_timestep(2), -1);
  EXPECT_DOUBLE_EQ(ddim.alpha_bar_prev(1), m.sch.alphas_cumprod[332]);
  EXPECT_DOUBLE_EQ(ddim.alpha_bar_prev(2), 1.0);

  auto x = torch::randn({1, 2, 4, 4}, torch::kFloat64);
  NoiseSource noise(1);
  auto out = ddim.step_full(m.eps(x, 666), 1, x, noise);
  auto direct = [&](int64_t to) {  // DDIM eq. 12, eta = 0, written out
    const double ab = m.sch.alphas_cumprod[666], ab_to = m.sch.alphas_cumprod[to];
    const auto e = m.eps(x, 666);
    const auto x0 = (x - std::sqrt(1 - ab) * e) / std::sqrt(ab);
    return std::sqrt(ab_to) * x0 + std::sqrt(1 - ab_to) * e;
  };
  EXPECT_LT(max_abs(out.prev, direct(332)), 1e-12);
  EXPECT_GT(max_abs(out.prev, direct(333)), 1e-5);  // where a fixed stride would land
  // After the last step abar = 1: the sample is the x_0 prediction.
  auto last = ddim.step_full(m.eps(x, 332), 2, x, noise);
  EXPECT_LT(max_abs(last.prev, last.pred_x0), 1e-12);
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
  auto ts = leading_timesteps(1000, 20);
  auto P = PredictionType::Epsilon;
  DdpmSampler small(m.sch, ts, P, VarianceType::FixedSmall, false);
  DdpmSampler large(m.sch, ts, P, VarianceType::FixedLarge, false);
  DdpmSampler learned(m.sch, ts, P, VarianceType::LearnedRange, false);
  auto x = torch::randn({2, 3, 4, 4}, torch::kFloat64);
  for (size_t i = 0; i + 1 < ts.size(); ++i) {
    const auto e = m.eps(x, ts[i]);
    NoiseSource n(static_cast<uint64_t>(i));
    NoiseSource n_small = n, n_large = n, n_lo = n, n_hi = n;
    // v = -1: frac 0, log beta~; v = +1: frac 1, log beta.
    auto lo = learned.step(torch::cat({e, -torch::ones_like(e)}, 1), i, x, n_lo);
    auto hi = learned.step(torch::cat({e, torch::ones_like(e)}, 1), i, x, n_hi);
    EXPECT_LT(max_abs(lo, small.step(e, i, x, n_small)), 1e-10) << i;
    EXPECT_LT(max_abs(hi, large.step(e, i, x, n_large)), 1e-10) << i;
    EXPECT_GT(max_abs(lo, hi), 1e-4) << i;
  }
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
    DdimSampler ddim(m.sch, ts, 1.0, PredictionType::Epsilon, VarianceType::FixedSmall, false);
    DdpmSampler ddpm(m.sch, ts, PredictionType::Epsilon, VarianceType::FixedSmall, false);
    const auto& respaced = ddpm.respaced();
    auto x = torch::randn({3, 2, 4, 4}, torch::kFloat64);
    for (size_t i = 0; i < ts.size(); ++i) {
      const auto j = ts.size() - 1 - i;
      EXPECT_NEAR(ddim.sigma(i) * ddim.sigma(i), j == 0 ? 0.0 : respaced.posterior_variance[j],
                  1e-15);
      NoiseSource n1(42 + i), n2 = n1;
      const auto e = m.eps(x, ts[i]);
      auto next = ddim.step(e, i, x, n1);
      EXPECT_LT(max_abs(next, ddpm.step(e, i, x, n2)), 1e-12) << i;
      x = next;
    }
  }
}

TEST(Ddim, AllParameterisationsOfOneModelAgree) {
  auto g = load_golden();
  for (const std::string kind : {"ddim", "dpm++2m"}) {
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

// ---------------------------------------------------------------------------------------------
// Bad input

TEST(Samplers, BadOptionsNameTheOption) {
  auto sch = Schedule::linear(1000);
  auto msg = [&](SamplerOptions o) { return error_of([&] { make_sampler(o, sch); }); };
  auto o = options("euler", 10);
  EXPECT_NE(msg(o).find("--sampler"), std::string::npos);
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
}

TEST(Samplers, BadStepInputsThrow) {
  Analytic m{Schedule::linear(100), torch::zeros({1, 2, 4, 4}, torch::kFloat64), 0.5};
  auto x = torch::randn({2, 2, 4, 4}, torch::kFloat64);
  NoiseSource noise(0);
  for (const std::string kind : {"ddpm", "ddim", "dpm++2m"}) {
    auto sampler = make_sampler(options(kind, 5), m.sch);
    EXPECT_THROW(sampler->step(torch::randn({2, 4, 4, 4}), 0, x, noise), Error) << kind;
    EXPECT_THROW(sampler->step(torch::randn({2, 2, 4, 5}), 0, x, noise), Error) << kind;
    EXPECT_THROW(sampler->step(torch::Tensor(), 0, x, noise), Error) << kind;
    EXPECT_THROW(sampler->step(m.eps(x, 0), 5, x, noise), Error) << kind;
  }
  auto o = options("ddim", 5);
  o.variance = "learned-range";  // needs 2C channels
  EXPECT_THROW(make_sampler(o, m.sch)->step(m.eps(x, 0), 0, x, noise), Error);
  // A multistep solver cannot skip steps.
  auto dpm = make_sampler(options("dpm++2m", 5), m.sch);
  dpm->step(m.eps(x, dpm->timesteps()[0]), 0, x, noise);
  EXPECT_NE(error_of([&] { dpm->step(m.eps(x, 0), 2, x, noise); }).find("order"),
            std::string::npos);
}
