// The likelihood pieces of the variational bound (Ho et al. eq. 5; Nichol & Dhariwal sec. 2-3).
#pragma once
#include <torch/torch.h>

namespace diffuse {

// KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats.
torch::Tensor normal_kl(const torch::Tensor& mean1, const torch::Tensor& logvar1,
                        const torch::Tensor& mean2, const torch::Tensor& logvar2);

// Phi(x) of the standard normal, through erfc so that the tails keep their relative precision.
torch::Tensor standard_normal_cdf(const torch::Tensor& x);

// log p(x) of 8-bit data x in [-1, 1] under N(mean, exp(log_scale)^2) discretised into 256 bins of
// width 2/255 centred on the data values, the outer bins open to -inf and +inf (Ho et al. eq. 13).
// Elementwise, in nats.
torch::Tensor discretized_gaussian_log_likelihood(const torch::Tensor& x, const torch::Tensor& mean,
                                                  const torch::Tensor& log_scale);

// Mean over all but the batch dimension: (B, ...) -> (B).
torch::Tensor mean_flat(const torch::Tensor& x);

}  // namespace diffuse
