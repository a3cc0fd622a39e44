// Everything a training run is made of. The defaults here are the only place they are written:
// the CLI's option table reads them from a default-constructed TrainConfig.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace diffuse {

struct TrainConfig {
  // data
  std::string data =
      "fashion-mnist";     // fashion-mnist | mnist:DIR | idx:FILE | cifar10:DIR | folder:DIR
  int64_t image_size = 0;  // 0: the model's sample_size (28x28 data is padded to it)
  bool flip = true;        // random horizontal flips (DDPM did this for CIFAR-10)
  // model and process
  std::string model = "fmnist-small";    // preset name or diffusers config.json
  std::string prediction = "epsilon";    // epsilon | x0 | v
  std::string variance = "fixed-small";  // fixed-small | fixed-large | learned-range
  std::string loss = "simple";           // simple | hybrid (needs learned-range)
  std::string schedule = "linear";       // linear | cosine
  int64_t timesteps = 1000;
  std::string timestep_sampler = "uniform";  // uniform | loss-second-moment
  double dropout = -1;                       // < 0: the model config's own value
  // optimisation
  int64_t steps = 20000;  // total steps to reach (a resumed run continues up to this)
  int64_t batch = 64;
  double lr = 2e-4;
  int64_t warmup = 500;
  double weight_decay = 0.0;
  double grad_clip = 1.0;
  double ema_decay = 0.9999;
  bool ema_warmup = true;
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
  bool bf16 = true;            // bf16 autocast on CUDA (ignored on CPU)
  bool channels_last = false;  // channels-last (NHWC) weights and activations on CUDA
  bool fused_norm = false;     // diffuse's fused GroupNorm+SiLU kernels on CUDA (channels-last)
  bool cuda_graph = false;     // the whole training step captured as one CUDA graph
  int64_t threads = 0;

  nlohmann::json to_json() const;
  // Unknown keys and wrong types are errors naming `source`.
  static TrainConfig from_json(const nlohmann::json& j, const std::string& source);
  // Range checks; errors name the option as --flag.
  void validate() const;
};

}  // namespace diffuse
