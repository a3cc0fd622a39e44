// Everything a training run is made of. The defaults here are the only place they are written:
// train_fields() binds each field to its option, and the CLI reads the defaults from a
// default-constructed TrainConfig.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <variant>
#include <vector>

namespace diffuse {

struct TrainConfig {
  // data
  // fashion-mnist | mnist:DIR | idx:FILE | cifar10:DIR | folder:DIR | synthetic (random pixels)
  std::string data = "fashion-mnist";
  int64_t image_size = 0;  // 0: the model's sample_size (28x28 data is padded to it)
  // Random horizontal flips: opt-in, as in diffusers' training example. DDPM flipped CIFAR-10, but
  // on data with a handedness (every Fashion-MNIST shoe points left) flips put half the training
  // set out of distribution.
  bool flip = false;
  // model and process
  std::string model = "fmnist-small";     // preset name or diffusers config.json
  std::string prediction = "epsilon";     // epsilon | x0 | v
  std::string variance = "fixed-small";   // fixed-small | fixed-large | learned-range
  std::string loss = "simple";            // simple | hybrid (needs learned-range) | vlb
  std::string loss_weighting = "simple";  // simple | snr | min-snr-5 | vlb (losses.h)
  std::string schedule = "linear";        // linear | cosine
  int64_t timesteps = 1000;
  // uniform | loss-second-moment | logit-normal | edm-log-normal (diffusion/timestep_sampler.h)
  std::string timestep_sampler = "uniform";
  double ts_mean = 0.0, ts_std = 1.0;  // logit-normal's m, s; edm-log-normal's P_mean, P_std
  double dropout = -1;                 // < 0: the model config's own value
  // Class conditioning: the model gets num_class_embeds = classes + 1, the last index being the
  // null class (no label), which replaces each training label with probability label_dropout so
  // that the same network also models the data unconditionally (classifier-free guidance).
  bool class_cond = false;
  double label_dropout = 0.1;
  // optimisation
  int64_t steps = 20000;  // total steps to reach (a resumed run continues up to this)
  int64_t batch = 64;
  double lr = 2e-4;
  int64_t warmup = 500;
  std::string lr_schedule = "constant";  // constant | cosine | wsd (train/lr_schedule.h)
  double lr_decay_fraction = 0.2;        // wsd: the cool-down's share of the budget
  double weight_decay = 0.0;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  double grad_clip = 1.0;
  double ema_decay = 0.9999;
  bool ema_warmup = true;
  // EDM2's power-function EMAs besides the EMA above, by sigma_rel ("0.05,0.10"; empty: none),
  // snapshotted every ema_snapshot_every steps for post-hoc reconstruction (train/power_ema.h).
  std::string ema_power;
  int64_t ema_snapshot_every = 250;
  uint64_t seed = 0;
  double time_limit = 0;  // seconds of training before stopping cleanly; 0 = no limit
  // bookkeeping
  std::string out = "runs/fmnist";
  int64_t log_every = 50;
  int64_t sample_every = 1000;
  int64_t ckpt_every = 1000;
  int64_t keep = 3;  // checkpoints kept
  int64_t sample_n = 64;
  int64_t sample_steps = 50;  // DDIM steps for the progress grids
  // runtime
  std::string device = "auto";
  std::string precision = "auto";  // auto | fp32 | tf32 | bf16 (core/device.h); auto: bf16 on CUDA
  bool channels_last = false;      // channels-last (NHWC) weights and activations on CUDA
  bool fused_norm = false;         // diffuse's fused GroupNorm+SiLU kernels on CUDA (channels-last)
  bool cuda_graph = false;         // the whole training step captured as one CUDA graph
  int64_t threads = 0;

  nlohmann::json to_json() const;
  // Unknown keys and wrong types are errors naming `source`. A missing key reads as its field's
  // legacy value, else its default. The key "bf16" of runs made before --precision reads as
  // precision auto (true) or tf32 (false), what it meant then.
  static TrainConfig from_json(const nlohmann::json& j, const std::string& source);
  // Range checks; errors name the option as --flag.
  void validate() const;
};

// One row per option of `diffuse train` (stable-diffusion.cpp's option table): the flag, the
// field it sets (whose initialiser is the default), its help, and whether a resumed run may change
// it. The JSON key is the field's name: the flag with '-' as '_' (a negated flag without "no-").
struct TrainField {
  using Member = std::variant<std::string TrainConfig::*, int64_t TrainConfig::*,
                              uint64_t TrainConfig::*, double TrainConfig::*, bool TrainConfig::*>;
  std::string flag;  // without "--"
  Member field;
  std::string help;
  bool resumable = false;
  bool negated = false;  // a flag that sets its bool field to false (--no-ema-warmup)
  // What a run made before the field existed used, if not today's default: from_json reads a
  // missing key as this, so an old run resumes with its own recipe after a default changes.
  nlohmann::json legacy = nullptr;

  std::string key() const;
  bool is_flag() const { return std::holds_alternative<bool TrainConfig::*>(field); }
};
const std::vector<TrainField>& train_fields();

}  // namespace diffuse
