// The DDPM process checked against its own mathematics (closed forms, products of Gaussians, Monte
// Carlo with stated tolerances) and against schedules computed by diffusers (tests/data).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "diffuse/core/error.h"
#include "diffuse/diffusion/gaussian_diffusion.h"
#include "diffuse/diffusion/likelihood.h"
#include "diffuse/diffusion/losses.h"
#include "diffuse/diffusion/timestep_sampler.h"
#include "support.h"

using namespace diffuse;
using namespace diffuse::testing;

namespace {

torch::Tensor f64(std::initializer_list<double> v) {
  return torch::tensor(std::vector<double>(v), torch::kFloat64);
}

// The exact MMSE noise predictor for data x0 ~ N(mu, s^2) elementwise (golden README).
torch::Tensor analytic_eps(const Schedule& sch, const torch::Tensor& x_t, const torch::Tensor& t,
                           const torch::Tensor& mu, double s) {
  auto abar =
      torch::tensor(sch.alphas_cumprod, torch::kFloat64).index_select(0, t).view({-1, 1, 1, 1});
  return torch::sqrt(1 - abar) * (x_t - torch::sqrt(abar) * mu) / (abar * s * s + 1 - abar);
}

}  // namespace

TEST(Schedule, MatchesDiffusers) {
  auto golden = load_json("schedules.json");
  for (const std::string name : {"linear", "cosine"}) {
    auto sch = Schedule::by_name(name, 1000);
    auto betas = golden[name]["betas"].get<std::vector<double>>();
    auto abar = golden[name]["alphas_cumprod"].get<std::vector<double>>();
    ASSERT_EQ(sch.num_timesteps(), static_cast<int64_t>(betas.size()));
    for (size_t t = 0; t < betas.size(); ++t) {
      EXPECT_NEAR(sch.betas[t], betas[t], 1e-6) << name << " t=" << t;
      EXPECT_NEAR(sch.alphas_cumprod[t], abar[t], 1e-6) << name << " t=" << t;
    }
  }
}

TEST(Schedule, LinearEndpointsAndScaling) {
  auto s = Schedule::linear(1000);
  EXPECT_DOUBLE_EQ(s.betas.front(), 1e-4);
  EXPECT_NEAR(s.betas.back(), 0.02, 1e-15);
  auto s100 = Schedule::linear(100);  // improved-diffusion scales by 1000 / T
  EXPECT_NEAR(s100.betas.front(), 1e-3, 1e-15);
  EXPECT_NEAR(s100.betas.back(), 0.2, 1e-15);
  auto c = Schedule::cosine(1000);
  EXPECT_LE(*std::max_element(c.betas.begin(), c.betas.end()), 0.999);
}

TEST(Schedule, DerivedTablesAreConsistent) {
  auto s = Schedule::cosine(50);
  for (int64_t t = 0; t < 50; ++t) {
    const double ab = s.alphas_cumprod[t], abp = s.alphas_cumprod_prev[t];
    EXPECT_NEAR(ab, abp * (1 - s.betas[t]), 1e-15);
    EXPECT_NEAR(s.sqrt_recip_alphas_cumprod[t] * s.sqrt_alphas_cumprod[t], 1.0, 1e-12);
    EXPECT_NEAR(s.sqrt_recipm1_alphas_cumprod[t], std::sqrt(1 / ab - 1), 1e-12);
    EXPECT_NEAR(s.posterior_variance[t], s.betas[t] * (1 - abp) / (1 - ab), 1e-15);
    EXPECT_TRUE(std::isfinite(s.posterior_log_variance_clipped[t]));
  }
  EXPECT_EQ(s.posterior_variance[0], 0.0);
  EXPECT_DOUBLE_EQ(s.posterior_log_variance_clipped[0], std::log(s.posterior_variance[1]));
  EXPECT_EQ(s.alphas_cumprod_prev[0], 1.0);
  EXPECT_EQ(s.alphas_cumprod_next[49], 0.0);
}

