// Euler ancestral (the ancestral sampler of Crowson's k-diffusion, sample_euler_ancestral with
// eta = 1): from sigma to sigma' < sigma in
// x_sigma = x_t / sqrt(abar) (score.h),
//   sigma_up = min(sigma', sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)),
//   sigma_down = sqrt(sigma'^2 - sigma_up^2),
//   x_sigma' = x_sigma + (sigma_down - sigma) eps + sigma_up z,   z ~ N(0, I),
// an Euler step down to sigma_down and fresh noise back up to sigma'; no noise after the last step
// (sigma' = 0). sigma_up is DDIM's eta = 1 sigma (eq. 16) in this scaling, so on the same
// timesteps this is the DDPM ancestral step with the respaced posterior variance.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

class EulerAncestralSampler : public Sampler {
 public:
  EulerAncestralSampler(const Schedule& schedule, std::vector<int64_t> timesteps,
                        PredictionType prediction, VarianceType variance, bool clip_x0);

  // sigma_up and sigma_down of step i.
  double sigma_up(size_t i) const;
  double sigma_down(size_t i) const;

 protected:
  StepResult do_step(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                     NoiseSource& noise) override;
};

}  // namespace diffuse
