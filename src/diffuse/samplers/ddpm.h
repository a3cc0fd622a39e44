// Ancestral sampling (Ho et al. 2020, Algorithm 2): x_{t-1} = mu_theta(x_t, t) + sigma_t z, with
// no noise at the last step. With S < T steps it runs on the respaced schedule
// (improved-diffusion): the kept timesteps' abar are unchanged and beta'_i = 1 - abar[kept_i] /
// abar[kept_{i-1}].
#pragma once
#include "diffuse/diffusion/schedule.h"
#include "diffuse/samplers/sampler.h"

namespace diffuse {

class DdpmSampler : public Sampler {
 public:
  // variance: fixed-small (beta~'), fixed-large (beta', improved-diffusion's choice) or
  // learned-range (exp(frac log beta' + (1 - frac) log beta~'), frac = (v + 1) / 2), all on the
  // respaced schedule.
  DdpmSampler(const Schedule& schedule, std::vector<int64_t> timesteps, PredictionType prediction,
              VarianceType variance, bool clip_x0);

  // The respaced schedule the steps follow; its index j is step S-1-j.
  const Schedule& respaced() const { return respaced_; }

 protected:
  StepResult do_step(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                     NoiseSource& noise) override;

 private:
  Schedule respaced_;
};

}  // namespace diffuse
