// Sample-quality metrics against closed forms, base64 against RFC 4648's vectors, the HTML report
// on a fake run folder, and the NLL evaluation on an analytic model and on trained networks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <regex>

#include "diffuse/core/error.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/io/base64.h"
#include "diffuse/eval/frechet.h"
#include "diffuse/eval/nll.h"
#include "diffuse/report/report.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/image.h"
#include "diffuse/models/presets.h"
#include "diffuse/pipeline/load_model.h"
#include "diffuse/pipeline/model_fn.h"
#include "diffuse/train/trainer.h"

namespace fs = std::filesystem;
using namespace diffuse;

namespace {

fs::path temp_dir(const std::string& name) {
  auto p =
      fs::temp_directory_path() / ("diffuse_test_eval_" + name + "_" + std::to_string(::getpid()));
  remove_tree(p.string());
  fs::create_directories(p);
  return p;
}

void write_text(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

// Samples of N(mu, L L^T): (N, D) float64.
torch::Tensor gaussian_samples(int64_t n, const torch::Tensor& mu, const torch::Tensor& chol,
                               uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto z = at::randn({n, mu.size(0)}, gen, torch::kFloat64);
  return torch::matmul(z, chol.t()) + mu;
}

}  // namespace

// ---- Frechet distance ----------------------------------------------------------------------

TEST(Frechet, FeatureSetWithItselfIsZero) {
  auto gen = at::detail::createCPUGenerator(1);
  auto f = at::randn({500, 32}, gen, torch::kFloat64) * 3 + 1;
  // Exact in exact arithmetic; round-off in the eigendecompositions leaves ~1e-9 of a trace ~300.
  EXPECT_NEAR(frechet_distance(f, f), 0.0, 1e-6);
  auto g = f.index_select(0, torch::randperm(500, gen, torch::kLong));
  EXPECT_NEAR(frechet_distance(f, g), 0.0, 1e-6);  // order of the rows does not matter
}

TEST(Frechet, StatisticsAreMeanAndUnbiasedCovariance) {
  auto f = torch::tensor({{1.0, 2.0}, {3.0, 6.0}, {5.0, 4.0}}, torch::kFloat64);
  auto st = feature_stats(f);
  EXPECT_EQ(st.n, 3);
  EXPECT_NEAR(st.mu[0].item<double>(), 3.0, 1e-12);
  EXPECT_NEAR(st.mu[1].item<double>(), 4.0, 1e-12);
  // Deviations (-2,-2), (0,2), (2,0): sums of products 8, 4, 8 over N - 1 = 2.
  EXPECT_NEAR(st.sigma[0][0].item<double>(), 4.0, 1e-12);
  EXPECT_NEAR(st.sigma[0][1].item<double>(), 2.0, 1e-12);
  EXPECT_NEAR(st.sigma[1][1].item<double>(), 4.0, 1e-12);
}

TEST(Frechet, DiagonalCovariancesMatchClosedForm) {
  // With diagonal S1, S2 the square root is elementwise:
  // FD = ||m1 - m2||^2 + sum_i (s1_i + s2_i - 2 sqrt(s1_i s2_i)) = ||m1-m2||^2 + ||sqrt s1 - sqrt
  // s2||^2
  auto gen = at::detail::createCPUGenerator(2);
  const int64_t d = 16;
  auto m1 = at::randn({d}, gen, torch::kFloat64), m2 = at::randn({d}, gen, torch::kFloat64);
  auto v1 = at::rand({d}, gen, torch::kFloat64) * 3 + 0.1;
  auto v2 = at::rand({d}, gen, torch::kFloat64) * 3 + 0.1;
  const double expected =
      (m1 - m2).pow(2).sum().item<double>() + (v1.sqrt() - v2.sqrt()).pow(2).sum().item<double>();
  FeatureStats a{m1, torch::diag(v1), 100}, b{m2, torch::diag(v2), 100};
  EXPECT_NEAR(frechet_distance(a, b), expected, 1e-9 * expected);

  // And from samples: the estimate converges at rate ~1/sqrt(N).
  auto fa = gaussian_samples(200000, m1, torch::diag(v1.sqrt()), 3);
  auto fb = gaussian_samples(200000, m2, torch::diag(v2.sqrt()), 4);
  EXPECT_NEAR(frechet_distance(fa, fb), expected, 0.02 * expected);
}

TEST(Frechet, NonDiagonalTwoByTwoMatchesClosedForm) {
  // For 2x2 PSD M: Tr(M^1/2) = sqrt(Tr M + 2 sqrt(det M)), and M = S1^1/2 S2 S1^1/2 has
  // Tr M = Tr(S1 S2), det M = det S1 det S2, so Tr((S1^1/2 S2 S1^1/2)^1/2) needs no square root
  // of a matrix at all.
  auto s1 = torch::tensor({{2.0, 0.8}, {0.8, 1.0}}, torch::kFloat64);
  auto s2 = torch::tensor({{1.5, -0.6}, {-0.6, 0.7}}, torch::kFloat64);
  auto m1 = torch::tensor({0.3, -1.0}, torch::kFloat64),
       m2 = torch::tensor({1.0, 0.5}, torch::kFloat64);
  const double tr = torch::matmul(s1, s2).trace().item<double>();
  const double det = s1.det().item<double>() * s2.det().item<double>();
  const double tr_sqrt = std::sqrt(tr + 2 * std::sqrt(det));
  EXPECT_NEAR(trace_sqrt_product(s1, s2), tr_sqrt, 1e-12);
  EXPECT_NEAR(trace_sqrt_product(s2, s1), tr_sqrt, 1e-12);
  const double expected = (m1 - m2).pow(2).sum().item<double>() + s1.trace().item<double>() +
                          s2.trace().item<double>() - 2 * tr_sqrt;
  EXPECT_NEAR(frechet_distance(FeatureStats{m1, s1, 10}, FeatureStats{m2, s2, 10}), expected,
              1e-12);

  auto fa = gaussian_samples(200000, m1, torch::linalg_cholesky(s1), 5);
  auto fb = gaussian_samples(200000, m2, torch::linalg_cholesky(s2), 6);
  EXPECT_NEAR(frechet_distance(fa, fb), expected, 0.03 * expected);
}

TEST(Frechet, SingularCovarianceIsFiniteAndSymmetric) {
  // Rank-1 covariances: eigenvalues at round-off level on either side of zero are clamped.
  auto u = torch::tensor({1.0, 2.0, -1.0}, torch::kFloat64);
  auto v = torch::tensor({0.5, 0.0, 1.0}, torch::kFloat64);
  FeatureStats a{torch::zeros({3}, torch::kFloat64), torch::outer(u, u), 5};
  FeatureStats b{torch::zeros({3}, torch::kFloat64), torch::outer(v, v), 5};
  // Tr((uu^T vv^T)^1/2) = |u.v| for rank-1 matrices.
  const double expected =
      u.dot(u).item<double>() + v.dot(v).item<double>() - 2 * std::abs(u.dot(v).item<double>());
  EXPECT_NEAR(frechet_distance(a, b), expected, 1e-7);
  EXPECT_NEAR(frechet_distance(b, a), expected, 1e-7);
}

TEST(Frechet, RejectsMismatchedInput) {
  auto f = torch::randn({10, 4}, torch::kFloat64);
  EXPECT_THROW(frechet_distance(f, torch::randn({10, 5}, torch::kFloat64)), Error);
  EXPECT_THROW(feature_stats(torch::randn({1, 4})), Error);
  EXPECT_THROW(feature_stats(torch::randn({10})), Error);
  auto bad = f.clone();
  bad[3][2] = NAN;
  EXPECT_THROW(feature_stats(bad), Error);
}

// ---- Inception score -----------------------------------------------------------------------

TEST(InceptionScore, OneHotUniformGivesNumberOfClasses) {
  for (int64_t k : {2, 10, 7}) {
    auto labels = torch::arange(5 * k, torch::kLong) % k;
    auto probs = torch::one_hot(labels, k).to(torch::kFloat64);
    EXPECT_NEAR(inception_score(probs).mean, static_cast<double>(k), 1e-9) << k;
    // Each split of 5k rows in order holds every class once per k rows.
    auto is5 = inception_score(probs, 5);
    EXPECT_NEAR(is5.mean, static_cast<double>(k), 1e-9);
    EXPECT_NEAR(is5.std, 0.0, 1e-9);
  }
}

TEST(InceptionScore, IdenticalPredictionsGiveOne) {
  auto gen = at::detail::createCPUGenerator(7);
  auto row = torch::softmax(at::randn({1, 10}, gen, torch::kFloat64), 1);
  EXPECT_NEAR(inception_score(row.repeat({300, 1})).mean, 1.0, 1e-9);
  // Confident but all the same class: also 1.
  EXPECT_NEAR(
      inception_score(torch::one_hot(torch::full({50}, 3, torch::kLong), 10).to(torch::kFloat64))
          .mean,
      1.0, 1e-9);
}

TEST(InceptionScore, BetweenOneAndClassesForMixedPredictions) {
  auto gen = at::detail::createCPUGenerator(8);
  auto probs = torch::softmax(at::randn({400, 10}, gen, torch::kFloat64) * 2, 1);
  const double is = inception_score(probs).mean;
  EXPECT_GT(is, 1.0);
  EXPECT_LT(is, 10.0);
  EXPECT_THROW(inception_score(probs, 0), Error);
  EXPECT_THROW(inception_score(probs, 401), Error);
  EXPECT_THROW(inception_score(-probs), Error);
}

// ---- base64 --------------------------------------------------------------------------------

TEST(Base64, Rfc4648Vectors) {
  const std::vector<std::pair<std::string, std::string>> v = {{"", ""},
                                                              {"f", "Zg=="},
                                                              {"fo", "Zm8="},
                                                              {"foo", "Zm9v"},
                                                              {"foob", "Zm9vYg=="},
                                                              {"fooba", "Zm9vYmE="},
                                                              {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, coded] : v) {
    EXPECT_EQ(base64_encode(plain), coded);
    EXPECT_EQ(base64_decode(coded), plain);
  }
}

TEST(Base64, BinaryBytesRoundTripAndUseWholeAlphabet) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  EXPECT_EQ(base64_encode(std::string("\xff\xff\xfe", 3)), "///+");
  EXPECT_EQ(base64_encode(std::string("\xfb\xef\xbe", 3)), "++++");
  EXPECT_EQ(base64_encode(std::string("\0\0\0", 3)), "AAAA");
  for (size_t len = 0; len < all.size(); len += 37)
    EXPECT_EQ(base64_decode(base64_encode(all.substr(0, len))), all.substr(0, len));
  EXPECT_THROW(base64_decode("Zm9"), Error);
  EXPECT_THROW(base64_decode("Zm9*"), Error);
  EXPECT_THROW(base64_decode("Z=9v"), Error);
  EXPECT_THROW(base64_decode("Zh=="), Error);  // non-zero bits after the last byte
}

