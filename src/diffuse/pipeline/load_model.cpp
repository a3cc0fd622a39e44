#include "diffuse/pipeline/load_model.h"

#include <filesystem>

#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/checkpoint.h"
#include "diffuse/models/unet_config.h"
#include "diffuse/models/weights.h"

namespace fs = std::filesystem;

namespace diffuse {

namespace {

nlohmann::json parse_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

}  // namespace

LoadedModel load_model(const std::string& spec, const torch::Device& device, bool use_ema) {
  fs::path p(spec);
  check(fs::exists(p), "--model ", spec, ": no such file or folder");
  LoadedModel out;
  fs::path unet_dir;
  fs::path scheduler_json;
  const std::string weights_name = use_ema ? "unet_ema" : "unet";
  if (fs::is_directory(p / "checkpoints")) {
    // A run folder: its newest checkpoint that verifies.
    auto dirs = list_checkpoints(p.string());
    check(!dirs.empty(), "--model ", spec, ": the run has no complete checkpoint yet");
    p = dirs.front();
  }
  if (fs::exists(p / "manifest.json")) {
    // Verifies sizes and checksums of what is used (not the optimizer state) before use.
    const auto ck =
        load_checkpoint(p.string(), {weights_name + "/", "scheduler/", "trainer_state.json"});
    unet_dir = p / weights_name;
    const auto weights = weights_name + "/diffusion_pytorch_model.safetensors";
    check(ck.files.tensors.count(weights), p.string(), ": checkpoint lacks ", weights);
    out.model = UNet2DModel(load_config_json((unet_dir / "config.json").string()));
    load_state_dict(*out.model, ck.files.tensors.at(weights), (p / weights).string());
    scheduler_json = p / "scheduler" / "scheduler_config.json";
    auto st = ck.files.texts.find("trainer_state.json");
    if (st != ck.files.texts.end()) out.step = nlohmann::json::parse(st->second).value("step", -1);
  } else if (fs::exists(p / "unet" / "config.json")) {
    unet_dir = p / "unet";  // a diffusers pipeline folder
    scheduler_json = p / "scheduler" / "scheduler_config.json";
  } else if (fs::exists(p / "config.json")) {
    unet_dir = p;  // a diffusers UNet2DModel folder; look for a scheduler beside it
    scheduler_json = p.parent_path() / "scheduler" / "scheduler_config.json";
  } else {
    fail("--model ", spec,
         ": not a diffuse run or checkpoint, nor a diffusers UNet2DModel or pipeline folder");
  }
  if (out.model.is_empty()) out.model = load_diffusers_dir(unet_dir.string());
  out.model->to(device);
  out.model->eval();
  if (fs::exists(scheduler_json))
    out.process = ProcessConfig::from_scheduler_json(parse_json_file(scheduler_json.string()),
                                                     scheduler_json.string());
  out.description = unet_dir.string();
  return out;
}

}  // namespace diffuse
