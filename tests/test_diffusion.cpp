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

// The exact MMSE noise predictor E[eps | x_t] for data x0 ~ N(mu, s^2) elementwise (see
// GaussianData below for the derivation).
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

namespace {

double normal_cdf(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0));
}

// P(t = k) of the logit-normal sampler: the normal mass of logit(t/T) over [logit(k/T),
// logit((k+1)/T)), the ends open.
std::vector<double> logit_normal_pmf(int64_t T, double m, double s) {
  auto cdf = [&](int64_t k) {
    if (k <= 0) return 0.0;
    if (k >= T) return 1.0;
    const double u = static_cast<double>(k) / T;
    return normal_cdf((std::log(u / (1 - u)) - m) / s);
  };
  std::vector<double> p(T);
  for (int64_t k = 0; k < T; ++k) p[k] = cdf(k + 1) - cdf(k);
  return p;
}

// Pearson's statistic of the counts of t against pmf.
double chi_square(const torch::Tensor& t, const std::vector<double>& pmf) {
  auto counts = torch::bincount(t, {}, static_cast<int64_t>(pmf.size())).to(torch::kFloat64);
  const double n = static_cast<double>(t.numel());
  double x2 = 0;
  for (size_t k = 0; k < pmf.size(); ++k) {
    const double e = n * pmf[k], o = counts[static_cast<int64_t>(k)].item<double>();
    x2 += (o - e) * (o - e) / e;
  }
  return x2;
}

// Kolmogorov-Smirnov distance of the draws of t from the CDF of pmf.
double ks_distance(const torch::Tensor& t, const std::vector<double>& pmf) {
  auto counts = torch::bincount(t, {}, static_cast<int64_t>(pmf.size())).to(torch::kFloat64);
  const double n = static_cast<double>(t.numel());
  double emp = 0, cdf = 0, d = 0;
  for (size_t k = 0; k < pmf.size(); ++k) {
    emp += counts[static_cast<int64_t>(k)].item<double>() / n;
    cdf += pmf[k];
    d = std::max(d, std::abs(emp - cdf));
  }
  return d;
}

}  // namespace

// Monte Carlo against the density, fixed seed. Logit-normal, T = 20, 200,000 draws: Pearson's
// chi-square with 19 degrees of freedom stays below 43.82, its 99.9% quantile; against the
// density of a neighbouring m the same draws are far above it (the test can tell).
TEST(TimestepSampler, LogitNormalMatchesItsDensity) {
  auto gen = at::detail::createCPUGenerator(11);
  const int64_t T = 20, n = 200000;
  auto sampler = make_timestep_sampler("logit-normal", T, {0.3, 1.2, {}});
  auto draw = sampler->sample(n, torch::kCPU, gen);
  EXPECT_EQ(draw.t.min().item<int64_t>(), 0);
  EXPECT_EQ(draw.t.max().item<int64_t>(), T - 1);
  EXPECT_TRUE(torch::equal(draw.weights, torch::ones({n})));  // no reweighting (SD3, diffusers)
  EXPECT_LT(chi_square(draw.t, logit_normal_pmf(T, 0.3, 1.2)), 43.82);
  EXPECT_GT(chi_square(draw.t, logit_normal_pmf(T, 0.2, 1.2)), 43.82);
  EXPECT_GT(chi_square(draw.t, logit_normal_pmf(T, 0.3, 1.0)), 43.82);
  EXPECT_THROW(make_timestep_sampler("logit-normal", T, {0.0, 0.0, {}}), Error);
}

