// DDIM (Song et al. 2021, eq. 12): with abar = abar_t and abar' = abar at the next timestep,
//   x' = sqrt(abar') x0 + sqrt(1 - abar' - sigma^2) eps + sigma z,
//   sigma(eta) = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar')   (eq. 16),
// where (x0, eps) come from the model output at x_t. abar' = 1 after the last step, so the sample
// is the last x0. eta = 0 is the deterministic ODE; eta = 1 is the DDPM posterior on the respaced
// schedule.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

class DdimSampler : public Sampler {
 public:
  DdimSampler(const Schedule& schedule, std::vector<int64_t> timesteps, double eta,
              PredictionType prediction, VarianceType variance, bool clip_x0);

  double eta() const { return eta_; }
  // sigma_t(eta) of step i.
  double sigma(size_t i) const;

 protected:
  StepResult do_step(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                     NoiseSource& noise) override;

 private:
  double eta_;
};

}  // namespace diffuse
