// Algorithm 1 of Ho et al. as a tool for real runs: the step (forward, loss, backward, on-device
// clipping, AdamW, EMA) and the loop around it (logging, preview grids, atomic checkpoints, exact
// resume, a time limit).
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "diffuse/data/loader.h"
#include "diffuse/diffusion/gaussian_diffusion.h"
#include "diffuse/diffusion/timestep_sampler.h"
#include "diffuse/models/unet.h"
#include "diffuse/train/adamw.h"
#include "diffuse/train/config.h"
#include "diffuse/train/cuda_graph.h"
#include "diffuse/train/ema.h"
#include "diffuse/train/model_source.h"

namespace diffuse {

class Trainer {
 public:
  // A new run in cfg.out; an existing run there (with checkpoints) is an error suggesting --resume.
  explicit Trainer(TrainConfig cfg);
  // Continues the run in run_dir from its newest checkpoint that verifies. `override_cfg` changes
  // what may change on resume (steps, time limit, intervals, device); the rest must match.
  static std::unique_ptr<Trainer> resume(const std::string& run_dir,
                                         const std::function<void(TrainConfig&)>& override_cfg);

  // Trains until cfg.steps, the time limit, or SIGINT/SIGTERM; always ends with a checkpoint.
  void run(bool progress = true);
  // One optimisation step; returns the loss as a 0-dim device tensor (no host sync).
  torch::Tensor train_step();
  void save_checkpoint_now();

  int64_t step() const { return step_; }
  // Whether --cuda-graph's capture of the step has happened (and succeeded).
  bool step_captured() const { return captured_step_ && captured_step_->captured(); }
  const TrainConfig& config() const { return cfg_; }
  UNet2DModel& model() { return model_; }
  UNet2DModel& ema_model() { return ema_model_; }
  const GaussianDiffusion& diffusion() const { return *diffusion_; }
  const ProcessConfig& process() const { return process_; }

 private:
  Trainer(TrainConfig cfg, bool for_resume);
  void restore(const struct LoadedCheckpoint& ck);
  void write_preview_grid();
  void log_line(double loss, double grad_norm, double images_per_s, double wall);
  torch::Tensor graphed_train_step();
  void graph_body();  // the captured step: reads and writes only the tensors of Captured

  TrainConfig cfg_;
  torch::Device device_;
  ProcessConfig process_;
  std::unique_ptr<GaussianDiffusion> diffusion_;
  UNet2DModel model_{nullptr}, ema_model_{nullptr};
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<Ema> ema_;
  std::unique_ptr<Loader> loader_;
  std::unique_ptr<TimestepSampler> tsampler_;
  at::Generator gen_;  // t and noise; CPU, so a run is reproducible across devices
  LossType loss_type_;
  int64_t step_ = 0;
  torch::Tensor loss_sum_, gnorm_sum_;  // device accumulators between log ticks
  int64_t since_log_ = 0;
  std::ofstream log_;
  double wall_time() const;  // seconds of training in this run, earlier processes included
  double wall_offset_ = 0;   // wall time of the run before the current run() call
  std::optional<std::chrono::steady_clock::time_point> run_start_;
  // --cuda-graph: the step's inputs in static buffers, per-step scalars on the device.
  struct Captured {
    torch::Tensor x0, t, noise, weights, lr, ema_decay, loss;
  };
  Captured static_;
  std::unique_ptr<CapturedStep> captured_step_;
};

}  // namespace diffuse
