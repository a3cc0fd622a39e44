// Samplers on the exact analytic model of ../shared/golden (data x0 ~ N(mu, s^2) elementwise, whose
// MMSE noise predictor is known in closed form): trajectories against diffusers' numbers, DDPM
// sample statistics against N(mu, s^2), DDIM/DDPM agreement, inversion round trips, spacings.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "diffuse/core/error.h"
#include "diffuse/samplers/inversion.h"
#include "diffuse/samplers/sample_loop.h"
#include "diffuse/samplers/sampler.h"
#include "diffuse/samplers/timesteps.h"
#include "support.h"

using namespace diffuse;
using namespace diffuse::testing;

namespace {

nlohmann::json golden() {
  std::ifstream f(std::string(DIFFUSE_TEST_DATA) + "/samplers.json");
  return nlohmann::json::parse(f);
}

torch::Tensor f64(const std::vector<double>& v, at::IntArrayRef shape) {
  return torch::tensor(v, torch::kFloat64).view(shape).clone();
}

// eps(x_t, t) = sqrt(1 - abar)(x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar), returned as the
// network output of the requested prediction type.
Denoiser analytic(const Schedule& sch, torch::Tensor mu, double s,
                  PredictionType p = PredictionType::Epsilon) {
  return [&sch, mu, s, p](const torch::Tensor& x, int64_t t) {
    const double ab = sch.alphas_cumprod[t];
    auto eps = std::sqrt(1 - ab) * (x - std::sqrt(ab) * mu) / (ab * s * s + 1 - ab);
    auto a = torch::tensor(std::sqrt(ab), torch::kFloat64),
         sd = torch::tensor(std::sqrt(1 - ab), torch::kFloat64);
    auto x0 = (x - sd * eps) / a;
    return prediction_target(p, x0, eps, a, sd);
  };
}

SamplerOptions opts(const std::string& kind, int64_t steps, double eta = 0.0,
                    const std::string& spacing = "") {
  SamplerOptions o;
  o.kind = kind;
  o.steps = steps;
  o.eta = eta;
  o.spacing = spacing;
  return o;
}

SampleCallbacks quiet() {
  SampleCallbacks cb;
  cb.show_progress = false;
  return cb;
}

}  // namespace

TEST(Samplers, ReproduceDiffusersTrajectoriesOnTheAnalyticModel) {
  const auto g = golden();
  const auto shape = g["shape"].get<std::vector<int64_t>>();
  auto mu = f64(g["mu"].get<std::vector<double>>(), shape);
  auto x_T = f64(g["x_T"].get<std::vector<double>>(), shape);
  const double s = g["s"].get<double>();
  auto sch = Schedule::linear(1000);
  for (const auto& run : g["runs"]) {
    const std::string kind = run["sampler"] == "ddim" ? "ddim" : "dpm++2m";
    const auto steps = run["steps"].get<int64_t>();
    auto sampler =
        make_sampler(opts(kind, steps, 0.0, run["timestep_spacing"].get<std::string>()), sch);
    EXPECT_EQ(sampler->timesteps(), run["timesteps"].get<std::vector<int64_t>>())
        << kind << " " << steps;
    NoiseSource noise(0);
    auto x0 = sample(*sampler, analytic(sch, mu, s), x_T, noise, quiet());
    auto ref = f64(run["x_0"].get<std::vector<double>>(), shape);
    const double err = (x0 - ref).abs().max().item<double>();
    EXPECT_LT(err, 1e-5) << kind << " " << steps << " steps: max |diff| " << err;
    // Default spacings are the golden ones: leading for DDIM, linspace for DPM-Solver++.
    EXPECT_EQ(make_sampler(opts(kind, steps), sch)->timesteps(), sampler->timesteps());
  }
}

