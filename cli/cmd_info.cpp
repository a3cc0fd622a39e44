// diffuse info: what this build and machine offer.
#include <iostream>
#include <thread>

#include "commands.h"
#include "diffuse/core/compat.h"
#include "diffuse/models/presets.h"
#include "diffuse/models/unet.h"
#include "diffuse/models/weights.h"

namespace diffuse::cli {

namespace {

std::string with_commas(int64_t n) {
  auto s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

}  // namespace

Command info_command() {
  Command c;
  c.name = "info";
  c.summary = "show the LibTorch version, devices and model presets";
  c.usage = "diffuse info [--require-cuda] [--config PRESET]";
  c.options = {{"require-cuda", "", "exit with status 1 unless a CUDA device is usable", true},
               {"config", "", "print the diffusers config.json of this preset and exit"}};
  c.run = [](const Args& a) {
    if (a.has("config")) {
      std::cout << model_config_from_spec(a.str("config")).to_json().dump(2) << "\n";
      return 0;
    }
    const bool cuda = torch::cuda::is_available();
    std::cout << "LibTorch " << torch_version() << "\n"
              << "CUDA code paths compiled: "
#ifdef DIFFUSE_WITH_CUDA
              << "yes"
#else
              << "no"
#endif
              << "\nCUDA devices: " << (cuda ? torch::cuda::device_count() : 0) << "\n"
              << "CPU cores: " << std::thread::hardware_concurrency() << "\n"
              << "model presets:\n";
    for (const auto& [name, what] : preset_names())
      std::cout << "  " << name << " ("
                << with_commas(count_parameters(*UNet2DModel(preset_config(name))))
                << " parameters): " << what << "\n";
    return a.flag("require-cuda") && !cuda ? 1 : 0;
  };
  return c;
}

}  // namespace diffuse::cli