TEST(Schedule, RejectsInvalidInput) {
  EXPECT_NE(error_of([] { Schedule::linear(0); }).find("T must be >= 1"), std::string::npos);
  EXPECT_NE(error_of([] { Schedule::cosine(-3); }).find("T must be >= 1"), std::string::npos);
  EXPECT_NE(error_of([] {
              Schedule::from_betas({0.1, 1.0});
            }).find("outside (0, 1)"),
            std::string::npos);
  EXPECT_NE(error_of([] { Schedule::from_betas({0.1, 0.0}); }).find("beta[1]"), std::string::npos);
  EXPECT_NE(error_of([] {
              Schedule::from_betas({0.1, std::nan("")});
            }).find("not a finite"),
            std::string::npos);
  EXPECT_NE(error_of([] { Schedule::from_betas({}); }).find("at least one"), std::string::npos);
  EXPECT_NE(error_of([] { Schedule::by_name("sigmoid", 10); }).find("unknown schedule 'sigmoid'"),
            std::string::npos);
  // 1000/T scaling pushes beta_T past 1 for tiny T.
  EXPECT_THROW(Schedule::linear(10), Error);
  EXPECT_NE(error_of([] { parse_variance_type("huge"); }).find("huge"), std::string::npos);
  EXPECT_NE(error_of([] { parse_prediction_type("noise"); }).find("noise"), std::string::npos);
}

TEST(Schedule, RespacingKeepsCumulativeProducts) {
  auto s = Schedule::linear(1000);
  std::vector<int64_t> kept = {0, 99, 399, 999};
  auto r = s.respaced(kept);
  ASSERT_EQ(r.num_timesteps(), 4);
  for (size_t i = 0; i < kept.size(); ++i)
    EXPECT_NEAR(r.alphas_cumprod[i], s.alphas_cumprod[kept[i]], 1e-14);
  EXPECT_THROW(s.respaced({5, 3}), Error);
  EXPECT_THROW(s.respaced({1000}), Error);
}

TEST(ForwardProcess, ClosedFormEqualsMarkovChain) {
  // Propagate x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps exactly for a point mass x0:
  // mean_t = sqrt(alpha_t) mean_{t-1}, var_t = alpha_t var_{t-1} + beta_t.
  for (auto sch : {Schedule::linear(1000), Schedule::cosine(1000)}) {
    GaussianDiffusion d(sch);
    const double x0 = 0.7;
    double mean = x0, var = 0;
    for (int64_t t = 0; t < 1000; ++t) {
      mean *= std::sqrt(sch.alphas[t]);
      var = sch.alphas[t] * var + sch.betas[t];
      if (t % 97 == 0 || t == 999) {
        auto q = d.q_mean_variance(torch::full({1, 1}, x0, torch::kFloat64), torch::tensor({t}));
        EXPECT_NEAR(q.mean.item<double>(), mean, 1e-12);
        EXPECT_NEAR(q.variance.item<double>(), var, 1e-12);
        EXPECT_NEAR(std::exp(q.log_variance.item<double>()), var, 1e-12);
      }
    }
  }
}

TEST(ForwardProcess, MonteCarloChainMatchesQSample) {
  // 20000 chains run step by step to t = 299 against the closed form; the standard error of the
  // mean is sqrt(var / N) < 0.0071, of the variance about var sqrt(2 / N) < 0.01: 5 sigma bounds.
  torch::manual_seed(1);
  auto sch = Schedule::linear(1000);
  GaussianDiffusion d(sch);
  const int64_t N = 20000, t_end = 299;
  auto x0 = torch::full({N, 1}, 0.5, torch::kFloat64);
  auto x = x0.clone();
  for (int64_t t = 0; t <= t_end; ++t)
    x = std::sqrt(sch.alphas[t]) * x + std::sqrt(sch.betas[t]) * torch::randn_like(x);
  auto tt = torch::full({N}, t_end, torch::kLong);
  auto direct = d.q_sample(x0, tt, torch::randn_like(x0));
  const double mean = 0.5 * sch.sqrt_alphas_cumprod[t_end], var = 1 - sch.alphas_cumprod[t_end];
  for (const auto& s : {x, direct}) {
    EXPECT_NEAR(s.mean().item<double>(), mean, 5 * std::sqrt(var / N));
    EXPECT_NEAR(s.var().item<double>(), var, 5 * var * std::sqrt(2.0 / N));
  }
}

