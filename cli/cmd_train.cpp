// diffuse train: Algorithm 1 of Ho et al. on a dataset, into a run folder.
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <type_traits>
#include <variant>

#include "commands.h"
#include "diffuse/core/error.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/dist/launcher.h"
#include "diffuse/dist/process_group.h"
#include "diffuse/io/checkpoint.h"
#include "diffuse/io/run_lock.h"
#include "diffuse/train/trainer.h"

namespace diffuse::cli {

namespace {

template <typename T>
std::string text(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// Sets each field of the table from its option: only those given on the command line when
// only_given, else every option that has a value (its default included).
void apply(TrainConfig& c, const Args& a, bool only_given) {
  for (const auto& f : train_fields()) {
    if (!a.has(f.flag) || (only_given && !a.given(f.flag))) continue;
    std::visit(
        [&](auto member) {
          using T = std::decay_t<decltype(c.*member)>;
          if constexpr (std::is_same_v<T, bool>) {
            if (a.flag(f.flag)) c.*member = !f.negated;
          } else if constexpr (std::is_same_v<T, std::string>) {
            c.*member = a.str(f.flag);
          } else if constexpr (std::is_same_v<T, double>) {
            c.*member = a.number(f.flag);
          } else {
            c.*member = static_cast<T>(a.integer(f.flag));
          }
        },
        f.field);
  }
}

// A resumed run takes its recipe from config.json: of the table's options only the resumable
// ones may be given (the options outside the table, --nproc and the like, configure the process).
void check_resumable(const Args& a) {
  std::string allowed;
  for (const auto& f : train_fields())
    if (f.resumable) allowed += (allowed.empty() ? "--" : ", --") + f.flag;
  allowed += ", --nproc, --backend, --dist-timeout";
  for (const auto& f : train_fields())
    check(f.resumable || !a.given(f.flag), "--", f.flag,
          " cannot change when resuming (it is fixed by the run's config.json); resumable: ",
          allowed);
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

// The process that writes the run folder (rank 0, or the only one) owns it while it trains: the
// folder is checked writable, locked against a second trainer, and cleared of what an interrupted
// checkpoint left. A missing --resume folder is left to Trainer::resume to report.
std::unique_ptr<RunLock> own_run_folder(const std::string& dir, const std::string& what,
                                        const DistEnv& env) {
  if (env.rank != 0 || (what == "--resume" && !std::filesystem::is_directory(dir))) return nullptr;
  check_writable_folder(dir, 0, what);
  auto lock = std::make_unique<RunLock>(dir, what);
  for (const auto& line : clean_checkpoint_leftovers(dir)) std::cerr << "diffuse: " << line << "\n";
  return lock;
}

// Room for one more checkpoint (weights, EMA weights and AdamW's two moments, float32) before
// the first step: the previous one is deleted only after the new one is in place.
void check_checkpoint_space(Trainer& t, const std::string& what) {
  if (!t.is_main()) return;
  uint64_t values = 0;
  for (const auto& p : t.model()->parameters()) values += static_cast<uint64_t>(p.numel());
  check_writable_folder(t.config().out, 4 * 4 * values + (1 << 20), what);
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
    check_resumable(a);
    const auto lock = own_run_folder(a.str("resume"), "--resume", env);
    auto trainer = Trainer::resume(
        a.str("resume"), [&](TrainConfig& c) { apply(c, a, true); }, env, dist);
    check_checkpoint_space(*trainer, "--resume");
    trainer->run();
    return 0;
  }
  TrainConfig cfg;
  apply(cfg, a, false);
  const auto lock = own_run_folder(cfg.out, "--out", env);
  Trainer trainer(cfg, env, dist);
  check_checkpoint_space(trainer, "--out");
  if (trainer.is_main())
    std::cerr << "diffuse: training " << cfg.model << " on " << cfg.data << " into " << cfg.out
              << (env.distributed() ? " on " + std::to_string(env.world_size) + " processes" : "")
              << "\n";
  trainer.run();
  return 0;
}

// clang-format off
constexpr const char* kDescription =
    "The run folder holds config.json, log.jsonl (one JSON line per logged step), grids/ (DDIM\n"
    "samples from the EMA weights at a fixed seed) and checkpoints/step_N/ with the model and EMA\n"
    "weights in diffusers' UNet2DModel layout (unet/, unet_ema/), the scheduler config, optimizer\n"
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
    "on the v-MSE; vlb: w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) on the eps-MSE, which\n"
    "makes it the bound's KL term L_{t-1} (nats/dim, up to a constant) for the fixed variance\n"
    "sigma_t^2 (fixed-small or fixed-large only).\n"
    "Class conditioning (--class-cond): labels from the data; each is replaced by the null class\n"
    "with probability --label-dropout (from the run's seeded generator), so that `diffuse sample\n"
    "--class K --guidance S` can use classifier-free guidance.";
// clang-format on

}  // namespace

Command train_command() {
  const TrainConfig d;
  const DistOptions dd;
  Command c;
  c.name = "train";
  c.summary = "train a diffusion model (Ho et al. Algorithm 1) into a run folder";
  c.usage =
      "diffuse train --data SPEC --out RUN [options]   |   diffuse train --resume RUN [--steps N]";
  c.description = kDescription;
  for (const auto& f : train_fields()) {
    const auto def = std::visit(
        [&](auto member) { return f.is_flag() ? std::string() : text(d.*member); }, f.field);
    c.options.push_back({f.flag, def, f.help, f.is_flag()});
    if (f.flag == "out")
      c.options.push_back(
          {"resume", "", "continue the run in this folder from its newest checkpoint"});
  }
  c.options.push_back({"nproc", text(dd.nproc),
                       "start this many local processes (data parallel, each with cores/N threads "
                       "unless --threads; 0 or 1 = one)"});
  c.options.push_back(
      {"backend", dd.backend, "distributed backend: auto (nccl on CUDA, else gloo) | gloo | nccl"});
  c.options.push_back(
      {"dist-timeout", text(dd.timeout),
       "seconds a process waits for the others before failing (a rank died or stalled)"});
  c.run = run_train;
  return c;
}

}  // namespace diffuse::cli
