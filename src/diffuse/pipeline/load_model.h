// Finding a model to sample or evaluate from what a user names: a diffuse run folder (newest
// checkpoint, EMA weights by default), one checkpoint folder, a diffusers UNet2DModel directory, or
// a diffusers pipeline directory (unet/ + scheduler/).
#pragma once
#include <string>

#include "diffuse/diffusion/process_config.h"
#include "diffuse/models/unet.h"

namespace diffuse {

struct LoadedModel {
  UNet2DModel model{nullptr};
  ProcessConfig process;
  std::string description;  // e.g. "runs/fmnist/checkpoints/step_00001000/unet_ema"
  int64_t step = -1;        // training step, when known
};

// use_ema: for run/checkpoint folders, the EMA weights (default) or the raw ones.
LoadedModel load_model(const std::string& spec, const torch::Device& device, bool use_ema = true);

}  // namespace diffuse