// ---- report --------------------------------------------------------------------------------

namespace {

// Every data: URI in the page, decoded.
std::vector<std::string> data_uris(const std::string& html) {
  std::vector<std::string> out;
  std::regex re("src=\"data:image/png;base64,([A-Za-z0-9+/=]*)\"");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), re); it != std::sregex_iterator();
       ++it)
    out.push_back(base64_decode((*it)[1].str()));
  return out;
}

}  // namespace

TEST(Report, FakeRunFolderHasAllSectionsAndValidImages) {
  auto run = temp_dir("report");
  write_text(run / "config.json",
             R"({"model": "fmnist-small", "data": "fashion-mnist", "lr": 0.0002})");
  std::string log;
  for (int s = 10; s <= 200; s += 10)
    log += "{\"step\": " + std::to_string(s) + ", \"loss\": " + std::to_string(1.0 / s) +
           ", \"grad_norm\": 1.0, \"lr\": 0.0002, \"images_per_s\": " + std::to_string(100 + s) +
           ", \"wall_time\": " + std::to_string(s / 10.0) + "}\n";
  log += "{\"step\": 21";  // a line cut short by a kill
  write_text(run / "log.jsonl", log);
  // Grids named by step, written out of order; one not a grid.
  fs::create_directories(run / "grids");
  for (int s : {1000, 200, 30}) {
    char name[64];
    std::snprintf(name, sizeof name, "step_%08d.png", s);
    save_grid_png((run / "grids" / name).string(), torch::full({4, 1, 8, 8}, s / 1000.0), 2);
  }
  write_text(run / "grids" / "notes.txt", "x");
  write_text(run / "eval" / "nll.json",
             R"({"nll": 3.4567, "se": 0.012, "n": 100, "estimate": true})");
  write_text(
      run / "eval" / "fd.json",
      R"({"fd_fmnist": 12.5, "is_fmnist": 7.25, "reference": {"fd_fmnist_train_vs_test": 0.8}})");

  const auto html = render_report_html(run.string());
  for (const char* s :
       {"<!DOCTYPE html>", "id=\"summary\"", "id=\"curves\"", "id=\"grids\"", "id=\"eval\"",
        "id=\"config\"", "id=\"warnings\"", "fmnist-small", "NLL (bits/dim)", "3.457", "FD-FMNIST",
        "12.5", "IS-FMNIST", "7.25", "reference.fd_fmnist_train_vs_test", "log.jsonl:21"})
    EXPECT_NE(html.find(s), std::string::npos) << s;
  EXPECT_EQ(html.find("FID"), std::string::npos);
  // Grids in step order.
  const auto p30 = html.find("step 30<"), p200 = html.find("step 200<"),
             p1000 = html.find("step 1000<");
  ASSERT_NE(p30, std::string::npos);
  ASSERT_NE(p200, std::string::npos);
  ASSERT_NE(p1000, std::string::npos);
  EXPECT_LT(p30, p200);
  EXPECT_LT(p200, p1000);
  // Two plots + three grids, each a PNG that decodes to an image.
  const auto uris = data_uris(html);
  ASSERT_EQ(uris.size(), 5u);
  const auto png_path = (run / "decoded.png").string();
  for (const auto& bytes : uris) {
    ASSERT_GE(bytes.size(), 8u);
    EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
    write_text(png_path, bytes);
    auto img = load_image(png_path, 0);
    EXPECT_GT(img.size(1), 0);
  }
  // The grid at step 30 is the one we wrote (same pixels as make_grid).
  write_text(png_path, uris[2]);
  EXPECT_TRUE(torch::equal(load_image(png_path, 1), make_grid(torch::full({4, 1, 8, 8}, 0.03), 2)));

  const auto out = (run / "report.html").string();
  write_report(run.string(), out);
  EXPECT_TRUE(fs::exists(out));
  remove_tree(run.string());
}