TEST(Samplers, DdpmAncestralMatchesTheDataDistribution) {
  // 4096 values from N(0.3, 0.5^2): the standard error of the mean is 0.5/64 = 0.0078 and of the
  // variance about 0.25 sqrt(2/4096) = 0.0055; bounds are 5 standard errors plus the sampler's
  // own bias, measured below 0.01 for 1000 and 100 fixed-small steps.
  const double m = 0.3, s = 0.5;
  auto sch = Schedule::linear(1000);
  auto mu = torch::full({16, 1, 16, 16}, m, torch::kFloat64);
  for (int64_t steps : {1000, 100}) {
    for (const std::string variance : {"fixed-small", "fixed-large"}) {
      auto o = opts("ddpm", steps);
      o.variance = variance;
      auto sampler = make_sampler(o, sch);
      NoiseSource noise(7);
      auto x_T = noise.randn_like(mu);
      auto x0 = sample(*sampler, analytic(sch, mu, s), x_T, noise, quiet());
      const double mean = x0.mean().item<double>(), var = x0.var().item<double>();
      EXPECT_NEAR(mean, m, 5 * 0.0078 + 0.01) << steps << " " << variance;
      // fixed-large adds the larger beta_t at each step: allow its known excess at 100 steps.
      const double var_tol = 5 * 0.0055 + (variance == "fixed-large" && steps == 100 ? 0.05 : 0.01);
      EXPECT_NEAR(var, s * s, var_tol) << steps << " " << variance;
    }
  }
}

TEST(Samplers, DdimWithEtaOneIsTheDdpmPosteriorStep) {
  auto sch = Schedule::linear(1000);
  torch::manual_seed(0);
  auto mu = torch::randn({2, 1, 4, 4}, torch::kFloat64) * 0.3;
  auto den = analytic(sch, mu, 0.4);
  auto ddim = make_sampler(opts("ddim", 50, 1.0), sch);
  auto ddpm = make_sampler(opts("ddpm", 50), sch);
  ASSERT_EQ(ddim->timesteps(), ddpm->timesteps());
  NoiseSource n1(3), n2(3);
  auto x = torch::randn({2, 1, 4, 4}, torch::kFloat64);
  for (size_t i = 0; i < ddim->num_steps(); ++i) {
    const auto t = ddim->timesteps()[i];
    auto a = ddim->step(den(x, t), i, x, n1);
    auto b = ddpm->step(den(x, t), i, x, n2);
    ASSERT_LT((a - b).abs().max().item<double>(), 1e-9) << "step " << i << " t " << t;
    x = a;
  }
}

TEST(Samplers, PredictionTypesAgree) {
  auto sch = Schedule::cosine(1000);
  torch::manual_seed(1);
  auto mu = torch::randn({1, 2, 4, 4}, torch::kFloat64) * 0.5;
  auto x_T = torch::randn({1, 2, 4, 4}, torch::kFloat64);
  torch::Tensor ref;
  for (auto p : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::V}) {
    for (const std::string kind : {"ddim", "dpm++2m"}) {
      auto o = opts(kind, 20);
      o.prediction = p;
      auto sampler = make_sampler(o, sch);
      NoiseSource noise(0);
      auto x0 = sample(*sampler, analytic(sch, mu, 0.3, p), x_T, noise, quiet());
      if (kind == "ddim" && p == PredictionType::Epsilon) ref = x0;
      if (kind == "ddim") EXPECT_LT((x0 - ref).abs().max().item<double>(), 1e-9) << to_string(p);
    }
  }
}

TEST(Samplers, InversionRoundTripImprovesWithSteps) {
  // Encoding then decoding with the deterministic DDIM ODE returns x0 up to discretisation error,
  // which shrinks like 1/S (explicit Euler both ways): measured max |error| 0.58, 0.15, 0.041 and
  // 0.0083 at 10, 50, 200 and 1000 steps; bounds 0.06 at 200 and 0.015 at 1000 steps.
  auto sch = Schedule::linear(1000);
  torch::manual_seed(2);
  const double s = 0.3;
  auto mu = torch::randn({2, 1, 8, 8}, torch::kFloat64) * 0.4;
  auto x0 = mu + s * torch::randn({2, 1, 8, 8}, torch::kFloat64);
  auto den = analytic(sch, mu, s);
  std::vector<double> errs;
  for (int64_t steps : {10, 50, 200, 1000}) {
    auto o = opts("ddim", steps);
    auto z = encode(den, sch, o, x0, quiet());
    auto back = decode(den, sch, o, z, quiet());
    errs.push_back((back - x0).abs().max().item<double>());
    EXPECT_TRUE(torch::isfinite(z).all().item<bool>());
  }
  std::cout << "inversion max error at 10/50/200/1000 steps: " << errs[0] << " " << errs[1] << " "
            << errs[2] << " " << errs[3] << "\n";
  EXPECT_GT(errs[0], errs[1]);
  EXPECT_GT(errs[1], errs[2]);
  EXPECT_GT(errs[2], errs[3]);
  EXPECT_LT(errs[2], 0.06);
  EXPECT_LT(errs[3], 0.015);
}

