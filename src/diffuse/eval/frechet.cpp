#include "diffuse/eval/frechet.h"

#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

// Square root of a symmetric PSD matrix (D, D) by eigendecomposition; round-off makes the
// smallest eigenvalues of a singular covariance slightly negative, hence the clamp.
torch::Tensor sqrtm_psd(const torch::Tensor& s) {
  auto [evals, evecs] = at::linalg_eigh(0.5 * (s + s.t()), "L");
  return torch::matmul(evecs * evals.clamp_min(0).sqrt().unsqueeze(0), evecs.t());
}

void check_square(const torch::Tensor& s, const char* name) {
  check(s.dim() == 2 && s.size(0) == s.size(1), "Frechet distance: ", name,
        " must be a square matrix, got ", s.sizes());
}

}  // namespace

FeatureStats feature_stats(const torch::Tensor& features) {
  check(features.dim() == 2, "feature statistics: features must be (N, D), got ", features.sizes());
  check(features.size(0) >= 2, "feature statistics: need at least 2 feature vectors, got ",
        features.size(0));
  auto f = features.to(torch::kCPU, torch::kFloat64);
  check(torch::isfinite(f).all().item<bool>(), "feature statistics: features contain NaN or Inf");
  FeatureStats st;
  st.n = f.size(0);
  st.mu = f.mean(0);
  auto centred = f - st.mu;
  st.sigma = torch::matmul(centred.t(), centred) / static_cast<double>(st.n - 1);
  return st;
}

double trace_sqrt_product(const torch::Tensor& s1, const torch::Tensor& s2) {
  check_square(s1, "S1");
  check_square(s2, "S2");
  check(s1.size(0) == s2.size(0), "Frechet distance: covariances of different sizes ", s1.sizes(),
        " and ", s2.sizes());
  auto a = s1.to(torch::kCPU, torch::kFloat64), b = s2.to(torch::kCPU, torch::kFloat64);
  auto r = sqrtm_psd(a);
  // r S2 r is symmetric PSD and similar to S1 S2, so its eigenvalues are those of S1 S2.
  auto m = torch::matmul(torch::matmul(r, b), r);
  auto evals = at::linalg_eigvalsh(0.5 * (m + m.t()), "L");
  return evals.clamp_min(0).sqrt().sum().item<double>();
}

double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  check(a.mu.defined() && b.mu.defined(), "Frechet distance: statistics are empty");
  check(a.mu.dim() == 1 && b.mu.dim() == 1 && a.mu.size(0) == b.mu.size(0),
        "Frechet distance: feature dimensions differ (", a.mu.sizes(), " vs ", b.mu.sizes(), ")");
  check_square(a.sigma, "S1");
  check_square(b.sigma, "S2");
  check(a.sigma.size(0) == a.mu.size(0) && b.sigma.size(0) == b.mu.size(0),
        "Frechet distance: covariance and mean sizes differ");
  auto s1 = a.sigma.to(torch::kCPU, torch::kFloat64), s2 = b.sigma.to(torch::kCPU, torch::kFloat64);
  auto d = a.mu.to(torch::kCPU, torch::kFloat64) - b.mu.to(torch::kCPU, torch::kFloat64);
  const double fd = d.dot(d).item<double>() + s1.trace().item<double>() +
                    s2.trace().item<double>() - 2.0 * trace_sqrt_product(s1, s2);
  // Identical statistics give -1e-12 or so from round-off; a distance is never negative.
  return std::max(fd, 0.0);
}

double frechet_distance(const torch::Tensor& features_a, const torch::Tensor& features_b) {
  return frechet_distance(feature_stats(features_a), feature_stats(features_b));
}

InceptionScore inception_score(const torch::Tensor& probs, int64_t splits) {
  check(probs.dim() == 2 && probs.size(0) >= 1 && probs.size(1) >= 1,
        "Inception score: probabilities must be (N, K), got ", probs.sizes());
  const int64_t n = probs.size(0);
  check(splits >= 1 && splits <= n, "Inception score: splits must be in [1, ", n, "], got ",
        splits);
  auto p = probs.to(torch::kCPU, torch::kFloat64);
  check(torch::isfinite(p).all().item<bool>() && p.min().item<double>() >= 0,
        "Inception score: probabilities must be finite and non-negative");
  std::vector<double> scores;
  for (int64_t s = 0; s < splits; ++s) {
    auto part = p.slice(0, s * n / splits, (s + 1) * n / splits);
    auto py = part.mean(0, true);
    // 0 log 0 = 0: xlogy-style masking, so one-hot predictions are exact.
    auto kl = torch::where(part > 0, part * (part.log() - py.log()), torch::zeros_like(part));
    scores.push_back(std::exp(kl.sum(1).mean().item<double>()));
  }
  InceptionScore r;
  for (double v : scores) r.mean += v / scores.size();
  for (double v : scores) r.std += (v - r.mean) * (v - r.mean) / scores.size();
  r.std = std::sqrt(r.std);
  return r;
}

}  // namespace diffuse