TEST(ForwardProcess, PosteriorIsProductOfGaussians) {
  // q(x_{t-1}|x_t,x0) ∝ N(x_t; sqrt(alpha_t) x_{t-1}, beta_t) N(x_{t-1}; sqrt(abar_{t-1}) x0,
  // 1-abar_{t-1}); as a function of x_{t-1} the first factor is N(x_t / sqrt(alpha_t), beta_t /
  // alpha_t).
  auto sch = Schedule::cosine(200);
  GaussianDiffusion d(sch);
  auto t = torch::tensor({1L, 7L, 100L, 199L});
  auto x0 = f64({0.3, -0.9, 0.1, 1.0}).view({4, 1});
  auto xt = f64({-0.2, 0.5, 1.7, -0.4}).view({4, 1});
  auto post = d.q_posterior_mean_variance(x0, xt, t);
  for (int64_t i = 0; i < 4; ++i) {
    const int64_t ti = t[i].item<int64_t>();
    const double a = sch.alphas[ti], b = sch.betas[ti], abp = sch.alphas_cumprod_prev[ti];
    const double prec1 = a / b, m1 = xt[i][0].item<double>() / std::sqrt(a);
    const double prec2 = 1 / (1 - abp), m2 = std::sqrt(abp) * x0[i][0].item<double>();
    const double var = 1 / (prec1 + prec2), mean = var * (prec1 * m1 + prec2 * m2);
    EXPECT_NEAR(post.variance[i].item<double>(), var, 1e-12 * var + 1e-15);
    EXPECT_NEAR(post.mean[i][0].item<double>(), mean, 1e-12);
  }
}

TEST(Prediction, ConversionsRoundTrip) {
  torch::manual_seed(2);
  auto sch = Schedule::linear(1000);
  GaussianDiffusion d(sch);
  auto x0 = torch::randn({3, 2, 4, 4}, torch::kFloat64);
  auto eps = torch::randn_like(x0);
  auto t = torch::tensor({0L, 500L, 999L});
  auto xt = d.q_sample(x0, t, eps);
  auto a = d.extract(sch.sqrt_alphas_cumprod, t, x0);
  auto s = d.extract(sch.sqrt_one_minus_alphas_cumprod, t, x0);
  for (auto p : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::V}) {
    auto out = prediction_target(p, x0, eps, a, s);
    auto back = split_prediction(p, out, xt, a, s);
    EXPECT_TRUE(torch::allclose(back.x0, x0, 1e-8, 1e-9)) << to_string(p);
    EXPECT_TRUE(torch::allclose(back.eps, eps, 1e-8, 1e-9)) << to_string(p);
  }
}

TEST(ReverseProcess, VarianceTypes) {
  auto sch = Schedule::linear(1000);
  auto t = torch::tensor({0L, 10L, 999L});
  auto xt = torch::zeros({3, 1, 2, 2}, torch::kFloat64);
  GaussianDiffusion small(sch, PredictionType::Epsilon, VarianceType::FixedSmall);
  GaussianDiffusion large(sch, PredictionType::Epsilon, VarianceType::FixedLarge);
  GaussianDiffusion learned(sch, PredictionType::Epsilon, VarianceType::LearnedRange);
  auto ps = small.p_mean_variance(torch::zeros_like(xt), xt, t);
  auto pl = large.p_mean_variance(torch::zeros_like(xt), xt, t);
  EXPECT_NEAR(ps.variance[1][0][0][0].item<double>(), sch.posterior_variance[10], 1e-15);
  EXPECT_NEAR(pl.variance[1][0][0][0].item<double>(), sch.betas[10], 1e-15);
  EXPECT_NEAR(pl.variance[0][0][0][0].item<double>(), sch.posterior_variance[1], 1e-15);
  // v = +1 gives beta_t, v = -1 gives beta~_t (clipped at t = 0), v = 0 the geometric mean.
  for (double v : {1.0, -1.0, 0.0}) {
    auto out = torch::cat({torch::zeros_like(xt), torch::full_like(xt, v)}, 1);
    auto p = learned.p_mean_variance(out, xt, t);
    const double frac = (v + 1) / 2;
    const double expect =
        frac * std::log(sch.betas[10]) + (1 - frac) * std::log(sch.posterior_variance[10]);
    EXPECT_NEAR(p.log_variance[1][0][1][1].item<double>(), expect, 1e-12);
  }
  EXPECT_THROW(learned.p_mean_variance(torch::zeros_like(xt), xt, t), Error);
  EXPECT_EQ(learned.model_output_channels(3), 6);
}

