// Finding a model to sample or evaluate from what a user names: a diffuse run folder (newest
// checkpoint, EMA weights by default), one checkpoint folder, a diffusers UNet2DModel directory, or
// a diffusers pipeline directory (unet/ + scheduler/).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "diffuse/diffusion/gaussian_diffusion.h"
#include "diffuse/models/unet.h"

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

struct LoadedModel {
  UNet2DModel model{nullptr};
  ProcessConfig process;
  std::string description;  // e.g. "runs/fmnist/checkpoints/step_00001000/unet_ema"
  int64_t step = -1;        // training step, when known
};

// use_ema: for run/checkpoint folders, the EMA weights (default) or the raw ones.
LoadedModel load_model(const std::string& spec, const torch::Device& device, bool use_ema = true);

}  // namespace diffuse
