#include "diffuse/train/model_source.h"

#include <filesystem>

#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/models/weights.h"
#include "diffuse/train/checkpoint.h"

namespace fs = std::filesystem;

namespace diffuse {

namespace {

std::string diffusers_name(const std::string& ours) {
  if (ours == "fixed-small") return "fixed_small";
  if (ours == "fixed-large") return "fixed_large";
  if (ours == "learned-range") return "learned_range";
  if (ours == "x0") return "sample";
  if (ours == "v") return "v_prediction";
  return ours;
}

nlohmann::json parse_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

}  // namespace

nlohmann::json ProcessConfig::to_scheduler_json() const {
  auto sch = make_diffusion().schedule();
  nlohmann::json j = {
      {"_class_name", "DDPMScheduler"},
      {"num_train_timesteps", timesteps},
      {"beta_schedule", schedule == "cosine" ? "squaredcos_cap_v2" : "linear"},
      {"beta_start", sch.betas.front()},
      {"beta_end", sch.betas.back()},
      {"prediction_type", diffusers_name(to_string(parse_prediction_type(prediction)))},
      {"variance_type", diffusers_name(to_string(parse_variance_type(variance)))},
      {"clip_sample", true}};
  return j;
}

ProcessConfig ProcessConfig::from_scheduler_json(const nlohmann::json& j,
                                                 const std::string& source) {
  check(j.is_object(), source, ": scheduler config must be a JSON object");
  ProcessConfig p;
  try {
    p.timesteps = j.value("num_train_timesteps", 1000);
    const auto bs = j.value("beta_schedule", std::string("linear"));
    if (bs == "linear") {
      p.schedule = "linear";
      p.beta_start = j.value("beta_start", 0.0);
      p.beta_end = j.value("beta_end", 0.0);
    } else if (bs == "squaredcos_cap_v2" || bs == "cosine") {
      p.schedule = "cosine";
    } else {
      fail(source, ": beta_schedule '", bs, "' is not supported (linear or squaredcos_cap_v2)");
    }
    p.prediction =
        to_string(parse_prediction_type(j.value("prediction_type", std::string("epsilon"))));
    auto vt = j.value("variance_type", std::string("fixed_small"));
    if (vt == "fixed_small_log") vt = "fixed_small";
    if (vt == "fixed_large_log") vt = "fixed_large";
    p.variance = to_string(parse_variance_type(vt));
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": ", e.what());
  } catch (const Error& e) {
    fail(source, ": ", e.what());
  }
  return p;
}

GaussianDiffusion ProcessConfig::make_diffusion() const {
  Schedule sch;
  if (schedule == "linear" && beta_start > 0 && beta_end > 0) {
    check(timesteps >= 1, "scheduler: num_train_timesteps must be >= 1");
    std::vector<double> b(timesteps);
    for (int64_t i = 0; i < timesteps; ++i)
      b[i] = timesteps == 1
                 ? beta_start
                 : beta_start + (beta_end - beta_start) * i / static_cast<double>(timesteps - 1);
    sch = Schedule::from_betas(std::move(b), "linear");
  } else {
    sch = Schedule::by_name(schedule, timesteps);
  }
  return GaussianDiffusion(std::move(sch), parse_prediction_type(prediction),
                           parse_variance_type(variance));
}

LoadedModel load_model(const std::string& spec, const torch::Device& device, bool use_ema) {
  fs::path p(spec);
  check(fs::exists(p), "--model ", spec, ": no such file or folder");
  LoadedModel out;
  fs::path unet_dir;
  fs::path scheduler_json;
  const std::string weights_name = use_ema ? "unet_ema" : "unet";
  if (fs::is_directory(p / "checkpoints")) {
    // A run folder: its newest checkpoint that verifies.
    std::vector<std::string> warnings;
    auto dirs = list_checkpoints(p.string());
    check(!dirs.empty(), "--model ", spec, ": the run has no complete checkpoint yet");
    p = dirs.front();
  }
  if (fs::exists(p / "manifest.json")) {
    load_checkpoint(p.string());  // verifies sizes and checksums before use
    unet_dir = p / weights_name;
    scheduler_json = p / "scheduler" / "scheduler_config.json";
    auto st = p / "trainer_state.json";
    if (fs::exists(st)) out.step = parse_json_file(st.string()).value("step", -1);
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
  out.model = load_diffusers_dir(unet_dir.string());
  out.model->to(device);
  out.model->eval();
  if (fs::exists(scheduler_json))
    out.process = ProcessConfig::from_scheduler_json(parse_json_file(scheduler_json.string()),
                                                     scheduler_json.string());
  out.description = unet_dir.string();
  return out;
}

}  // namespace diffuse