TEST(Samplers, SeedsMakeOutputsReproducible) {
  auto sch = Schedule::linear(1000);
  auto mu = torch::zeros({2, 1, 4, 4}, torch::kFloat64);
  auto run = [&](uint64_t seed) {
    auto sampler = make_sampler(opts("ddpm", 20), sch);
    NoiseSource noise(seed);
    auto x_T = noise.randn_like(mu);
    return sample(*sampler, analytic(sch, mu, 0.5), x_T, noise, quiet());
  };
  EXPECT_TRUE(torch::equal(run(5), run(5)));
  EXPECT_FALSE(torch::equal(run(5), run(6)));
  // The default CPU generator gives float32 noise moved to the tensor: the same values whatever
  // the requested dtype (up to the cast).
  NoiseSource a(9), b(9);
  auto n32 = a.randn({3, 3}, torch::TensorOptions().dtype(torch::kFloat32));
  auto n64 = b.randn({3, 3}, torch::TensorOptions().dtype(torch::kFloat64));
  EXPECT_TRUE(torch::allclose(n32.to(torch::kFloat64), n64, 0, 1e-7));
}

TEST(Timesteps, SpacingsAndPairing) {
  EXPECT_EQ(leading_timesteps(1000, 4), (std::vector<int64_t>{750, 500, 250, 0}));
  const auto tr = trailing_timesteps(1000, 3);
  EXPECT_EQ(tr.front(), 999);
  EXPECT_EQ(tr, (std::vector<int64_t>{999, 666, 332}));
  EXPECT_EQ(linspace_timesteps(1000, 10).front(), 999);
  // The step from timesteps[i] lands on timesteps[i + 1], not on t - T/S: with trailing spacing
  // 999 - 333 = 666 would be right, but 666 - 333 = 333 is not where the list goes (332).
  auto sampler = make_sampler(opts("ddim", 3, 0.0, "trailing"), Schedule::linear(1000));
  EXPECT_EQ(sampler->prev_timestep(0), 666);
  EXPECT_EQ(sampler->prev_timestep(1), 332);
  EXPECT_EQ(sampler->prev_timestep(2), -1);
  EXPECT_DOUBLE_EQ(sampler->alpha_bar_prev(2), 1.0);
  for (const std::string sp : {"leading", "linspace", "trailing", "quadratic"}) {
    auto ts = make_timesteps(sp, 1000, 20);
    ASSERT_EQ(ts.size(), 20u) << sp;
    for (size_t i = 1; i < ts.size(); ++i) EXPECT_LT(ts[i], ts[i - 1]) << sp;
    EXPECT_GE(ts.back(), 0);
    EXPECT_LE(ts.front(), 999);
  }
}

TEST(Samplers, BadOptionsNameTheOption) {
  auto sch = Schedule::linear(1000);
  EXPECT_NE(error_of([&] { make_sampler(opts("euler", 10), sch); }).find("--sampler"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make_sampler(opts("ddim", 0), sch); }).find("--steps"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make_sampler(opts("ddim", 1001), sch); }).find("--steps"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make_sampler(opts("ddim", 10, 1.5), sch); }).find("--eta"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make_sampler(opts("ddim", 10, 0.0, "cubic"), sch); }).find("--spacing"),
            std::string::npos);
  auto o = opts("ddpm", 10);
  o.variance = "tiny";
  EXPECT_FALSE(error_of([&] { make_sampler(o, sch); }).empty());
  // A model output of the wrong shape is refused by the step.
  auto sampler = make_sampler(opts("ddim", 10), sch);
  NoiseSource noise(0);
  auto x = torch::zeros({1, 1, 4, 4});
  EXPECT_THROW(sampler->step(torch::zeros({1, 2, 4, 4}), 0, x, noise), Error);
}
