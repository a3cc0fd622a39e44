// The C++ API's training calls (include/diffuse/diffuse.h): `diffuse train` from a config's JSON.
#include <fstream>
#include <sstream>

#include "diffuse/api/guarded.h"
#include "diffuse/diffuse.h"
#include "diffuse/train/trainer.h"

namespace diffuse {

using api::guarded;

namespace {

TrainConfig parse_config(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": not valid JSON (", e.what(), ")");
  }
  return TrainConfig::from_json(j, source);
}

TrainResult run_training(const TrainConfig& cfg, bool progress) {
  Trainer trainer(cfg);
  trainer.run(progress);
  return TrainResult{trainer.config().out, trainer.step()};
}

}  // namespace

TrainResult train(const std::string& config_json, bool progress) {
  return guarded(
      [&] { return run_training(parse_config(config_json, "training config"), progress); });
}

TrainResult train_from_file(const std::string& config_path, bool progress) {
  return guarded([&] {
    std::ifstream in(config_path);
    check(in.good(), config_path, ": cannot read the training config");
    std::stringstream ss;
    ss << in.rdbuf();
    return run_training(parse_config(ss.str(), config_path), progress);
  });
}

TrainResult resume_training(const std::string& run_dir, int64_t steps, bool progress) {
  return guarded([&] {
    check(steps >= 0, "--steps must be >= 0, got ", steps);
    auto trainer = Trainer::resume(run_dir, [&](TrainConfig& c) {
      if (steps > 0) c.steps = steps;
    });
    trainer->run(progress);
    return TrainResult{run_dir, trainer->step()};
  });
}

}  // namespace diffuse
