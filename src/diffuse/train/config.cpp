#include "diffuse/train/config.h"

#include <algorithm>

#include "diffuse/core/device.h"
#include "diffuse/core/error.h"
#include "diffuse/models/presets.h"
#include "diffuse/train/lr_schedule.h"
#include "diffuse/train/power_ema.h"

namespace diffuse {

namespace {

using F = TrainConfig;

std::string presets_list() {
  std::string s;
  for (const auto& n : preset_names()) s += (s.empty() ? "" : ", ") + n.first;
  return s;
}

std::vector<TrainField> make_train_fields() {
  const bool R = true;  // resumable
  // clang-format off
  return {
      {"data", &F::data, "dataset: fashion-mnist | mnist:DIR | idx:FILE | cifar10:DIR | folder:DIR"},
      {"out", &F::out, "run folder to create"},
      {"model", &F::model, "model preset (" + presets_list() + ") or a diffusers config.json"},
      {"image-size", &F::image_size, "training resolution (0 = the model's sample_size)"},
      {"flip", &F::flip, "random horizontal flips (off by default: they harm data with a handedness)"},
      {"prediction", &F::prediction, "what the network predicts: epsilon | x0 | v"},
      {"variance", &F::variance, "reverse variance: fixed-small | fixed-large | learned-range"},
      {"loss", &F::loss, "simple (L_simple) | hybrid (L_simple + 0.001 L_vlb, needs learned-range) | "
                         "vlb (the bound's term L_t: KL, decoder NLL at t = 0)"},
      {"loss-weighting", &F::loss_weighting, "weight w_t of the MSE: simple (1) | snr | min-snr-5 | vlb (see below)"},
      {"schedule", &F::schedule, "noise schedule: linear | cosine"},
      {"timesteps", &F::timesteps, "diffusion steps T"},
      {"timestep-sampler", &F::timestep_sampler, "how t is drawn: uniform | loss-second-moment | "
                                                 "logit-normal (t/T = sigmoid(m + s n)) | edm-log-normal "
                                                 "(ln sigma = m + s n, nearest t); the last two do not reweight"},
      {"ts-mean", &F::ts_mean, "m of --timestep-sampler logit-normal (SD3: 0) or edm-log-normal (EDM: -1.2)"},
      {"ts-std", &F::ts_std, "s of --timestep-sampler logit-normal (SD3: 1) or edm-log-normal (EDM: 1.2)"},
      {"dropout", &F::dropout, "dropout (< 0 = the model config's value)"},
      {"class-cond", &F::class_cond, "class-conditional model (labelled data): num_class_embeds = "
                                     "classes + 1, the last the null class"},
      {"label-dropout", &F::label_dropout, "with --class-cond: probability of training on the null class instead of the label"},
      {"steps", &F::steps, "total optimisation steps to reach", R},
      {"batch", &F::batch, "batch size (the global batch: all processes together)"},
      {"lr", &F::lr, "AdamW learning rate"},
      {"warmup", &F::warmup, "linear learning-rate warmup steps"},
      {"lr-schedule", &F::lr_schedule, "learning rate after warmup: constant | cosine | wsd (warmup-stable-decay); "
                                       "cosine and wsd end at --steps or --time-limit, whichever comes first",
       false, false, "constant"},
      {"lr-decay-fraction", &F::lr_decay_fraction, "--lr-schedule wsd: the last fraction of the budget, "
                                                   "over which the rate falls linearly to 0"},
      {"weight-decay", &F::weight_decay, "AdamW decoupled weight decay"},
      {"adam-beta1", &F::adam_beta1, "AdamW's beta_1 (first-moment decay)"},
      {"adam-beta2", &F::adam_beta2, "AdamW's beta_2 (second-moment decay)"},
      {"adam-eps", &F::adam_eps, "AdamW's epsilon"},
      {"grad-clip", &F::grad_clip, "clip the global gradient norm to this (0 = off)"},
      {"ema-decay", &F::ema_decay, "EMA decay of the weights"},
      {"no-ema-warmup", &F::ema_warmup, "use the EMA decay from the first step", false, true},
      {"ema-power", &F::ema_power, "EDM2 power-function EMAs to keep as well, by sigma_rel (e.g. 0.05,0.10); "
                                   "their snapshots in RUN/ema_snapshots give any other length after training (diffuse ema)"},
      {"seed", &F::seed, "seed for weights, data order, t and noise"},
      {"time-limit", &F::time_limit, "stop cleanly after this many seconds (0 = no limit)", R},
      {"log-every", &F::log_every, "steps between log lines", R},
      {"sample-every", &F::sample_every, "steps between preview grids (0 = never)", R},
      {"ckpt-every", &F::ckpt_every, "steps between checkpoints (one is always written at the end)", R},
      {"keep", &F::keep, "checkpoints to keep", R},
      {"ema-snapshot-every", &F::ema_snapshot_every, "steps between the power-function EMAs' snapshots", R},
      {"sample-n", &F::sample_n, "images in each preview grid"},
      {"sample-steps", &F::sample_steps, "DDIM steps for preview grids"},
      {"device", &F::device, kDeviceHelp, R},
      {"threads", &F::threads, kThreadsHelp, R},
      {"precision", &F::precision, kPrecisionHelp, R},
      {"channels-last", &F::channels_last, "CUDA: channels-last (NHWC) weights and activations", R},
      {"fused-norm", &F::fused_norm, "CUDA: diffuse's fused GroupNorm+SiLU kernels (needs --channels-last; "
                                     "not yet checked on a GPU)", R},
      {"cuda-graph", &F::cuda_graph, "CUDA: capture the whole step (forward, backward, clipping, AdamW, EMA) "
                                     "as one CUDA graph (needs LibTorch >= 2.4; not yet checked on a GPU)", R},
  };
  // clang-format on
}

}  // namespace

std::string TrainField::key() const {
  std::string k = negated ? flag.substr(3) : flag;
  for (auto& c : k)
    if (c == '-') c = '_';
  return k;
}

const std::vector<TrainField>& train_fields() {
  static const std::vector<TrainField> fields = make_train_fields();
  return fields;
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j;
  for (const auto& f : train_fields())
    std::visit([&](auto member) { j[f.key()] = this->*member; }, f.field);
  return j;
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& source) {
  check(j.is_object(), source, ": training config must be a JSON object");
  const auto& fields = train_fields();
  TrainConfig c;
  for (const auto& f : fields)
    if (!f.legacy.is_null() && !j.contains(f.key()))
      std::visit(
          [&](auto member) { c.*member = f.legacy.get<std::decay_t<decltype(c.*member)>>(); },
          f.field);
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto& key = it.key();
    if (key == "bf16" && it.value().is_boolean()) {
      c.precision = it.value().get<bool>() ? "auto" : "tf32";
      continue;
    }
    auto f = std::find_if(fields.begin(), fields.end(),
                          [&](const TrainField& f) { return f.key() == key; });
    check(f != fields.end(), source, ": unknown field '", key, "'");
    try {
      std::visit(
          [&](auto member) { c.*member = it.value().get<std::decay_t<decltype(c.*member)>>(); },
          f->field);
    } catch (const nlohmann::json::exception& e) {
      fail(source, ": field '", key, "' has the wrong type (", e.what(), ")");
    }
  }
  return c;
}

