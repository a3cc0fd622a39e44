#include "diffuse/train/config.h"

#include "diffuse/core/device.h"
#include "diffuse/core/error.h"

namespace diffuse {

// One list of fields serves both directions of the JSON conversion.
// clang-format off (it does not settle on one layout for this macro)
#define DIFFUSE_TRAIN_FIELDS(X) \
  X(data)                       \
  X(image_size)                 \
  X(flip)                       \
  X(model)                      \
  X(prediction)                 \
  X(variance)                   \
  X(loss)                       \
  X(loss_weighting)             \
  X(schedule)                   \
  X(timesteps)                  \
  X(timestep_sampler)           \
  X(dropout)                    \
  X(class_cond)                 \
  X(label_dropout)              \
  X(steps)                      \
  X(batch)                      \
  X(lr)                         \
  X(warmup)                     \
  X(weight_decay)               \
  X(grad_clip)                  \
  X(ema_decay)                  \
  X(ema_warmup)                 \
  X(seed)                       \
  X(time_limit)                 \
  X(out)                        \
  X(log_every)                  \
  X(sample_every)               \
  X(ckpt_every)                 \
  X(keep)                       \
  X(sample_n)                   \
  X(sample_steps)               \
  X(device)                     \
  X(precision)                  \
  X(threads)                    \
  X(channels_last)              \
  X(fused_norm)                 \
  X(cuda_graph)
// clang-format on

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j;
#define X(f) j[#f] = f;
  DIFFUSE_TRAIN_FIELDS(X)
#undef X
  return j;
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& source) {
  check(j.is_object(), source, ": training config must be a JSON object");
  TrainConfig c;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto& key = it.key();
    bool known = false;
    if (key == "bf16" && it.value().is_boolean()) {
      c.precision = it.value().get<bool>() ? "auto" : "tf32";
      continue;
    }
    try {
#define X(f)                               \
  if (key == #f) {                         \
    c.f = it.value().get<decltype(c.f)>(); \
    known = true;                          \
  }
      DIFFUSE_TRAIN_FIELDS(X)
#undef X
    } catch (const nlohmann::json::exception& e) {
      fail(source, ": field '", key, "' has the wrong type (", e.what(), ")");
    }
    check(known, source, ": unknown field '", key, "'");
  }
  return c;
}

void TrainConfig::validate() const {
  check(steps >= 1, "--steps must be >= 1, got ", steps);
  check(batch >= 1, "--batch must be >= 1, got ", batch);
  check(lr > 0 && lr < 1, "--lr must be in (0, 1), got ", lr);
  check(warmup >= 0, "--warmup must be >= 0, got ", warmup);
  check(weight_decay >= 0, "--weight-decay must be >= 0, got ", weight_decay);
  check(grad_clip >= 0, "--grad-clip must be >= 0 (0 = off), got ", grad_clip);
  check(ema_decay >= 0 && ema_decay <= 1, "--ema-decay must be in [0, 1], got ", ema_decay);
  check(timesteps >= 2, "--timesteps must be >= 2, got ", timesteps);
  check(time_limit >= 0, "--time-limit must be >= 0, got ", time_limit);
  check(log_every >= 1, "--log-every must be >= 1, got ", log_every);
  check(sample_every >= 0, "--sample-every must be >= 0 (0 = never), got ", sample_every);
  check(ckpt_every >= 0, "--ckpt-every must be >= 0 (0 = only at the end), got ", ckpt_every);
  check(keep >= 1, "--keep must be >= 1, got ", keep);
  check(sample_n >= 1 && sample_n <= 1024, "--sample-n must be in [1, 1024], got ", sample_n);
  check(sample_steps >= 1 && sample_steps <= timesteps,
        "--sample-steps must be in [1, --timesteps], got ", sample_steps);
  check(image_size >= 0, "--image-size must be >= 0, got ", image_size);
  check(dropout < 1, "--dropout must be < 1, got ", dropout);
  check(label_dropout >= 0 && label_dropout < 1, "--label-dropout must be in [0, 1), got ",
        label_dropout);
  check(!out.empty(), "--out must name a run folder");
  check(threads >= 0, "--threads must be >= 0, got ", threads);
  check(precision == "auto" || precision == "fp32" || precision == "tf32" || precision == "bf16",
        "--precision: unknown precision '", precision, "' (expected ", kPrecisionChoices, ")");
  check(!fused_norm || channels_last,
        "--fused-norm needs --channels-last (the kernels take NHWC activations)");
  check(!cuda_graph || !class_cond, "--cuda-graph is not yet supported with --class-cond");
  check(!cuda_graph || timestep_sampler == "uniform",
        "--cuda-graph needs --timestep-sampler uniform (the other updates its weights on the "
        "host)");
}

}  // namespace diffuse