TEST(Losses, GaussianKLMatchesMonteCarlo) {
  // E_{x~p}[log p(x) - log q(x)] from 400000 draws; its standard error is below 0.003 here.
  torch::manual_seed(3);
  const double m1 = 0.3, lv1 = std::log(0.5), m2 = -0.4, lv2 = std::log(1.7);
  auto x = m1 + std::exp(0.5 * lv1) * torch::randn({400000}, torch::kFloat64);
  auto logp = -0.5 * (lv1 + (x - m1).pow(2) / std::exp(lv1));
  auto logq = -0.5 * (lv2 + (x - m2).pow(2) / std::exp(lv2));
  const double mc = (logp - logq).mean().item<double>();
  const double kl = normal_kl(f64({m1}), f64({lv1}), f64({m2}), f64({lv2})).item<double>();
  EXPECT_NEAR(kl, mc, 0.015);
  EXPECT_NEAR(normal_kl(f64({m1}), f64({lv1}), f64({m1}), f64({lv1})).item<double>(), 0.0, 1e-15);
}

TEST(Losses, DiscretizedLikelihoodIsADistributionOverBins) {
  auto bins = torch::arange(256, torch::kFloat64) / 127.5 - 1.0;  // the 256 values of 8-bit data
  for (double mean : {-1.2, -0.3, 0.0, 0.77, 1.0}) {
    for (double scale : {0.001, 0.02, 0.3, 2.0}) {
      auto m = torch::full_like(bins, mean);
      auto ls = torch::full_like(bins, std::log(scale));
      auto logp = discretized_gaussian_log_likelihood(bins, m, ls);
      EXPECT_NEAR(torch::exp(logp).sum().item<double>(), 1.0, 1e-9) << mean << " " << scale;
      // Each inner bin's mass is the CDF difference over [x - 1/255, x + 1/255].
      const double x = bins[100].item<double>();
      auto cdf = [&](double v) { return 0.5 * std::erfc(-(v - mean) / scale / std::sqrt(2.0)); };
      const double p = cdf(x + 1 / 255.0) - cdf(x - 1 / 255.0);
      if (p > 1e-10) EXPECT_NEAR(std::exp(logp[100].item<double>()), p, 1e-9 + 1e-9 * p);
      // Edge bins are open: P(X <= -1 + 1/255) and P(X >= 1 - 1/255).
      EXPECT_NEAR(std::exp(logp[0].item<double>()), std::max(cdf(-1 + 1 / 255.0), 1e-12), 1e-9);
      EXPECT_NEAR(std::exp(logp[255].item<double>()), std::max(1 - cdf(1 - 1 / 255.0), 1e-12),
                  1e-9);
    }
  }
}