void TrainConfig::validate() const {
  check(steps >= 1, "--steps must be >= 1, got ", steps);
  check(batch >= 1, "--batch must be >= 1, got ", batch);
  check(lr > 0 && lr < 1, "--lr must be in (0, 1), got ", lr);
  check(warmup >= 0, "--warmup must be >= 0, got ", warmup);
  parse_lr_schedule(lr_schedule);
  check(lr_decay_fraction > 0 && lr_decay_fraction <= 1,
        "--lr-decay-fraction must be in (0, 1], got ", lr_decay_fraction);
  check(ts_std > 0, "--ts-std must be > 0, got ", ts_std);
  parse_sigma_rels(ema_power);
  check(ema_snapshot_every >= 1, "--ema-snapshot-every must be >= 1, got ", ema_snapshot_every);
  check(weight_decay >= 0, "--weight-decay must be >= 0, got ", weight_decay);
  check(adam_beta1 >= 0 && adam_beta1 < 1, "--adam-beta1 must be in [0, 1), got ", adam_beta1);
  check(adam_beta2 >= 0 && adam_beta2 < 1, "--adam-beta2 must be in [0, 1), got ", adam_beta2);
  check(adam_eps > 0, "--adam-eps must be > 0, got ", adam_eps);
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
}

}  // namespace diffuse