// EDM's log-normal noise levels on DDPM's linear schedule (T = 1000), P_mean -1.2, P_std 1.2:
// P(t = k) is the normal mass of ln sigma over the cell of ln sigma_k, sigma_k =
// sqrt((1 - abar_k) / abar_k), with edges at the midpoints. 200,000 draws: the Kolmogorov-Smirnov
// distance stays below 1.95 / sqrt(n), the 99.9% critical value (conservative for a discrete
// law), and exceeds it against P_mean -1.1.
TEST(TimestepSampler, EdmLogNormalMatchesItsDensity) {
  auto gen = at::detail::createCPUGenerator(12);
  const auto sch = Schedule::by_name("linear", 1000);
  const int64_t T = sch.num_timesteps(), n = 200000;
  auto pmf = [&](double m, double s) {
    std::vector<double> edge;
    for (int64_t k = 0; k + 1 < T; ++k) {
      const double a0 = sch.alphas_cumprod[k], a1 = sch.alphas_cumprod[k + 1];
      edge.push_back(0.25 * (std::log((1 - a0) / a0) + std::log((1 - a1) / a1)));
    }
    std::vector<double> p(T);
    for (int64_t k = 0; k < T; ++k)
      p[k] = (k + 1 < T ? normal_cdf((edge[k] - m) / s) : 1.0) -
             (k > 0 ? normal_cdf((edge[k - 1] - m) / s) : 0.0);
    return p;
  };
  auto sampler = make_timestep_sampler("edm-log-normal", T, {-1.2, 1.2, sch.alphas_cumprod});
  auto draw = sampler->sample(n, torch::kCPU, gen);
  const double critical = 1.95 / std::sqrt(static_cast<double>(n));
  EXPECT_LT(ks_distance(draw.t, pmf(-1.2, 1.2)), critical);
  EXPECT_GT(ks_distance(draw.t, pmf(-1.1, 1.2)), critical);
  // The median draw: sigma = exp(-1.2) = 0.301 is abar = 1 / (1 + sigma^2) = 0.917, which the
  // linear schedule (beta from 1e-4 to 0.02) passes between t = 87 and 88.
  EXPECT_NEAR(draw.t.to(torch::kFloat64).median().item<double>(), 87.5, 1);
  EXPECT_THROW(make_timestep_sampler("edm-log-normal", T, {-1.2, 1.2, {}}), Error);
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

// abar_t = prod_{s<=t} (1 - beta_s), from the betas alone.
std::vector<double> cumprod_alphas(const std::vector<double>& betas) {
  std::vector<double> abar(betas.size());
  double prod = 1;
  for (size_t t = 0; t < betas.size(); ++t) abar[t] = prod *= 1 - betas[t];
  return abar;
}

// q(x_{t-1} | x_t, x_0) = N(c1 x_0 + c2 x_t, var) from the betas (Ho et al. eq. 6-7):
// clang-format off
//   c1 = sqrt(abar_{t-1}) beta_t / (1 - abar_t),  c2 = sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t),
//   var = beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t),  abar_{-1} = 1.
// clang-format on
struct Posterior {
  double c1, c2, var;
};
Posterior posterior_from_betas(const std::vector<double>& betas, size_t t) {
  const auto abar = cumprod_alphas(betas);
  const double ab = abar[t], abp = t == 0 ? 1.0 : abar[t - 1], beta = betas[t];
  return {std::sqrt(abp) * beta / (1 - ab), std::sqrt(1 - beta) * (1 - abp) / (1 - ab),
          beta * (1 - abp) / (1 - ab)};
}

// sigma_t^2 of p(x_{t-1} | x_t) computed here from the betas alone: beta~_t (fixed-small) or
// beta_t (fixed-large), both with beta~_1 at t = 0, where beta~_0 = 0.
std::vector<double> reverse_variance_from_betas(const std::vector<double>& betas, bool large) {
  std::vector<double> var(betas.size());
  for (size_t t = 1; t < betas.size(); ++t)
    var[t] = large ? betas[t] : posterior_from_betas(betas, t).var;
  var[0] = posterior_from_betas(betas, 1).var;
  return var;
}

// log sigma_t^2 of a learned-range output v: v' log beta_t + (1 - v') log beta~_t with
// v' = (v + 1) / 2 (Nichol & Dhariwal eq. 15), beta~_1 standing in for beta~_0.
double learned_log_variance(const std::vector<double>& betas, size_t t, double v) {
  const double frac = (v + 1) / 2;
  const double tilde = posterior_from_betas(betas, t == 0 ? 1 : t).var;
  return frac * std::log(betas[t]) + (1 - frac) * std::log(tilde);
}

// KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2, nats.
double gaussian_kl(double m1, double var1, double m2, double var2) {
  return 0.5 * std::log(var2 / var1) + (var1 + (m1 - m2) * (m1 - m2)) / (2 * var2) - 0.5;
}

// -log P(X in the bin of x) for X ~ N(m, sd^2), the 8-bit bin [x - 1/255, x + 1/255], open to
// -inf below -1 + 1/255 and to +inf above 1 - 1/255 (Ho et al. eq. 13), nats. Tail masses through
// erfc: Phi(z) = erfc(-z / sqrt 2) / 2, 1 - Phi(z) = erfc(z / sqrt 2) / 2.
double decoder_nll(double x, double m, double sd) {
  const double lo = (x - 1 / 255.0 - m) / sd, hi = (x + 1 / 255.0 - m) / sd, r2 = std::sqrt(2.0);
  auto below = [&](double z) { return 0.5 * std::erfc(-z / r2); };
  auto above = [&](double z) { return 0.5 * std::erfc(z / r2); };
  if (x < -0.999) return -std::log(below(hi));
  if (x > 0.999) return -std::log(above(lo));
  return -std::log(lo > 0 ? above(lo) - above(hi) : below(hi) - below(lo));
}

// x_0 from a network output for x_t = a x_0 + s eps, v = a eps - s x_0 (Salimans & Ho 2022).
double x0_from_output(PredictionType p, double out, double xt, double a, double s) {
  if (p == PredictionType::Sample) return out;
  if (p == PredictionType::V) return a * xt - s * out;
  return (xt - s * out) / a;
}

// x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with each row's own t   (Ho et al. eq. 4).
torch::Tensor noised(const std::vector<double>& betas, const torch::Tensor& x0,
                     const torch::Tensor& t, const torch::Tensor& eps) {
  auto abar = torch::tensor(cumprod_alphas(betas), torch::kFloat64).index_select(0, t);
  abar = abar.view({-1, 1, 1, 1});
  return torch::sqrt(abar) * x0 + torch::sqrt(1 - abar) * eps;
}

// L_t per row in nats/dim, written out from the closed forms above for a reverse step
// N(mu~(x_t, x0_hat), exp(log_var)): the KL to q(x_{t-1} | x_t, x_0) for t > 0, the decoder NLL
// at t = 0. pred and log_var: (B, ...) like x0, log_var per element.
std::vector<double> vb_terms_by_hand(const std::vector<double>& betas, PredictionType p,
                                     const torch::Tensor& pred, const torch::Tensor& log_var,
                                     const torch::Tensor& x0, const torch::Tensor& xt,
                                     const torch::Tensor& t) {
  const auto abar = cumprod_alphas(betas);
  auto flat = [](const torch::Tensor& x) { return x.flatten(1).contiguous(); };
  const auto P = flat(pred), L = flat(log_var), X0 = flat(x0), XT = flat(xt);
  const auto B = X0.size(0), D = X0.size(1);
  std::vector<double> terms(B);
  for (int64_t i = 0; i < B; ++i) {
    const auto ti = static_cast<size_t>(t[i].item<int64_t>());
    const auto q = posterior_from_betas(betas, ti);
    const double a = std::sqrt(abar[ti]), s = std::sqrt(1 - abar[ti]);
    double sum = 0;
    for (int64_t j = 0; j < D; ++j) {
      const double x0ij = X0[i][j].item<double>(), xtij = XT[i][j].item<double>();
      const double x0_hat = x0_from_output(p, P[i][j].item<double>(), xtij, a, s);
      const double mean = q.c1 * x0_hat + q.c2 * xtij, var = std::exp(L[i][j].item<double>());
      sum += ti == 0 ? decoder_nll(x0ij, mean, std::sqrt(var))
                     : gaussian_kl(q.c1 * x0ij + q.c2 * xtij, q.var, mean, var);
    }
    terms[i] = sum / D;
  }
  return terms;
}

// 8-bit data in [-1, 1] with both edge values present, so the open edge bins are exercised.
torch::Tensor eight_bit_data(std::vector<int64_t> shape) {
  auto x0 = torch::randint(0, 256, shape, torch::kFloat64) / 127.5 - 1;
  x0.flatten()[0] = -1.0;
  x0.flatten()[1] = 1.0;
  return x0;
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
// for fixed-small), for any prediction type (the weight is expressed on the target the network
// predicts). The KL is written out here from the closed form of two Gaussians, the posterior from
// Ho et al. eq. 6-7 on the schedule's betas and the reverse mean mu~(x_t, x0_hat).
TEST(LossWeighting, VlbWeightedMseIsTheKlTerm) {
  torch::manual_seed(9);
  auto sch = Schedule::linear(1000);
  auto x0 = torch::rand({5, 2, 3, 3}, torch::kFloat64) * 2 - 1;
  auto noise = torch::randn_like(x0);
  auto t = torch::tensor({1L, 2L, 50L, 500L, 999L});
  auto xt = noised(sch.betas, x0, t, noise);
  for (auto v : {VarianceType::FixedSmall, VarianceType::FixedLarge}) {
    const auto var = reverse_variance_from_betas(sch.betas, v == VarianceType::FixedLarge);
    const auto log_var =
        torch::log(torch::tensor(var, torch::kFloat64).index_select(0, t)).view({-1, 1, 1, 1});
    for (auto p : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::V}) {
      GaussianDiffusion d(sch, p, v);
      auto out = torch::randn_like(x0);
      const auto kl = vb_terms_by_hand(sch.betas, p, out, log_var.expand_as(x0), x0, xt, t);
      auto weighted =
          d.training_losses(out, x0, xt, t, noise, LossType::Simple, LossWeighting::Vlb).loss;
      // KL in bits from the bound's own term, too.
      auto vb = d.vb_terms_bpd(out, x0, xt, t) * std::log(2.0);
      for (int64_t i = 0; i < 5; ++i) {
        const auto ti = t[i].item<int64_t>();
        // C_t = KL between N(m, beta~_t) and N(m, sigma_t^2): (r - 1 - log r) / 2, r their ratio.
        const double r = posterior_from_betas(sch.betas, ti).var / var[ti];
        const double c = 0.5 * (r - 1 - std::log(r));
        EXPECT_NEAR(weighted[i].item<double>() + c, kl[i], 1e-9 * kl[i])
            << to_string(v) << " " << to_string(p) << " t=" << ti;
        EXPECT_NEAR(vb[i].item<double>(), kl[i], 1e-9 * kl[i]);
      }
    }
  }
  // At t = 0 the weight gives the Gaussian decoder's quadratic term ||x_0 - mu||^2 / (2 sigma_0^2),
  // mu = x0_hat there (c1 = 1, c2 = 0) and sigma_0^2 = beta~_1.
  GaussianDiffusion d(sch);
  auto t0 = torch::zeros({5}, torch::kLong);
  xt = noised(sch.betas, x0, t0, noise);
  auto out = torch::randn_like(x0);
  const double abar0 = 1 - sch.betas[0];
  auto x0_hat = (xt - std::sqrt(1 - abar0) * out) / std::sqrt(abar0);
  auto quad =
      (x0 - x0_hat).pow(2).flatten(1).mean(1) / (2 * posterior_from_betas(sch.betas, 1).var);
  auto weighted =
      d.training_losses(out, x0, xt, t0, noise, LossType::Simple, LossWeighting::Vlb).loss;
  EXPECT_TRUE(torch::allclose(weighted, quad, 1e-9, 0));
}

TEST(LossWeighting, VlbLossAndInvalidCombinations) {
  torch::manual_seed(10);
  auto sch = Schedule::linear(1000);
  GaussianDiffusion d(sch, PredictionType::Epsilon, VarianceType::LearnedRange);
  auto x0 = eight_bit_data({4, 1, 3, 3});
  auto noise = torch::randn_like(x0);
  auto t = torch::tensor({0L, 3L, 500L, 999L});
  auto xt = noised(sch.betas, x0, t, noise);
  auto out = torch::randn({4, 2, 3, 3}, torch::kFloat64).requires_grad_(true);
  // --loss vlb is the bound's term L_t in bits: the KL for t > 0 and the decoder NLL at t = 0 (the
  // edge bins of x_0 = -1 and 1 at t = 0 included), written out here with the learned variance
  // exp(log_var) of each element's v.
  auto log_var = torch::empty_like(x0);
  const auto v = out.detach().narrow(1, 1, 1).contiguous();
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 9; ++j)
      log_var[i].view({-1})[j] =
          learned_log_variance(sch.betas, t[i].item<int64_t>(), v[i].view({-1})[j].item<double>());
  const auto by_hand = vb_terms_by_hand(sch.betas, PredictionType::Epsilon,
                                        out.detach().narrow(1, 0, 1), log_var, x0, xt, t);
  auto vlb = d.training_losses(out, x0, xt, t, noise, LossType::Vlb);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_NEAR(vlb.loss[i].item<double>(), by_hand[i] / std::log(2.0), 1e-9 * by_hand[i])
        << "t=" << t[i].item<int64_t>();
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_NEAR(vlb.vb[i].item<double>(), by_hand[i] / std::log(2.0), 1e-9 * by_hand[i]);
  // Both halves of the output train (no stop-gradient as in the hybrid loss).
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

// L_hybrid = L_simple + lambda L_vlb with lambda = 0.001 and L_vlb = sum_t L_t = T E_t[L_t]
// (Nichol & Dhariwal sec. 3.1), so one sample's term L_t enters scaled by T / 1000, as
// improved-diffusion's training_losses scales it: a factor 1 at T = 1000 and 4 at T = 4000. MSE and
// L_t are written out here (vb_terms_by_hand).
TEST(Losses, HybridLossScalesTheBoundTermByTOver1000) {
  torch::manual_seed(11);
  for (int64_t T : {1000, 4000}) {
    for (const std::string name : {"linear", "cosine"}) {
      auto sch = Schedule::by_name(name, T);
      GaussianDiffusion d(sch, PredictionType::Epsilon, VarianceType::LearnedRange);
      auto x0 = eight_bit_data({4, 1, 3, 3});
      auto noise = torch::randn_like(x0);
      auto t = torch::tensor({0L, 1L, T / 2, T - 1});
      auto xt = noised(sch.betas, x0, t, noise);
      auto eps = torch::randn_like(x0);
      const double v = 0.4;  // one variance interpolation value everywhere
      auto log_var = torch::empty_like(x0);
      for (int64_t i = 0; i < 4; ++i)
        log_var[i].fill_(learned_log_variance(sch.betas, t[i].item<int64_t>(), v));
      const auto vb = vb_terms_by_hand(sch.betas, PredictionType::Epsilon, eps, log_var, x0, xt, t);
      auto h = d.training_losses(torch::cat({eps, torch::full_like(eps, v)}, 1), x0, xt, t, noise,
                                 LossType::Hybrid);
      for (int64_t i = 0; i < 4; ++i) {
        const double mse = (eps[i] - noise[i]).pow(2).mean().item<double>();
        const double vb_bits = vb[i] / std::log(2.0);
        const auto where = name + " T=" + std::to_string(T) + " t=" + std::to_string(i);
        EXPECT_NEAR(h.mse[i].item<double>(), mse, 1e-12 * mse) << where;
        EXPECT_NEAR(h.vb[i].item<double>(), vb_bits, 1e-9 * vb_bits) << where;
        EXPECT_NEAR(h.loss[i].item<double>(), mse + T / 1000.0 * vb_bits, 1e-9 * (mse + vb_bits))
            << where;
      }
    }
  }
}

// A process and a table beside it: keyed by a table's offset from the process, as the device
// cache once was, b's table would get a's values, since b.d is a copy of a.d sharing its cache.
struct ProcessAndTable {
  GaussianDiffusion d;
  std::vector<double> table;
};

TEST(GaussianDiffusion, ExtractGivesEachTableItsOwnValues) {
  auto sch = Schedule::linear(1000);
  ProcessAndTable a{GaussianDiffusion(sch), std::vector<double>(1000, 0.25)};
  ProcessAndTable b{a.d, std::vector<double>(1000, -3.0)};
  auto t = torch::tensor({0L, 417L, 999L});
  auto x = torch::zeros({3, 2, 2, 2}, torch::kFloat64);
  EXPECT_TRUE(
      torch::equal(a.d.extract(a.table, t, x), torch::full({3, 1, 1, 1}, 0.25, x.options())));
  EXPECT_TRUE(
      torch::equal(b.d.extract(b.table, t, x), torch::full({3, 1, 1, 1}, -3.0, x.options())));
  // The process's own tables, each asked for twice, from the original and from the copy: betas
  // from 1e-4 to 0.02 in 999 equal steps (Ho et al. sec. 4), abar_t their cumulative product.
  const auto abar = cumprod_alphas(sch.betas);
  for (const auto* d : {&a.d, &b.d, &a.d}) {
    auto betas = d->extract(d->schedule().betas, t, x);
    auto ab = d->extract(d->schedule().alphas_cumprod, t, x);
    for (int64_t i = 0; i < 3; ++i) {
      const auto ti = t[i].item<int64_t>();
      EXPECT_NEAR(betas[i].item<double>(), 1e-4 + ti * (0.02 - 1e-4) / 999, 1e-15);
      EXPECT_NEAR(ab[i].item<double>(), abar[ti], 1e-14);
    }
  }
  // A table of another length, and one that dies after the call, on a float32 input.
  const std::vector<double> three = {10, 20, 30};
  auto e = a.d.extract(three, torch::tensor({2L, 0L}), torch::zeros({2, 1}, torch::kFloat32));
  EXPECT_EQ(e.scalar_type(), torch::kFloat32);
  EXPECT_EQ(e.sizes(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(e[0][0].item<float>(), 30.0f);
  EXPECT_EQ(e[1][0].item<float>(), 10.0f);
  for (double value : {1.5, 2.5}) {
    auto one = a.d.extract(std::vector<double>(1000, value), t, x);
    EXPECT_TRUE(torch::equal(one, torch::full({3, 1, 1, 1}, value, x.options())));
  }
}

namespace {

// Continuous data x_0 ~ N(mu, s^2) per dimension. With x_t = a x_0 + sigma eps, a^2 = abar_t,
// sigma^2 = 1 - abar_t, x_t ~ N(a mu, V_t), V_t = abar_t s^2 + 1 - abar_t, and by Gaussian
// conditioning
// clang-format off
//   E[eps | x_t] = sigma (x_t - a mu) / V_t,   Var[x_0 | x_t] = s^2 (1 - abar_t) / V_t,
// clang-format on
// E[x_0 | x_t] being the x_0 that eps-prediction reads from E[eps | x_t].
struct GaussianData {
  std::vector<double> betas, abar;
  torch::Tensor mu;  // (1, C, H, W)
  double s;

  double x0_variance_given_xt(size_t t) const {
    return s * s * (1 - abar[t]) / (abar[t] * s * s + 1 - abar[t]);
  }
  torch::Tensor optimal_eps(const torch::Tensor& xt, const torch::Tensor& t) const {
    auto ab = torch::tensor(abar, torch::kFloat64).index_select(0, t).view({-1, 1, 1, 1});
    return torch::sqrt(1 - ab) * (xt - torch::sqrt(ab) * mu) / (ab * s * s + 1 - ab);
  }
};

// The reverse variance sigma_t^2 the test gives p(x_{t-1} | x_t), t >= 1: beta~_t, beta_t, or for
// learned-range the optimum Var[x_{t-1} | x_t] = beta~_t + c1^2 Var[x_0 | x_t] (the variance of
// q(x_{t-1} | x_t, x_0) plus that of its mean c1 x_0 + c2 x_t given x_t). At t = 0 the decoder
// takes beta~_1 for the fixed variances and, for learned-range, v = 0 (the geometric mean of beta_0
// and beta~_1).
double reverse_variance(const GaussianData& g, VarianceType v, size_t t) {
  if (t == 0)
    return v == VarianceType::LearnedRange ? std::exp(learned_log_variance(g.betas, 0, 0.0))
                                           : posterior_from_betas(g.betas, 1).var;
  const auto q = posterior_from_betas(g.betas, t);
  if (v == VarianceType::FixedSmall) return q.var;
  if (v == VarianceType::FixedLarge) return g.betas[t];
  return q.var + q.c1 * q.c1 * g.x0_variance_given_xt(t);
}

// E[L_0] in nats/dim: -log of the decoder's bin mass at d = x_0 - E[x_0 | x_1] ~ N(0, R_0),
// independent of x_0's value away from the edge bins, by Simpson's rule over d in +-8 sqrt(R_0).
double expected_decoder_nll(const GaussianData& g, double variance) {
  const double r = std::sqrt(g.x0_variance_given_xt(0)), sd = std::sqrt(variance);
  const int n = 4000;  // even
  const double lo = -8, h = 16.0 / n;
  double sum = 0;
  for (int k = 0; k <= n; ++k) {
    const double z = lo + k * h, w = (k == 0 || k == n) ? 1 : (k % 2 ? 4 : 2);
    sum +=
        w * std::exp(-0.5 * z * z) / std::sqrt(2 * std::acos(-1.0)) * decoder_nll(0.0, -r * z, sd);
  }
  return sum * h / 3;
}

// E[L_t] in nats/dim for the optimal eps and reverse variance sigma_t^2, t >= 1: the means of q and
// p differ by c1 (x_0 - E[x_0 | x_t]), so the closed-form KL of two Gaussians averages to
// clang-format off
//   E[L_t] = 1/2 log(sigma_t^2 / beta~_t) + (beta~_t + c1^2 Var[x_0 | x_t]) / (2 sigma_t^2) - 1/2.
// clang-format on
double expected_kl_term(const GaussianData& g, VarianceType v, size_t t) {
  const auto q = posterior_from_betas(g.betas, t);
  const double var = reverse_variance(g, v, t);
  return 0.5 * std::log(var / q.var) +
         (q.var + q.c1 * q.c1 * g.x0_variance_given_xt(t)) / (2 * var) - 0.5;
}

// E[L_T] in nats/dim, L_T = KL(N(a x_0, sigma^2) || N(0, 1)) = (a^2 x_0^2 + sigma^2 - 1 - log
// sigma^2) / 2 with E[x_0^2] = mu^2 + s^2 averaged over the dimensions.
double expected_prior(const GaussianData& g) {
  const double ab = g.abar.back(), mu2 = g.mu.pow(2).mean().item<double>();
  return 0.5 * (ab * (mu2 + g.s * g.s) + (1 - ab) - 1 - std::log(1 - ab));
}

// The model output the test gives the process: E[eps | x_t], and for learned-range the v whose
// interpolated variance is reverse_variance(): v = 2 (log sigma_t^2 - log beta~_t) / (log beta_t -
// log beta~_t) - 1 (Nichol & Dhariwal eq. 15 solved for v), v = 0 at t = 0.
ModelFn optimal_model(const GaussianData& g, VarianceType v) {
  std::vector<double> v_table(g.betas.size(), 0.0);
  for (size_t t = 1; t < g.betas.size(); ++t) {
    const double log_tilde = std::log(posterior_from_betas(g.betas, t).var);
    const double log_var = std::log(reverse_variance(g, v, t));
    v_table[t] = 2 * (log_var - log_tilde) / (std::log(g.betas[t]) - log_tilde) - 1;
  }
  auto v_of_t = torch::tensor(v_table, torch::kFloat64);
  return [&g, v, v_of_t](const torch::Tensor& xt, const torch::Tensor& t) {
    auto eps = g.optimal_eps(xt, t);
    if (v != VarianceType::LearnedRange) return eps;
    return torch::cat({eps, v_of_t.index_select(0, t).view({-1, 1, 1, 1}).expand_as(eps)}, 1);
  };
}

}  // namespace

// The bound of continuous Gaussian data under the exact model, every term against its closed form:
// calc_bpd_loop's L_t for t >= 1 (the KL terms) and L_T exactly in expectation, L_0 (the decoder,
// whose bins are centred on each x_0) against the 1-D integral of expected_decoder_nll; the edge
// bins are ignored there, P(|x_0| > 0.999) <= P(Z > 4.99) = 3e-7 per dimension for mu in
// [-0.5, 0.5], s = 0.1. Monte Carlo over B draws of x_0 (and of the noise of each q_sample): a
// row's term is its mean over the D dimensions, the rows are i.i.d., so each estimate's standard
// error is the rows' sample standard deviation / sqrt(B), and the total's is that of the rows'
// totals, which keeps the covariance between terms of one row. Each is asserted within 3 standard
// errors of the closed form. The terms share one draw of x_0, so they move together: the large-t
// terms all follow the draw's second moment (with seed 2 instead of 12 it is 2.99 standard errors
// low and takes every one of them past 3).
TEST(Likelihood, BoundOfGaussianDataMatchesItsClosedForm) {
  const int64_t T = 50, B = 4000;
  const double ln2 = std::log(2.0);
  double max_z = 0;
  int64_t checks = 0, over_2 = 0;
  for (const std::string name : {"linear", "cosine"}) {
    auto sch = Schedule::by_name(name, T);
    GaussianData g{sch.betas, cumprod_alphas(sch.betas),
                   torch::linspace(-0.5, 0.5, 16, torch::kFloat64).view({1, 1, 4, 4}), 0.1};
    torch::manual_seed(12);
    auto x0 = g.mu + g.s * torch::randn({B, 1, 4, 4}, torch::kFloat64);
    for (auto v :
         {VarianceType::FixedSmall, VarianceType::FixedLarge, VarianceType::LearnedRange}) {
      GaussianDiffusion d(sch, PredictionType::Epsilon, v);
      BpdOptions options;
      options.seed = 13;
      auto r = calc_bpd_loop(d, optimal_model(g, v), x0, options);
      ASSERT_FALSE(r.estimate);
      ASSERT_EQ(r.timesteps.size(), static_cast<size_t>(T));
      double total = expected_prior(g) + expected_decoder_nll(g, reverse_variance(g, v, 0));
      for (size_t t = 1; t < static_cast<size_t>(T); ++t) total += expected_kl_term(g, v, t);
      auto check = [&](const torch::Tensor& rows, double expected, const std::string& what) {
        const double se = rows.std().item<double>() / std::sqrt(double(B));
        const double z = (rows.mean().item<double>() - expected) / se;
        EXPECT_LT(std::abs(z), 3.0)
            << name << " " << to_string(v) << " " << what << ": " << rows.mean().item<double>()
            << " vs " << expected << " bits/dim, se " << se;
        max_z = std::max(max_z, std::abs(z));
        over_2 += std::abs(z) > 2;
        ++checks;
      };
      check(r.prior_bpd, expected_prior(g) / ln2, "L_T");
      check(r.terms_bpd.select(1, 0), expected_decoder_nll(g, reverse_variance(g, v, 0)) / ln2,
            "L_0");
      for (int64_t t = 1; t < T; ++t)
        check(r.terms_bpd.select(1, t), expected_kl_term(g, v, t) / ln2, "L_" + std::to_string(t));
      check(r.total_bpd, total / ln2, "total");
      std::cout << name << " " << to_string(v) << ": bound " << r.total_bpd.mean().item<double>()
                << " bits/dim, closed form " << total / ln2 << "\n";
    }
  }
  std::cout << checks << " checks, max |z| " << max_z << ", " << over_2 << " with |z| > 2\n";
}
