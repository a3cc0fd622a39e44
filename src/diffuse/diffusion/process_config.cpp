#include "diffuse/diffusion/process_config.h"

#include "diffuse/core/error.h"

namespace diffuse {
namespace {

// diffusers' spelling of our prediction and variance names.
std::string diffusers_name(const std::string& ours) {
  if (ours == "fixed-small") return "fixed_small";
  if (ours == "fixed-large") return "fixed_large";
  if (ours == "learned-range") return "learned_range";
  if (ours == "x0") return "sample";
  if (ours == "v") return "v_prediction";
  return ours;
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

}  // namespace diffuse
