// Heun's second-order method on the probability-flow ODE in sigma (Karras et al. 2022, Algorithm
// 1, deterministic): for noise levels sigma_0 > ... > sigma_{N-1} > sigma_N = 0,
//   x~ = x_k + (sigma_{k+1} - sigma_k) d_k,          d_k = eps at (x_k, sigma_k)     (Euler)
//   x_{k+1} = x_k + (sigma_{k+1} - sigma_k) (d_k + d~) / 2,  d~ = eps at (x~, sigma_{k+1})
// in x_sigma = x_t / sqrt(abar) (score.h), with the last step (to sigma = 0) Euler alone. Each step
// but the last evaluates the network twice, so N levels cost 2N - 1 evaluations. Behind the
// one-evaluation-per-step interface the timesteps are t_0, t_1, t_1, ..., t_{N-1}, t_{N-1}: an even
// step i is the Euler predictor from level i/2 and returns x~ (VP-scaled, at the next level's
// timestep), the odd step that follows is the corrector evaluated at x~ and returns x_{k+1}.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

class HeunSampler : public Sampler {
 public:
  // levels: the N timesteps whose sigmas are the noise levels, strictly descending.
  HeunSampler(const Schedule& schedule, const std::vector<int64_t>& levels,
              PredictionType prediction, VarianceType variance, bool clip_x0);

  // The N noise levels' timesteps (timesteps() lists where the network is evaluated: 2N - 1).
  const std::vector<int64_t>& levels() const { return levels_; }

 protected:
  StepResult do_step(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                     NoiseSource& noise) override;

 private:
  std::vector<int64_t> levels_;
  // From the predictor for the corrector that follows it: x_k (VE), d_k, sigma_{k+1} - sigma_k.
  torch::Tensor x_k_, d_k_;
  double dsigma_ = 0.0;
  int64_t last_step_ = -1;
};

}  // namespace diffuse
