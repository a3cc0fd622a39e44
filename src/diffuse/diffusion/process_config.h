// A model's process as diffusers stores it beside the weights (scheduler/scheduler_config.json).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "diffuse/diffusion/gaussian_diffusion.h"

namespace diffuse {

// The process a model was trained for, stored beside it as diffusers' scheduler_config.json
// (DDPMScheduler field names) so that diffusers pipelines read it too.
struct ProcessConfig {
  std::string schedule = "linear";
  int64_t timesteps = 1000;
  std::string prediction = "epsilon";
  std::string variance = "fixed-small";
  // Linear schedule endpoints; 0 = the DDPM values scaled by 1000/T (improved-diffusion).
  double beta_start = 0, beta_end = 0;

  nlohmann::json to_scheduler_json() const;
  // Accepts diffusers' DDPMScheduler / DDIMScheduler configs; unsupported values are errors.
  static ProcessConfig from_scheduler_json(const nlohmann::json& j, const std::string& source);
  GaussianDiffusion make_diffusion() const;
};

}  // namespace diffuse
