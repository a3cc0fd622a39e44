// DPM-Solver++ 2M (Lu et al. 2022, "DPM-Solver++", Algorithm 2): multistep, data prediction,
// second order, in lambda = log(alpha / sigma) with alpha = sqrt(abar), sigma = sqrt(1 - abar).
// The first step (no history yet) and the last step are first order (= DDIM); the last step lands
// on sigma = 0, i.e. the sample is the x_0 prediction there. Deterministic: no noise is drawn.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

class DpmSolverPPSampler : public Sampler {
 public:
  DpmSolverPPSampler(const Schedule& schedule, std::vector<int64_t> timesteps,
                     PredictionType prediction, VarianceType variance, bool clip_x0);

 protected:
  StepResult do_step(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                     NoiseSource& noise) override;

 private:
  // The previous step's x_0 prediction and lambda, valid when last_step_ == i - 1.
  torch::Tensor prev_x0_;
  double prev_lambda_ = 0.0;
  int64_t last_step_ = -1;
};

}  // namespace diffuse