TEST(Report, ThinsManyGridsKeepingFirstAndLast) {
  auto run = temp_dir("report_thin");
  write_text(run / "config.json", "{}");
  fs::create_directories(run / "grids");
  for (int s = 1; s <= 20; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "step_%08d.png", s * 100);
    save_grid_png((run / "grids" / name).string(), torch::zeros({1, 1, 4, 4}), 1);
  }
  ReportOptions o;
  o.max_grids = 5;
  const auto html = render_report_html(run.string(), o);
  EXPECT_EQ(data_uris(html).size(), 5u);  // no log: no plots
  EXPECT_NE(html.find("step 100<"), std::string::npos);
  EXPECT_NE(html.find("step 2000<"), std::string::npos);
  EXPECT_NE(html.find("5 of 20 grids"), std::string::npos);
  remove_tree(run.string());
}

TEST(Report, EscapesTextAndRejectsNonRunFolders) {
  EXPECT_EQ(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
  auto dir = temp_dir("report_empty");
  EXPECT_THROW(render_report_html(dir.string()), Error);
  EXPECT_THROW(render_report_html((dir / "missing").string()), Error);
  write_text(dir / "config.json", R"({"model": "<script>alert(1)</script>"})");
  const auto html = render_report_html(dir.string());
  EXPECT_EQ(html.find("<script>"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;"), std::string::npos);
  remove_tree(dir.string());
}

TEST(Report, ReadsTrainingLogSkippingBadLines) {
  auto dir = temp_dir("log");
  write_text(dir / "log.jsonl",
             "{\"step\": 1, \"loss\": 0.5, \"images_per_s\": 10}\n\nnot json\n[1,2]\n"
             "{\"loss\": 1}\n{\"step\": 2, \"loss\": 0.25, \"lr\": 0.001}\n");
  std::vector<std::string> warnings;
  auto log = read_training_log((dir / "log.jsonl").string(), &warnings);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].step, 1);
  EXPECT_DOUBLE_EQ(log[0].images_per_s, 10.0);
  EXPECT_TRUE(std::isnan(log[0].lr));
  EXPECT_DOUBLE_EQ(log[1].loss, 0.25);
  EXPECT_EQ(warnings.size(), 3u);
  EXPECT_TRUE(read_training_log((dir / "none.jsonl").string(), nullptr).empty());
  remove_tree(dir.string());
}

// ---- NLL -----------------------------------------------------------------------------------

namespace {

// Data x0 ~ N(mu, s^2) per pixel, quantised to 8 bits: (n, 1, side, side) uint8.
struct GaussianData {
  torch::Tensor mu;  // (1, 1, side, side) float64 in [-1, 1] units
  double s = 0.2;
  torch::Tensor images;
};

GaussianData gaussian_data(int64_t n, int64_t side, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  GaussianData d;
  d.mu = (at::rand({1, 1, side, side}, gen, torch::kFloat64) - 0.5) * 0.8;
  auto x = d.mu + d.s * at::randn({n, 1, side, side}, gen, torch::kFloat64);
  d.images = ((x + 1) * 127.5).round().clamp(0, 255).to(torch::kUInt8);
  return d;
}

// The exact minimum-MSE noise predictor for that (continuous) data, from
// /work/shared/golden/README.md: eps = sqrt(1 - abar)(x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar).
ModelFn analytic_model(const GaussianDiffusion& d, const torch::Tensor& mu, double s, int64_t pad) {
  auto m = pad > 0 ? torch::constant_pad_nd(mu, {pad, pad, pad, pad}, -1.0) : mu;
  const auto abar_table = d.schedule().alphas_cumprod;
  return [abar_table, m, s](const torch::Tensor& x_t, const torch::Tensor& t) {
    auto abar =
        torch::tensor(abar_table, torch::kFloat64).index_select(0, t.cpu()).view({-1, 1, 1, 1});
    // Padding pixels are always -1: their variance is 0 there.
    auto var = torch::where(m == -1.0, torch::zeros_like(m), torch::full_like(m, s * s));
    return (1 - abar).sqrt() * (x_t - abar.sqrt() * m) / (abar * var + 1 - abar);
  };
}

}  // namespace

TEST(Nll, MatchesCalcBpdLoopOnAnAnalyticModel) {
  const auto data = gaussian_data(6, 4, 21);
  GaussianDiffusion diffusion(Schedule::linear(200));
  const auto model = analytic_model(diffusion, data.mu, data.s, 0);
  NllOptions o;
  o.batch = 6;
  o.bpd.seed = 5;
  auto r = evaluate_nll(diffusion, model, data.images, 0, o);

  auto x0 = data.images.to(torch::kFloat64) / 127.5 - 1.0;
  BpdOptions bo;
  bo.seed = 5;
  auto direct = calc_bpd_loop(diffusion, model, x0, bo);
  EXPECT_EQ(r.n, 6);
  EXPECT_FALSE(r.estimate);
  EXPECT_DOUBLE_EQ(r.dims_ratio, 1.0);
  EXPECT_TRUE(torch::allclose(r.per_image, direct.total_bpd, 1e-12, 1e-12));
  EXPECT_NEAR(r.nll, direct.total_bpd.mean().item<double>(), 1e-12);
  EXPECT_NEAR(r.se, direct.total_bpd.std().item<double>() / std::sqrt(6.0), 1e-12);
  EXPECT_NEAR(r.prior_mean, direct.prior_bpd.mean().item<double>(), 1e-12);
  ASSERT_EQ(r.term_mean.size(), 200u);
  auto term_mean = direct.terms_bpd.mean(0);
  for (int64_t k : {0, 1, 50, 199})
    EXPECT_NEAR(r.term_mean[k], term_mean[k].item<double>(), 1e-12) << k;

  // Batches of 4 and 2: batch b draws its noise with seed + b.
  o.batch = 4;
  auto split = evaluate_nll(diffusion, model, data.images, 0, o);
  auto first = calc_bpd_loop(diffusion, model, x0.slice(0, 0, 4), bo);
  bo.seed = 6;
  auto second = calc_bpd_loop(diffusion, model, x0.slice(0, 4, 6), bo);
  EXPECT_TRUE(torch::allclose(split.per_image.slice(0, 0, 4), first.total_bpd, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(split.per_image.slice(0, 4, 6), second.total_bpd, 1e-12, 1e-12));
}

TEST(Nll, PaddedInputIsCountedPerDataDimension) {
  const auto data = gaussian_data(3, 4, 22);
  GaussianDiffusion diffusion(Schedule::linear(100));
  const auto model = analytic_model(diffusion, data.mu, data.s, 2);
  NllOptions o;
  o.batch = 3;
  o.bpd.terms = 10;
  auto r = evaluate_nll(diffusion, model, data.images, 2, o);
  auto x0 =
      torch::constant_pad_nd(data.images.to(torch::kFloat64) / 127.5 - 1.0, {2, 2, 2, 2}, -1.0);
  BpdOptions bo;
  bo.terms = 10;
  auto direct = calc_bpd_loop(diffusion, model, x0, bo);
  EXPECT_DOUBLE_EQ(r.dims_ratio, 64.0 / 16.0);
  EXPECT_TRUE(r.estimate);
  EXPECT_EQ(r.timesteps, direct.timesteps);
  EXPECT_TRUE(torch::allclose(r.per_image, direct.total_bpd * 4.0, 1e-12, 1e-12));
  EXPECT_NE(nll_summary_line(r).find("estimate from 10 of 100 terms"), std::string::npos);
}

TEST(Nll, AnalyticModelBoundIsNearTheDataEntropy) {
  // The best any model can do on quantised N(mu, s^2) data is its entropy: per pixel
  // -log2 P(bin), P from the Gaussian CDF over the bin (edge bins take the tails). The bound
  // with the exact continuous denoiser must lie above that; it does so by about 0.7 bits here,
  // most of it in L_0 and the first KL terms, where the noise (std 0.01 at t = 0) is wider than
  // a bin (0.0078) and the fixed decoder variance does not fit discrete data. Wrong units
  // (nats, or per padded dimension) would miss the window by more than a bit.
  const auto data = gaussian_data(64, 4, 23);
  GaussianDiffusion diffusion(Schedule::linear(1000));
  NllOptions o;
  o.batch = 64;
  auto r =
      evaluate_nll(diffusion, analytic_model(diffusion, data.mu, data.s, 0), data.images, 0, o);
  auto k = data.images.to(torch::kFloat64);
  auto cdf = [&](const torch::Tensor& v) {
    return 0.5 * (1 + torch::erf((v - data.mu) / (data.s * std::sqrt(2.0))));
  };
  auto hi = torch::where(k == 255, torch::ones_like(k), cdf((k + 0.5) / 127.5 - 1));
  auto lo = torch::where(k == 0, torch::zeros_like(k), cdf((k - 0.5) / 127.5 - 1));
  const double entropy = (-(hi - lo).log2()).mean().item<double>();
  std::cout << "analytic model: bound " << r.nll << " +- " << r.se << " bits/dim, entropy "
            << entropy << "\n";
  EXPECT_GT(r.nll, entropy - 3 * r.se);
  std::cout << "  L_0 " << r.term_mean[0] << ", L_1..L_9 "
            << std::accumulate(r.term_mean.begin() + 1, r.term_mean.begin() + 10, 0.0) << ", L_T "
            << r.prior_mean << "\n";
  EXPECT_LT(r.nll, entropy + 1.0);
}

TEST(Nll, WritesSummaryCsvAndPlot) {
  const auto data = gaussian_data(4, 4, 24);
  GaussianDiffusion diffusion(Schedule::linear(50));
  NllOptions o;
  o.bpd.terms = 8;
  auto r =
      evaluate_nll(diffusion, analytic_model(diffusion, data.mu, data.s, 0), data.images, 0, o);
  auto dir = temp_dir("nll_out");
  write_nll_outputs(dir.string(), r, {{"model", "analytic"}, {"step", 7}});
  auto j = nlohmann::json::parse(read_file((dir / "nll.json").string()));
  EXPECT_DOUBLE_EQ(j["nll"].get<double>(), r.nll);
  EXPECT_DOUBLE_EQ(j["se"].get<double>(), r.se);
  EXPECT_EQ(j["n"].get<int64_t>(), 4);
  EXPECT_EQ(j["terms"].get<int64_t>(), 8);
  EXPECT_EQ(j["model"].get<std::string>(), "analytic");
  EXPECT_EQ(j["step"].get<int64_t>(), 7);
  EXPECT_TRUE(j["estimate"].get<bool>());
  // One row per evaluated term plus L_T; the weighted rows sum to the bound.
  std::istringstream csv(read_file((dir / "nll_terms.csv").string()));
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line, "t,weight,term_bits_per_dim,x0_mse");
  double total = 0;
  int rows = 0;
  while (std::getline(csv, line)) {
    double t, w, v;
    ASSERT_EQ(std::sscanf(line.c_str(), "%lf,%lf,%lf", &t, &w, &v), 3) << line;
    total += w * v;
    ++rows;
  }
  EXPECT_EQ(rows, 9);
  EXPECT_NEAR(total, r.nll, 1e-6 * std::abs(r.nll));
  auto png = load_image((dir / "nll_terms.png").string(), 3);
  EXPECT_EQ(png.size(0), 3);
  EXPECT_THROW(evaluate_nll(diffusion, analytic_model(diffusion, data.mu, data.s, 0),
                            data.images.to(torch::kFloat32), 0, o),
               Error);
  remove_tree(dir.string());
}

TEST(Nll, TrainedNetworkScoresBetterThanRandomOne) {
  // Images of one bright square on a dark background; the tiny-test U-Net trained for 100 steps
  // with diffuse's trainer against the same network at its initial weights, on held-out images
  // of the same kind. T = 100 and 20 of its terms keep the bound cheap.
  auto dir = temp_dir("nll_train");
  const int64_t side = model_config_from_spec("tiny-test").sample_size;
  auto gen = at::detail::createCPUGenerator(31);
  const int64_t n = 160;
  auto images = torch::zeros({n, side, side}, torch::kUInt8);
  for (int64_t i = 0; i < n; ++i) {
    const auto r0 = at::randint(0, side - 6, {2}, gen);
    images[i]
        .slice(0, r0[0].item<int64_t>(), r0[0].item<int64_t>() + 6)
        .slice(1, r0[1].item<int64_t>(), r0[1].item<int64_t>() + 6)
        .fill_(230);
  }
  images = images.contiguous();
  std::string bytes = {0, 0, 8, 3};
  for (int64_t d : {n, side, side})
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<char>((d >> s) & 0xff));
  bytes.append(reinterpret_cast<const char*>(images.data_ptr<uint8_t>()), images.numel());
  write_file_atomic((dir / "train-images-idx3-ubyte").string(), bytes);

  TrainConfig c;
  c.data = "idx:" + (dir / "train-images-idx3-ubyte").string();
  c.model = "tiny-test";
  c.out = (dir / "run").string();
  c.timesteps = 100;
  c.steps = 100;
  c.batch = 8;
  c.lr = 2e-3;
  c.warmup = 10;
  c.flip = false;
  c.sample_every = 0;
  c.ckpt_every = 0;
  c.log_every = 50;
  c.device = "cpu";
  c.seed = 4;
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  {
    Trainer t(c);
    t.run(false);
  }
  std::cout << "trained in " << seconds() << " s\n";
  auto trained = load_model(c.out, torch::kCPU, /*use_ema=*/false);
  EXPECT_EQ(trained.step, 100);
  torch::manual_seed(c.seed);  // the trainer's initial weights
  UNet2DModel random(model_config_from_spec("tiny-test"));
  random->eval();

  const auto diffusion = trained.process.make_diffusion();
  ASSERT_EQ(diffusion.num_timesteps(), 100);
  auto held_out = torch::zeros({8, 1, side, side}, torch::kUInt8);
  for (int64_t i = 0; i < 8; ++i)
    held_out[i][0].slice(0, i % 10, i % 10 + 6).slice(1, (i * 7) % 10, (i * 7) % 10 + 6).fill_(230);
  NllOptions o;
  o.batch = 8;
  o.bpd.terms = 20;
  auto good = evaluate_nll(diffusion, unet_model_fn(trained.model), held_out, 0, o);
  auto bad = evaluate_nll(diffusion, unet_model_fn(random), held_out, 0, o);
  std::cout << "NLL: trained " << good.nll << " +- " << good.se << ", random " << bad.nll << " +- "
            << bad.se << " bits/dim (" << seconds() << " s in all)\n";
  EXPECT_LT(good.nll + 3 * (good.se + bad.se), bad.nll);
  remove_tree(dir.string());
}
