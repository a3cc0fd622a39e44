// Algorithm 1 of Ho et al. as a tool for real runs: the step (forward, loss, backward, on-device
// clipping, AdamW, EMA) and the loop around it (logging, preview grids, atomic checkpoints, exact
// resume, a time limit), on one process or as one rank of a data-parallel job.
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "diffuse/core/device.h"
#include "diffuse/data/dataset.h"
#include "diffuse/data/loader.h"
#include "diffuse/diffusion/gaussian_diffusion.h"
#include "diffuse/diffusion/process_config.h"
#include "diffuse/diffusion/timestep_sampler.h"
#include "diffuse/dist/grad_reducer.h"
#include "diffuse/dist/process_group.h"
#include "diffuse/models/unet.h"
#include "diffuse/pipeline/cuda_graph.h"
#include "diffuse/train/adamw.h"
#include "diffuse/train/config.h"
#include "diffuse/train/ema.h"
#include "diffuse/train/lr_schedule.h"

namespace diffuse {

class Trainer {
 public:
  // A new run in cfg.out; an existing run there (with checkpoints) is an error suggesting --resume.
  // With env.world_size > 1 this process is rank env.rank of a data-parallel job: each rank
  // trains on its slice of every global batch of cfg.batch samples, gradients are averaged over
  // the ranks, and rank 0 alone writes the run folder.
  explicit Trainer(TrainConfig cfg, DistEnv env = {}, DistOptions dist = {});
  // Continues the run in run_dir from its newest checkpoint that verifies. `override_cfg` changes
  // what may change on resume (steps, time limit, intervals, device); the rest must match.
  // Any number of ranks may resume a run made by any other number.
  static std::unique_ptr<Trainer> resume(const std::string& run_dir,
                                         const std::function<void(TrainConfig&)>& override_cfg,
                                         DistEnv env = {}, DistOptions dist = {});

  // Trains until cfg.steps, the time limit, or SIGINT/SIGTERM; always ends with a checkpoint.
  void run(bool progress = true);
  // One optimisation step; returns the loss as a 0-dim device tensor (no host sync). With
  // --cuda-graph on CUDA the same step_body is captured once and replayed.
  torch::Tensor train_step();
  void save_checkpoint_now();

  int64_t step() const { return step_; }
  // Whether --cuda-graph's capture of the step has happened (and succeeded).
  bool step_captured() const { return captured_step_ && captured_step_->captured(); }
  const TrainConfig& config() const { return cfg_; }
  UNet2DModel& model() { return model_; }
  UNet2DModel& ema_model() { return ema_model_; }
  // --ema-power's shadows, in the order of its list.
  const std::vector<UNet2DModel>& power_ema_models() const { return power_models_; }
  const GaussianDiffusion& diffusion() const { return *diffusion_; }
  const ProcessConfig& process() const { return process_; }
  const TimestepSampler& timestep_sampler() const { return *tsampler_; }
  // The rate of the next step (lr_schedule.h).
  double next_lr() const { return lr_schedule_.lr(step_, time_fraction_); }
  // Rank 0, or the only process: the one that writes logs, grids and checkpoints.
  bool is_main() const { return !group_ || group_->is_main(); }

 private:
  // What one step consumes: this rank's slice of the global batch with its draws of t, noise and
  // dropped labels, and the step's learning rate and EMA decay as 0-dim device tensors.
  struct StepInputs {
    torch::Tensor x0, t, noise, weights, labels, lr, ema_decay;
    torch::Tensor t_batch;  // t of the whole global batch, for the timestep sampler's history
  };
  struct StepOutputs {
    torch::Tensor loss, losses;  // the weighted mean (0-dim) and the per-sample losses (b)
  };

