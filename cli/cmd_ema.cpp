// diffuse ema: EDM2's post-hoc EMA. From the power-function EMA snapshots of a run trained with
// --ema-power, reconstruct the EMA of another length (sigma_rel) and write it as a diffusers
// pipeline folder (unet/ and scheduler/) that sample and eval read.
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "commands.h"
#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/checkpoint.h"
#include "diffuse/io/safetensors.h"
#include "diffuse/train/power_ema.h"

namespace fs = std::filesystem;

namespace diffuse::cli {

namespace {

int run_ema(const Args& a) {
  const auto run = a.str("run"), out = a.str("out");
  const double sigma_rel = a.number("sigma-rel");
  check(sigma_rel > 0 && sigma_rel <= 0.28, "--sigma-rel must be in (0, 0.28], got ", sigma_rel);
  const auto ckpts = list_checkpoints(run);
  check(!ckpts.empty(), "--run ", run, ": no checkpoint (its unet config is needed)");
  check(!fs::exists(fs::path(out) / "unet"), "--out ", out, " already holds a model");
  auto r = posthoc_ema(run, sigma_rel, a.integer("step"));
  fs::create_directories(fs::path(out) / "unet");
  fs::create_directories(fs::path(out) / "scheduler");
  write_file_atomic((fs::path(out) / "unet" / "config.json").string(),
                    read_file((fs::path(ckpts[0]) / "unet_ema" / "config.json").string()));
  write_file_atomic(
      (fs::path(out) / "scheduler" / "scheduler_config.json").string(),
      read_file((fs::path(ckpts[0]) / "scheduler" / "scheduler_config.json").string()));
  save_safetensors((fs::path(out) / "unet" / "diffusion_pytorch_model.safetensors").string(),
                   r.weights);
  std::cerr << "diffuse: EMA of sigma_rel " << sigma_rel << " (gamma " << std::setprecision(4)
            << r.target.gamma << ") at t = " << r.target.t << " from " << r.snapshots.size()
            << " snapshots, written to " << out << "\n";
  return 0;
}

}  // namespace

Command ema_command() {
  Command c;
  c.name = "ema";
  c.summary = "reconstruct an EMA of any length after training (EDM2 post-hoc EMA)";
  c.usage = "diffuse ema --run RUN --sigma-rel S --out DIR [--step N]";
  c.description =
      "Least-squares combination of the power-function EMA snapshots that `diffuse train "
      "--ema-power` wrote to RUN/ema_snapshots (Karras et al. 2024, sec. 3).";
  c.options = {{"run", "", "run folder trained with --ema-power", false, true},
               {"sigma-rel", "", "EMA length: the averaging profile's relative standard deviation",
                false, true},
               {"step", "0", "reconstruct at this step, from the snapshots up to it (0 = newest)"},
               {"out", "", "folder to write (unet/ and scheduler/, as diffusers lays them out)",
                false, true}};
  c.run = run_ema;
  return c;
}

}  // namespace diffuse::cli