TEST(Losses, VlbOfExactModelIsAboveDataEntropyAndTight) {
  // 8-bit data from a discretised N(mu, s^2): the bound with the exact noise predictor must not
  // fall below the data entropy (up to Monte Carlo error). With the fixed-small variance beta~_t,
  // narrower than the true reverse variance of this data, it measured 0.72 +- 0.08 bits/dim above
  // the entropy (6.71 vs 7.44); the test allows 1.0. A network that outputs zeros is far worse.
  torch::manual_seed(4);
  const double s = 0.2;
  auto sch = Schedule::linear(1000);
  GaussianDiffusion d(sch);
  const int64_t B = 64;
  auto mu = torch::linspace(-0.5, 0.5, 16, torch::kFloat64).view({1, 1, 4, 4});
  auto x0 =
      ((mu + s * torch::randn({B, 1, 4, 4}, torch::kFloat64) + 1) * 127.5).round().clamp(0, 255) /
          127.5 -
      1;
  // Entropy of the discretised data per dim: -sum_k p_k log2 p_k, p_k the bin masses.
  auto bins = torch::arange(256, torch::kFloat64).view({256, 1}) / 127.5 - 1;
  auto logp = discretized_gaussian_log_likelihood(
      bins.expand({256, 16}), mu.view({1, 16}).expand({256, 16}),
      torch::full({256, 16}, std::log(s), torch::kFloat64));
  const double entropy = -(torch::exp(logp) * logp).sum(0).mean().item<double>() / std::log(2.0);
  ModelFn exact = [&](const torch::Tensor& xt, const torch::Tensor& t) {
    return analytic_eps(sch, xt, t, mu, s);
  };
  ModelFn zeros = [&](const torch::Tensor& xt, const torch::Tensor&) {
    return torch::zeros_like(xt);
  };
  auto r = calc_bpd_loop(d, exact, x0);
  const double bpd = r.total_bpd.mean().item<double>();
  const double se = r.total_bpd.std().item<double>() / std::sqrt(double(B));
  EXPECT_GE(bpd, entropy - 3 * se);
  EXPECT_LE(bpd, entropy + 1.0);
  EXPECT_FALSE(r.estimate);
  EXPECT_EQ(r.terms_bpd.size(1), 1000);
  const double zero_bpd = calc_bpd_loop(d, zeros, x0).total_bpd.mean().item<double>();
  EXPECT_GT(zero_bpd, bpd + 5.0);
  // Subsampled terms give an estimate close to the full bound.
  BpdOptions opt;
  opt.terms = 100;
  auto est = calc_bpd_loop(d, exact, x0, opt);
  EXPECT_TRUE(est.estimate);
  EXPECT_EQ(est.timesteps.front(), 0);
  EXPECT_NEAR(std::accumulate(est.weights.begin(), est.weights.end(), 0.0), 1000.0, 1e-9);
  EXPECT_NEAR(est.total_bpd.mean().item<double>(), bpd, 0.1);
  std::cout << "entropy " << entropy << " bits/dim, bound " << bpd << " +- " << se << ", zeros "
            << zero_bpd << "\n";
}

TEST(Losses, HybridLossStopsGradientAtTheMean) {
  torch::manual_seed(5);
  auto sch = Schedule::linear(1000);
  GaussianDiffusion d(sch, PredictionType::Epsilon, VarianceType::LearnedRange);
  auto x0 = torch::rand({4, 1, 3, 3}, torch::kFloat64) * 2 - 1;
  auto noise = torch::randn_like(x0);
  auto t = torch::tensor({0L, 3L, 500L, 999L});
  auto xt = d.q_sample(x0, t, noise);
  auto out = torch::randn({4, 2, 3, 3}, torch::kFloat64).requires_grad_(true);
  auto hybrid = d.training_losses(out, x0, xt, t, noise, LossType::Hybrid);
  hybrid.loss.sum().backward();
  auto g_hybrid = out.grad().clone();
  // The mean half's gradient is that of the MSE alone: 2 (pred - eps) / numel per sample.
  auto expect_mean_grad = 2 * (out.detach().narrow(1, 0, 1) - noise) / 9.0;
  EXPECT_TRUE(torch::allclose(g_hybrid.narrow(1, 0, 1), expect_mean_grad, 1e-10, 1e-12));
  EXPECT_GT(g_hybrid.narrow(1, 1, 1).abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(torch::allclose(hybrid.loss, hybrid.mse + hybrid.vb, 1e-12, 1e-12));
  GaussianDiffusion fixed(sch);
  EXPECT_NE(error_of([&] {
              fixed.training_losses(out.narrow(1, 0, 1), x0, xt, t, noise, LossType::Hybrid);
            }).find("learned-range"),
            std::string::npos);
}

TEST(Losses, TargetsPerPredictionType) {
  auto sch = Schedule::linear(1000);
  auto x0 = torch::ones({2, 1, 2, 2}, torch::kFloat64) * 0.5;
  auto noise = torch::ones_like(x0) * -0.25;
  auto t = torch::tensor({10L, 900L});
  for (auto p : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::V}) {
    GaussianDiffusion d(sch, p);
    auto xt = d.q_sample(x0, t, noise);
    auto a = d.extract(sch.sqrt_alphas_cumprod, t, x0),
         s = d.extract(sch.sqrt_one_minus_alphas_cumprod, t, x0);
    auto target = prediction_target(p, x0, noise, a, s);
    EXPECT_NEAR(d.training_losses(target, x0, xt, t, noise, LossType::Simple)
                    .loss.abs()
                    .max()
                    .item<double>(),
                0.0, 1e-20);
    EXPECT_GT(d.training_losses(target + 0.1, x0, xt, t, noise, LossType::Simple)
                  .loss.min()
                  .item<double>(),
              0.009);
  }
}