  Trainer(TrainConfig cfg, bool for_resume, DistEnv env, DistOptions dist);
  void join_group(const DistEnv& env, const DistOptions& dist);
  void make_process();
  Dataset training_data(UNetConfig& mc, int64_t size);
  void make_models(const UNetConfig& mc);
  void make_loader(Dataset data, int64_t size);
  void restore(const struct LoadedCheckpoint& ck);
  void write_preview_grid();
  void log_line(double loss, double grad_norm, double images_per_s, double wall);
  // Every rank starts from rank 0's weights.
  void sync_replicas();
  // Ranks other than 0 draw dropout from their own stream, a function of (seed, rank, step) so
  // that it restarts identically after a checkpoint.
  void split_dropout_stream();
  StepInputs draw_inputs();
  // The step itself (Ho et al. Algorithm 1, lines 2-6, then clipping, AdamW and the EMA): reads
  // only `in` and the model's state, so that a CUDA graph can capture it as it is.
  StepOutputs step_body(const StepInputs& in);
  StepOutputs captured_step(const StepInputs& in);
  // A log tick, the loop's one host sync: reads (and in a job sums over the ranks) the mean loss
  // and gradient norm and the ranks' stop votes, and writes the log line.
  struct Tick {
    bool time_up = false, interrupted = false;
    std::string status;  // for the progress bar
    double elapsed = 0;  // this run() call's seconds, the mean over the ranks
  };
  Tick log_tick(double elapsed, Tick votes);

  TrainConfig cfg_;
  torch::Device device_;
  Precision precision_;
  ProcessConfig process_;
  std::unique_ptr<GaussianDiffusion> diffusion_;
  UNet2DModel model_{nullptr}, ema_model_{nullptr};
  std::unique_ptr<AdamW> opt_;
  LrSchedule lr_schedule_;
  // The share of the time budget spent, for the schedule. Each run() call with --time-limit spends
  // what the checkpoint left over its own limit: f = f0 + (1 - f0) elapsed / limit. Without a time
  // limit f stays at f0 (0 for a steps budget, so the rates are a function of the step alone).
  double time_fraction_ = 0, time_fraction_start_ = 0;
  double last_lr_ = 0;  // the rate of the last step, for the log
  // Sets time_fraction_ from this run() call's seconds; a job's ranks call it at log ticks with
  // the same (mean) seconds, so that every rank steps with the same rate.
  void spend_time(double elapsed);
  std::unique_ptr<Ema> ema_;
  // --ema-power: one shadow per sigma_rel, beta_t = (1 - 1/t)^(gamma + 1) (train/power_ema.h).
  std::vector<double> power_gammas_;
  std::vector<UNet2DModel> power_models_;
  std::vector<std::unique_ptr<Ema>> power_emas_;
  void make_power_emas(const UNetConfig& mc);
  void update_power_emas();  // after the step that makes update count step_ + 1
  void save_power_ema_snapshots();
  std::unique_ptr<Loader> loader_;
  std::unique_ptr<TimestepSampler> tsampler_;
  std::unique_ptr<DistGroup> group_;  // null: one process
  std::unique_ptr<GradReducer> reducer_;
  at::Generator gen_;  // t and noise; CPU, so a run is reproducible across devices
  LossType loss_type_;
  LossWeighting loss_weighting_;
  int64_t null_class_ = -1;  // the model's null class when class-conditional
  int64_t step_ = 0;
  torch::Tensor loss_sum_, gnorm_sum_;  // device accumulators between log ticks
  int64_t since_log_ = 0;
  std::chrono::steady_clock::time_point tick_time_;  // the last log tick: images/s since then
  int64_t tick_step_ = 0;
  std::ofstream log_;
  double wall_time() const;  // seconds of training in this run, earlier processes included
  double wall_offset_ = 0;   // wall time of the run before the current run() call
  std::optional<std::chrono::steady_clock::time_point> run_start_;
  // --cuda-graph: the captured step's inputs and outputs, in buffers that outlive the replays.
  StepInputs static_in_;
  StepOutputs static_out_;
  std::unique_ptr<CapturedStep> captured_step_;
};

}  // namespace diffuse
