// Named U-Net configurations, and the --model option that takes one of them or a config.json.
#pragma once
#include <string>
#include <vector>

#include "diffuse/models/unet_config.h"

namespace diffuse {

// A preset name (see preset_names), a diffusers config.json file, or a folder holding one.
// Anything else throws diffuse::Error listing the presets.
UNetConfig model_config_from_spec(const std::string& spec);

// name: one-line description, for --help.
std::vector<std::pair<std::string, std::string>> preset_names();

// The preset of that name; throws diffuse::Error listing the presets when there is none.
UNetConfig preset_config(const std::string& name);

// For a learned variance (improved DDPM, Nichol & Dhariwal 2021, sec. 3.1) the network outputs
// the mean's parameterisation and the interpolation weight v: twice the channels.
UNetConfig with_learned_variance(UNetConfig cfg);

}  // namespace diffuse