TEST(Losses, PriorTermIsSmallForLinearSchedule) {
  auto sch = Schedule::linear(1000);
  GaussianDiffusion d(sch);
  auto x0 = torch::ones({1, 1, 2, 2}, torch::kFloat64);
  const double abar = sch.alphas_cumprod.back();
  // KL(N(sqrt(abar), 1 - abar) || N(0, 1)) per dim, in bits.
  const double kl = 0.5 * (-1 - std::log(1 - abar) + (1 - abar) + abar) / std::log(2.0);
  EXPECT_NEAR(d.prior_bpd(x0).item<double>(), kl, 1e-12);
  EXPECT_LT(kl, 1e-4);
}

TEST(TimestepSampler, UniformAndLossAware) {
  auto gen = at::detail::createCPUGenerator(7);
  UniformTimestepSampler u(1000);
  auto draw = u.sample(4096, torch::kCPU, gen);
  EXPECT_GE(draw.t.min().item<int64_t>(), 0);
  EXPECT_LE(draw.t.max().item<int64_t>(), 999);
  EXPECT_NEAR(draw.t.to(torch::kFloat64).mean().item<double>(), 499.5, 3 * 289 / 64.0 * 2);
  LossAwareTimestepSampler la(4, 2, 0.0);
  EXPECT_DOUBLE_EQ(la.probabilities()[0], 0.25);  // uniform until the history fills
  la.update(torch::tensor({0L, 0L, 1L, 1L, 2L, 2L, 3L, 3L}), f64({1, 1, 1, 1, 1, 1, 3, 3}));
  auto p = la.probabilities();
  EXPECT_NEAR(p[3], 0.5, 1e-12);
  auto d2 = la.sample(2000, torch::kCPU, gen);
  // weights 1/(T p(t)) keep the weighted loss unbiased: E[w] = 1.
  EXPECT_NEAR(d2.weights.to(torch::kFloat64).mean().item<double>(), 1.0, 0.1);
  EXPECT_THROW(make_timestep_sampler("fancy", 10), Error);
}

TEST(GaussianDiffusion, ExtractGathersPerSampleOnTheInputDtype) {
  auto sch = Schedule::linear(1000);
  GaussianDiffusion d(sch);
  auto x = torch::zeros({3, 2, 5, 5}, torch::kFloat32);
  auto e = d.extract(sch.betas, torch::tensor({0L, 500L, 999L}), x);
  EXPECT_EQ(e.sizes(), (std::vector<int64_t>{3, 1, 1, 1}));
  EXPECT_EQ(e.scalar_type(), torch::kFloat32);
  EXPECT_FLOAT_EQ(e[1][0][0][0].item<float>(), static_cast<float>(sch.betas[500]));
  EXPECT_FLOAT_EQ(e[2][0][0][0].item<float>(), 0.02f);
}

namespace {

// sigma_t^2 of p(x_{t-1} | x_t) computed here from the betas alone: beta~_t = beta_t (1 -
// abar_{t-1}) / (1 - abar_t) (fixed-small) or beta_t (fixed-large), both with beta~_1 at t = 0.
std::vector<double> reverse_variance_from_betas(const std::vector<double>& betas, bool large) {
  const size_t T = betas.size();
  std::vector<double> abar(T), var(T);
  double prod = 1;
  for (size_t t = 0; t < T; ++t) abar[t] = prod *= 1 - betas[t];
  for (size_t t = 1; t < T; ++t)
    var[t] = large ? betas[t] : betas[t] * (1 - abar[t - 1]) / (1 - abar[t]);
  var[0] = betas[1] * (1 - abar[0]) / (1 - abar[1]);
  return var;
}

}  // namespace

