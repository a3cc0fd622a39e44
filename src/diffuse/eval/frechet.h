// Sample-quality metrics over classifier features. The Frechet distance between Gaussians fitted
// to two feature sets is the measure FID uses (Heusel et al. 2017), but over the features of a
// Fashion-MNIST classifier rather than Inception-v3, so its values are called FD-FMNIST and never
// compare with published FIDs. Likewise the Inception score over that classifier's softmax is
// IS-FMNIST (Salimans et al. 2016).
#pragma once
#include <torch/torch.h>

#include <string>

namespace diffuse {

// A Gaussian fitted to features: mean (D) and covariance (D, D), float64 on the CPU.
struct FeatureStats {
  torch::Tensor mu, sigma;
  int64_t n = 0;  // how many feature vectors the fit used
};

// features: (N, D), N >= 2 -> mean and unbiased covariance, accumulated in float64.
FeatureStats feature_stats(const torch::Tensor& features);

// Tr((S1^1/2 S2 S1^1/2)^1/2) = Tr((S1 S2)^1/2) for symmetric PSD S1, S2 (D, D): through
// eigendecompositions of symmetric matrices only, with tiny negative eigenvalues (round-off)
// clamped to zero, so it is defined for singular covariances too.
double trace_sqrt_product(const torch::Tensor& s1, const torch::Tensor& s2);

// ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2). Throws diffuse::Error when the
// dimensions differ.
double frechet_distance(const FeatureStats& a, const FeatureStats& b);
double frechet_distance(const torch::Tensor& features_a, const torch::Tensor& features_b);

struct InceptionScore {
  double mean = 0, std = 0;  // over the splits (std is 0 for one split)
};

// exp(E_x KL(p(y|x) || p(y))) with p(y) the mean prediction of each split. probs: (N, K), rows
// summing to 1; splits: contiguous parts of the rows scored separately (1 <= splits <= N).
InceptionScore inception_score(const torch::Tensor& probs, int64_t splits = 1);

}  // namespace diffuse
