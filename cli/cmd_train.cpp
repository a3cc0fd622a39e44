// diffuse train: Algorithm 1 of Ho et al. on a dataset, into a run folder.
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "diffuse/core/error.h"
#include "diffuse/dist/launcher.h"
#include "diffuse/dist/process_group.h"
#include "diffuse/models/presets.h"
#include "diffuse/train/trainer.h"

namespace diffuse::cli {

namespace {

template <typename T>
std::string text(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string presets_list() {
  std::string s;
  for (const auto& n : preset_names()) s += (s.empty() ? "" : ", ") + n.first;
  return s;
}

// Options that may change when a run is resumed; everything else comes from its config.json.
const std::vector<std::string> kResumable = {
    "steps",   "time-limit",   "log-every",     "sample-every", "ckpt-every",
    "keep",    "device",       "threads",       "precision",    "nproc",
    "backend", "dist-timeout", "channels-last", "fused-norm",   "cuda-graph"};

void apply(TrainConfig& c, const Args& a, bool only_given) {
  auto want = [&](const std::string& n) { return a.has(n) && (!only_given || a.given(n)); };
  if (want("data")) c.data = a.str("data");
  if (want("image-size")) c.image_size = a.integer("image-size");
  if (want("flip") && a.flag("flip")) c.flip = true;
  if (want("model")) c.model = a.str("model");
  if (want("prediction")) c.prediction = a.str("prediction");
  if (want("variance")) c.variance = a.str("variance");
  if (want("loss")) c.loss = a.str("loss");
  if (want("loss-weighting")) c.loss_weighting = a.str("loss-weighting");
  if (want("schedule")) c.schedule = a.str("schedule");
  if (want("timesteps")) c.timesteps = a.integer("timesteps");
  if (want("timestep-sampler")) c.timestep_sampler = a.str("timestep-sampler");
  if (want("dropout")) c.dropout = a.number("dropout");
  if (want("class-cond") && a.flag("class-cond")) c.class_cond = true;
  if (want("label-dropout")) c.label_dropout = a.number("label-dropout");
  if (want("steps")) c.steps = a.integer("steps");
  if (want("batch")) c.batch = a.integer("batch");
  if (want("lr")) c.lr = a.number("lr");
  if (want("warmup")) c.warmup = a.integer("warmup");
  if (want("weight-decay")) c.weight_decay = a.number("weight-decay");
  if (want("grad-clip")) c.grad_clip = a.number("grad-clip");
  if (want("ema-decay")) c.ema_decay = a.number("ema-decay");
  if (want("no-ema-warmup") && a.flag("no-ema-warmup")) c.ema_warmup = false;
  if (want("seed")) c.seed = static_cast<uint64_t>(a.integer("seed"));
  if (want("time-limit")) c.time_limit = a.number("time-limit");
  if (want("out")) c.out = a.str("out");
  if (want("log-every")) c.log_every = a.integer("log-every");
  if (want("sample-every")) c.sample_every = a.integer("sample-every");
  if (want("ckpt-every")) c.ckpt_every = a.integer("ckpt-every");
  if (want("keep")) c.keep = a.integer("keep");
  if (want("sample-n")) c.sample_n = a.integer("sample-n");
  if (want("sample-steps")) c.sample_steps = a.integer("sample-steps");
  if (want("device")) c.device = a.str("device");
  if (want("precision")) c.precision = a.str("precision");
  if (want("threads")) c.threads = a.integer("threads");
  if (want("channels-last") && a.flag("channels-last")) c.channels_last = true;
  if (want("fused-norm") && a.flag("fused-norm")) c.fused_norm = true;
  if (want("cuda-graph") && a.flag("cuda-graph")) c.cuda_graph = true;
}

DistOptions dist_options(const Args& a) {
  DistOptions d;
  d.nproc = a.integer("nproc");
  d.backend = a.str("backend");
  d.timeout = a.number("dist-timeout");
  check(d.nproc >= 0, "--nproc must be >= 0, got ", d.nproc);
  check(d.timeout > 0, "--dist-timeout must be > 0 seconds, got ", d.timeout);
  return d;
}

int run_train(const Args& a) {
  const auto dist = dist_options(a);
  if (dist.nproc > 1) {
    check(!std::getenv("WORLD_SIZE"), "--nproc ", dist.nproc,
          " starts its own ranks; it cannot run under a launcher that set WORLD_SIZE");
    return launch_local_ranks(static_cast<int>(dist.nproc), own_args_without("nproc"));
  }
  const auto env = DistEnv::from_environment();
  if (a.has("resume")) {
    for (const auto& [name, given] : std::map<std::string, std::string>(a.values()))
      if (a.given(name) && name != "resume")
        check(
            std::find(kResumable.begin(), kResumable.end(), name) != kResumable.end(), "--", name,
            " cannot change when resuming (it is fixed by the run's config.json); "
            "resumable: --steps, --time-limit, --log-every, --sample-every, --ckpt-every, --keep, "
            "--device, --threads, --precision, --nproc, --backend, --dist-timeout, "
            "--channels-last, "
            "--fused-norm, --cuda-graph");
    auto trainer = Trainer::resume(
        a.str("resume"), [&](TrainConfig& c) { apply(c, a, true); }, env, dist);
    trainer->run();
    return 0;
  }
  TrainConfig cfg;
  apply(cfg, a, false);
  Trainer trainer(cfg, env, dist);
  if (trainer.is_main())
    std::cerr << "diffuse: training " << cfg.model << " on " << cfg.data << " into " << cfg.out
              << (env.distributed() ? " on " + std::to_string(env.world_size) + " processes" : "")
              << "\n";
  trainer.run();
  return 0;
}

}  // namespace

Command train_command() {
  const TrainConfig d;
  const DistOptions dd;
  Command c;
  c.name = "train";
  c.summary = "train a diffusion model (Ho et al. Algorithm 1) into a run folder";
  c.usage =
      "diffuse train --data SPEC --out RUN [options]   |   diffuse train --resume RUN [--steps N]";
  c.description =
      "The run folder holds config.json, log.jsonl (one JSON line per logged step), grids/ (DDIM\n"
      "samples from the EMA weights at a fixed seed) and checkpoints/step_N/ with the model and "
      "EMA\n"
      "weights in diffusers' UNet2DModel layout (unet/, unet_ema/), the scheduler config, "
      "optimizer\n"
      "and RNG state. Checkpoints are written atomically; --resume continues exactly.\n"
      "Data: fashion-mnist (Debian's dataset-fashion-mnist), mnist:DIR, idx:IMAGES_FILE,\n"
      "cifar10:DIR (binary batches), folder:DIR (PNG/JPEG, center-cropped and resized),\n"
      "synthetic (random pixels, for benchmarks).\n"
      "Data parallel: --nproc N starts N local processes; or a launcher (torchrun, a cluster\n"
      "script) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT for each process.\n"
      "--batch stays the global batch (each rank takes its slice); gradients are averaged with\n"
      "Gloo (CPU) or NCCL (CUDA); rank 0 alone writes the run folder, and a run resumes at any\n"
      "number of processes. GLOO_SOCKET_IFNAME picks the network interface across machines.\n"
      "Loss weightings (Hang et al. 2023), with SNR_t = abar_t / (1 - abar_t), as a weight\n"
      "lambda_t on the x_0 error: snr lambda_t = SNR_t (the eps-MSE whatever the network\n"
      "predicts; the same as simple for epsilon), min-snr-5 lambda_t = min(SNR_t, 5), i.e. w_t =\n"
      "min(SNR_t, 5)/SNR_t on the eps-MSE, min(SNR_t, 5) on the x0-MSE, min(SNR_t, 5)/(SNR_t + 1)\n"
      "on the v-MSE; vlb: w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) on the eps-MSE, "
      "which\n"
      "makes it the bound's KL term L_{t-1} (nats/dim, up to a constant) for the fixed variance\n"
      "sigma_t^2 (fixed-small or fixed-large only).\n"
      "Class conditioning (--class-cond): labels from the data; each is replaced by the null "
      "class\n"
      "with probability --label-dropout (from the run's seeded generator), so that `diffuse "
      "sample\n"
      "--class K --guidance S` can use classifier-free guidance.";
  c.options = {
      {"data", d.data, "dataset: fashion-mnist | mnist:DIR | idx:FILE | cifar10:DIR | folder:DIR"},
      {"out", d.out, "run folder to create"},
      {"resume", "", "continue the run in this folder from its newest checkpoint"},
      {"model", d.model, "model preset (" + presets_list() + ") or a diffusers config.json"},
      {"image-size", text(d.image_size), "training resolution (0 = the model's sample_size)"},
      {"flip", "", "random horizontal flips (off by default: they harm data with a handedness)",
       true},
      {"prediction", d.prediction, "what the network predicts: epsilon | x0 | v"},
      {"variance", d.variance, "reverse variance: fixed-small | fixed-large | learned-range"},
      {"loss", d.loss,
       "simple (L_simple) | hybrid (L_simple + 0.001 L_vlb, needs learned-range) | vlb (the "
       "bound's term L_t: KL, decoder NLL at t = 0)"},
      {"loss-weighting", d.loss_weighting,
       "weight w_t of the MSE: simple (1) | snr | min-snr-5 | vlb (see below)"},
      {"schedule", d.schedule, "noise schedule: linear | cosine"},
      {"timesteps", text(d.timesteps), "diffusion steps T"},
      {"timestep-sampler", d.timestep_sampler, "uniform | loss-second-moment"},
      {"dropout", text(d.dropout), "dropout (< 0 = the model config's value)"},
      {"class-cond", "",
       "class-conditional model (labelled data): num_class_embeds = classes + 1, the last the null "
       "class",
       true},
      {"label-dropout", text(d.label_dropout),
       "with --class-cond: probability of training on the null class instead of the label"},
      {"steps", text(d.steps), "total optimisation steps to reach"},
      {"batch", text(d.batch), "batch size (the global batch: all processes together)"},
      {"lr", text(d.lr), "AdamW learning rate"},
      {"warmup", text(d.warmup), "linear learning-rate warmup steps"},
      {"weight-decay", text(d.weight_decay), "AdamW decoupled weight decay"},
      {"grad-clip", text(d.grad_clip), "clip the global gradient norm to this (0 = off)"},
      {"ema-decay", text(d.ema_decay), "EMA decay of the weights"},
      {"no-ema-warmup", "", "use the EMA decay from the first step", true},
      {"seed", text(d.seed), "seed for weights, data order, t and noise"},
      {"time-limit", text(d.time_limit), "stop cleanly after this many seconds (0 = no limit)"},
      {"log-every", text(d.log_every), "steps between log lines"},
      {"sample-every", text(d.sample_every), "steps between preview grids (0 = never)"},
      {"ckpt-every", text(d.ckpt_every),
       "steps between checkpoints (one is always written at the end)"},
      {"keep", text(d.keep), "checkpoints to keep"},
      {"sample-n", text(d.sample_n), "images in each preview grid"},
      {"sample-steps", text(d.sample_steps), "DDIM steps for preview grids"},
      {"nproc", text(dd.nproc),
       "start this many local processes (data parallel, each with cores/N threads unless "
       "--threads; 0 or 1 = one)"},
      {"backend", dd.backend, "distributed backend: auto (nccl on CUDA, else gloo) | gloo | nccl"},
      {"dist-timeout", text(dd.timeout),
       "seconds a process waits for the others before failing (a rank died or stalled)"},
      {"channels-last", "", "CUDA: channels-last (NHWC) weights and activations", true},
      {"fused-norm", "",
       "CUDA: diffuse's fused GroupNorm+SiLU kernels (needs --channels-last; not yet checked on "
       "a GPU)",
       true},
      {"cuda-graph", "",
       "CUDA: capture the whole step (forward, backward, clipping, AdamW, EMA) as one CUDA graph "
       "(needs LibTorch >= 2.4; not yet checked on a GPU)",
       true},
  };
  for (auto& o : device_options()) c.options.push_back(o);
  c.run = run_train;
  return c;
}

}  // namespace diffuse::cli