// Each weighting against its formula, recomputed here in float64 from the betas (not from the
// schedule's tables), for every prediction type, both schedules and both fixed variances.
TEST(LossWeighting, EachWeightMatchesItsFormula) {
  for (const std::string name : {"linear", "cosine"}) {
    auto sch = Schedule::by_name(name, 1000);
    std::vector<double> abar(1000);
    double prod = 1;
    for (size_t t = 0; t < 1000; ++t) abar[t] = prod *= 1 - sch.betas[t];
    for (auto v : {VarianceType::FixedSmall, VarianceType::FixedLarge}) {
      const auto var = reverse_variance_from_betas(sch.betas, v == VarianceType::FixedLarge);
      for (auto p : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::V}) {
        GaussianDiffusion d(sch, p, v);
        // Converts a weight on the x_0 error into one on the target's error.
        auto on_target = [&](double lambda, double snr) {
          return p == PredictionType::Epsilon  ? lambda / snr
                 : p == PredictionType::Sample ? lambda
                                               : lambda / (snr + 1);
        };
        for (size_t t = 0; t < 1000; t += 37) {
          const double snr = abar[t] / (1 - abar[t]);
          const double beta = sch.betas[t];
          const double vlb_eps = beta * beta / (2 * var[t] * (1 - beta) * (1 - abar[t]));
          const std::pair<LossWeighting, double> expected[] = {
              {LossWeighting::Simple, 1.0},
              {LossWeighting::Snr, on_target(snr, snr)},
              {LossWeighting::MinSnr5, on_target(std::min(snr, 5.0), snr)},
              {LossWeighting::Vlb, on_target(vlb_eps * snr, snr)}};
          for (const auto& [w, value] : expected)
            EXPECT_NEAR(d.loss_weight_table(w)[t], value, 1e-10 * value)
                << name << " " << to_string(v) << " " << to_string(p) << " " << to_string(w)
                << " t=" << t;
        }
      }
    }
  }
  // Spot values: min-snr-5 for eps is 5/SNR where SNR > 5 and 1 below; snr for an eps model is 1.
  GaussianDiffusion d(Schedule::linear(1000));
  EXPECT_LT(d.loss_weight_table(LossWeighting::MinSnr5)[0], 1e-3);
  EXPECT_DOUBLE_EQ(d.loss_weight_table(LossWeighting::MinSnr5)[999], 1.0);
  EXPECT_DOUBLE_EQ(d.loss_weight_table(LossWeighting::Snr)[500], 1.0);
}

TEST(LossWeighting, TrainingLossIsTheWeightedMse) {
  torch::manual_seed(8);
  auto sch = Schedule::cosine(1000);
  GaussianDiffusion d(sch, PredictionType::V);
  auto x0 = torch::rand({4, 1, 3, 3}, torch::kFloat64) * 2 - 1;
  auto noise = torch::randn_like(x0);
  auto t = torch::tensor({0L, 100L, 600L, 999L});
  auto xt = d.q_sample(x0, t, noise);
  auto out = torch::randn_like(x0);
  auto plain = d.training_losses(out, x0, xt, t, noise, LossType::Simple);
  for (auto w : {LossWeighting::Snr, LossWeighting::MinSnr5, LossWeighting::Vlb}) {
    auto weighted = d.training_losses(out, x0, xt, t, noise, LossType::Simple, w);
    EXPECT_TRUE(torch::equal(weighted.mse, plain.mse));
    for (int64_t i = 0; i < 4; ++i)
      EXPECT_NEAR(weighted.loss[i].item<double>(),
                  d.loss_weight_table(w)[t[i].item<int64_t>()] * plain.mse[i].item<double>(),
                  1e-12 * weighted.loss[i].item<double>());
  }
}

// The vlb weight turns the eps-MSE into the KL term L_{t-1} (up to the variance mismatch C_t, 0
// for fixed-small), checked against normal_kl of the process's own posterior and reverse step, for
// any prediction type (the weight is expressed on the target the network predicts).
TEST(LossWeighting, VlbWeightedMseIsTheKlTerm) {
  torch::manual_seed(9);
  auto sch = Schedule::linear(1000);
  auto x0 = torch::rand({5, 2, 3, 3}, torch::kFloat64) * 2 - 1;
  auto noise = torch::randn_like(x0);
  auto t = torch::tensor({1L, 2L, 50L, 500L, 999L});
  for (auto v : {VarianceType::FixedSmall, VarianceType::FixedLarge}) {
    const auto var = reverse_variance_from_betas(sch.betas, v == VarianceType::FixedLarge);
    for (auto p : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::V}) {
      GaussianDiffusion d(sch, p, v);
      auto xt = d.q_sample(x0, t, noise);
      auto out = torch::randn_like(x0);
      auto q = d.q_posterior_mean_variance(x0, xt, t);
      auto pm = d.p_mean_variance(out, xt, t);
      auto kl = mean_flat(normal_kl(q.mean, q.log_variance, pm.mean, pm.log_variance));  // nats
      auto weighted =
          d.training_losses(out, x0, xt, t, noise, LossType::Simple, LossWeighting::Vlb).loss;
      // KL in bits from the bound's own term, too.
      auto vb = d.vb_terms_bpd(out, x0, xt, t) * std::log(2.0);
      for (int64_t i = 0; i < 5; ++i) {
        const auto ti = t[i].item<int64_t>();
        const double tilde =
            sch.betas[ti] * (1 - sch.alphas_cumprod[ti - 1]) / (1 - sch.alphas_cumprod[ti]);
        const double r = tilde / var[ti];
        const double c = 0.5 * (r - 1 - std::log(r));
        EXPECT_NEAR(weighted[i].item<double>() + c, kl[i].item<double>(),
                    1e-9 * kl[i].item<double>())
            << to_string(v) << " " << to_string(p) << " t=" << ti;
        EXPECT_NEAR(vb[i].item<double>(), kl[i].item<double>(), 1e-9 * kl[i].item<double>());
      }
    }
  }
  // At t = 0 the weight gives the Gaussian decoder's quadratic term ||x_0 - mu||^2 / (2 sigma_0^2).
  GaussianDiffusion d(sch);
  auto t0 = torch::zeros({5}, torch::kLong);
  auto xt = d.q_sample(x0, t0, noise);
  auto out = torch::randn_like(x0);
  auto pm = d.p_mean_variance(out, xt, t0);
  auto quad =
      mean_flat((x0 - pm.mean).pow(2)) / (2 * std::exp(sch.posterior_log_variance_clipped[0]));
  auto weighted =
      d.training_losses(out, x0, xt, t0, noise, LossType::Simple, LossWeighting::Vlb).loss;
  EXPECT_TRUE(torch::allclose(weighted, quad, 1e-9, 0));
}

TEST(LossWeighting, VlbLossAndInvalidCombinations) {
  torch::manual_seed(10);
  auto sch = Schedule::linear(1000);
  GaussianDiffusion d(sch, PredictionType::Epsilon, VarianceType::LearnedRange);
  auto x0 = torch::rand({4, 1, 3, 3}, torch::kFloat64) * 2 - 1;
  auto noise = torch::randn_like(x0);
  auto t = torch::tensor({0L, 3L, 500L, 999L});
  auto xt = d.q_sample(x0, t, noise);
  auto out = torch::randn({4, 2, 3, 3}, torch::kFloat64).requires_grad_(true);
  // --loss vlb: the bound's term, decoder NLL at t = 0 included, and both halves of the output
  // train (no stop-gradient as in the hybrid loss).
  auto vlb = d.training_losses(out, x0, xt, t, noise, LossType::Vlb);
  EXPECT_TRUE(torch::equal(vlb.loss, vlb.vb));
  EXPECT_TRUE(torch::allclose(vlb.loss, d.vb_terms_bpd(out, x0, xt, t), 1e-12, 0));
  vlb.loss.sum().backward();
  EXPECT_GT(out.grad().narrow(1, 0, 1).abs().sum().item<double>(), 0.0);
  EXPECT_GT(out.grad().narrow(1, 1, 1).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(parse_loss_type("vlb"), LossType::Vlb);

  expect_error([] { parse_loss_weighting("snr-5"); }, {"--loss-weighting", "snr-5"});
  expect_error([] { parse_loss_type("elbo"); }, {"--loss", "elbo"});
  // vlb weighting needs a fixed variance; the vlb loss takes no weighting.
  expect_error([&] { d.loss_weight_table(LossWeighting::Vlb); }, {"--loss-weighting vlb", "fixed"});
  expect_error(
      [&] { d.training_losses(out, x0, xt, t, noise, LossType::Vlb, LossWeighting::MinSnr5); },
      {"--loss-weighting min-snr-5", "--loss vlb"});
  expect_error([] { loss_weights(LossWeighting::Vlb, Schedule::linear(100), PredictionType::V); },
               {"--loss-weighting vlb"});
}
