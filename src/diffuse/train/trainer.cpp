#include "diffuse/train/trainer.h"

#include <csignal>
#include <filesystem>
#include <iostream>

#include "diffuse/core/compat.h"
#include "diffuse/core/device.h"
#include "diffuse/core/error.h"
#include "diffuse/core/progress.h"
#include "diffuse/data/synthetic.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/checkpoint.h"
#include "diffuse/io/image.h"
#include "diffuse/io/safetensors.h"
#include "diffuse/models/class_labels.h"
#include "diffuse/models/group_norm_act.h"
#include "diffuse/models/presets.h"
#include "diffuse/models/weights.h"
#include "diffuse/pipeline/generate.h"
#include "diffuse/train/power_ema.h"

namespace fs = std::filesystem;

namespace diffuse {

namespace {

volatile std::sig_atomic_t g_stop_requested = 0;
void on_signal(int) {
  g_stop_requested = 1;
}

// The generator state as a uint8 tensor and back, so it can live in a safetensors file.
torch::Tensor generator_state(const at::Generator& g) {
  return g.get_state().clone();
}

void set_generator_state(at::Generator g, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(state);
}

UNetConfig model_config_for(const TrainConfig& cfg, const GaussianDiffusion& d) {
  auto mc = model_config_from_spec(cfg.model);
  if (cfg.dropout >= 0) mc.dropout = cfg.dropout;
  if (d.variance() == VarianceType::LearnedRange) mc = with_learned_variance(mc);
  return mc;
}

}  // namespace

Trainer::Trainer(TrainConfig cfg, DistEnv env, DistOptions dist)
    : Trainer(std::move(cfg), false, std::move(env), std::move(dist)) {}

Trainer::Trainer(TrainConfig cfg, bool for_resume, DistEnv env, DistOptions dist)
    : cfg_(std::move(cfg)),
      device_(parse_device(cfg_.device)),
      precision_(parse_precision(cfg_.precision, device_)),
      gen_(at::detail::createCPUGenerator(cfg_.seed)) {
  cfg_.validate();
  lr_schedule_ = {parse_lr_schedule(cfg_.lr_schedule), cfg_.lr, cfg_.warmup, cfg_.steps,
                  cfg_.lr_decay_fraction};
  if (!for_resume)
    check(list_checkpoints(cfg_.out).empty(), "--out ", cfg_.out,
          " already holds a run with checkpoints; continue it with --resume ", cfg_.out,
          " or choose another folder");
  if (env.distributed()) join_group(env, dist);
  configure_runtime(device_, precision_);
  if (cfg_.threads > 0)
    torch::set_num_threads(static_cast<int>(cfg_.threads));
  else if (group_)  // the local ranks share the cores
    torch::set_num_threads(std::max(1, torch::get_num_threads() / env.local_world_size));
  make_process();
  auto mc = model_config_for(cfg_, *diffusion_);
  const int64_t size = cfg_.image_size > 0 ? cfg_.image_size : mc.sample_size;
  auto data = training_data(mc, size);
  make_models(mc);
  make_loader(std::move(data), size);
  if (group_) reducer_ = std::make_unique<GradReducer>(model_->parameters(), *group_);
  split_dropout_stream();
  auto opts = torch::TensorOptions().device(device_).dtype(torch::kFloat32);
  loss_sum_ = torch::zeros({}, opts);
  gnorm_sum_ = torch::zeros({}, opts);
}

void Trainer::join_group(const DistEnv& env, const DistOptions& dist) {
  check(cfg_.batch % env.world_size == 0, "--batch ", cfg_.batch,
        " (the global batch) must be divisible by the ", env.world_size, " processes");
  // The graphed step would need its gradient all-reduce captured too (NCCL can be, Gloo cannot);
  // not attempted yet.
  check(!cfg_.cuda_graph || !device_.is_cuda(),
        "--cuda-graph is not yet supported with data-parallel training");
  // One GPU per local rank.
  if (device_.is_cuda() && !device_.has_index())
    device_ = torch::Device(
        torch::kCUDA, static_cast<c10::DeviceIndex>(
                          env.local_rank % std::max<int64_t>(1, torch::cuda::device_count())));
  group_ = std::make_unique<DistGroup>(env, resolve_backend(dist.backend, device_), dist.timeout);
}

// The process (schedule, prediction, variance), the loss and how t is drawn.
void Trainer::make_process() {
  process_.schedule = cfg_.schedule;
  process_.timesteps = cfg_.timesteps;
  process_.prediction = cfg_.prediction;
  process_.variance = cfg_.variance;
  diffusion_ = std::make_unique<GaussianDiffusion>(process_.make_diffusion());
  loss_type_ = parse_loss_type(cfg_.loss);
  if (loss_type_ == LossType::Hybrid)
    check(diffusion_->variance() == VarianceType::LearnedRange,
          "--loss hybrid needs --variance learned-range");
  loss_weighting_ = parse_loss_weighting(cfg_.loss_weighting);
  check(loss_type_ != LossType::Vlb || loss_weighting_ == LossWeighting::Simple,
        "--loss-weighting ", cfg_.loss_weighting,
        " weights the MSE of --loss simple or hybrid; --loss vlb takes --loss-weighting simple");
  diffusion_->loss_weight_table(loss_weighting_);  // rejects vlb with a learned variance
  tsampler_ =
      make_timestep_sampler(cfg_.timestep_sampler, cfg_.timesteps,
                            {cfg_.ts_mean, cfg_.ts_std, diffusion_->schedule().alphas_cumprod});
}

// The training set, checked against the model; a class-conditional model gets its class table
// (one embedding per class and the null class last) here.
Dataset Trainer::training_data(UNetConfig& mc, int64_t size) {
  Dataset data;
  if (cfg_.data == "synthetic") {
    data =
        synthetic_dataset(std::max<int64_t>(4 * cfg_.batch, 256), mc.in_channels, size, cfg_.seed);
  } else {
    // Fixed-size datasets load at their own size (0) and are padded by the loader, as DDPM pads
    // 28x28 to 32x32; folders need a size to crop and resize to.
    const bool folder = cfg_.data.rfind("folder:", 0) == 0;
    data =
        load_dataset(cfg_.data, "train", cfg_.image_size > 0 || folder ? size : 0, mc.in_channels);
  }
  if (cfg_.class_cond) {
    check(data.labels.defined() && data.num_classes >= 1, "--class-cond: --data ", cfg_.data,
          " has no labels");
    check(mc.num_class_embeds == 0 || mc.num_class_embeds == class_embeds_for(data.num_classes),
          "--model ", cfg_.model, " has num_class_embeds ", mc.num_class_embeds, " but --data ",
          cfg_.data, " has ", data.num_classes,
          " classes (and one more, the null class, is needed)");
    mc.num_class_embeds = class_embeds_for(data.num_classes);
    null_class_ = null_class(mc);
  } else {
    check(mc.num_class_embeds == 0, "--model ", cfg_.model, " is class-conditional (",
          "num_class_embeds ", mc.num_class_embeds, "): train it with --class-cond");
  }
  check(data.channels() == mc.in_channels, "--data ", cfg_.data, " has ", data.channels(),
        " channels but --model ", cfg_.model, " takes ", mc.in_channels);
  check(data.height() <= mc.sample_size || cfg_.image_size > 0, "--data ", cfg_.data,
        " images are ", data.height(), "x", data.width(), ", larger than the model's sample_size ",
        mc.sample_size);
  return data;
}

void Trainer::make_models(const UNetConfig& mc) {
  // Weights and dropout draw from the global generator: seeding it makes the run reproducible.
  torch::manual_seed(cfg_.seed);
  model_ = UNet2DModel(mc);
  ema_model_ = UNet2DModel(mc);
  model_->to(device_);
  ema_model_->to(device_);
  // Before the optimizer makes its moment buffers in the parameters' layout.
  model_->set_channels_last(cfg_.channels_last);
  ema_model_->set_channels_last(cfg_.channels_last);
  set_fused_group_norm(cfg_.fused_norm && device_.is_cuda());
  if (cfg_.cuda_graph && device_.is_cuda())
    captured_step_ = std::make_unique<CapturedStep>(device_);
  {
    torch::NoGradGuard no_grad;
    auto src = model_->parameters();
    auto dst = ema_model_->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  ema_model_->eval();
  opt_ = std::make_unique<AdamW>(
      model_->named_parameters().pairs(),
      AdamWOptions{cfg_.lr, cfg_.adam_beta1, cfg_.adam_beta2, cfg_.adam_eps, cfg_.weight_decay});
  ema_ = std::make_unique<Ema>(*model_, ema_model_.ptr(), cfg_.ema_decay, cfg_.ema_warmup);
  make_power_emas(mc);
}

void Trainer::make_power_emas(const UNetConfig& mc) {
  // Their initial weights are never used: made without drawing from the generator that dropout
  // then draws from, so keeping them does not change the run.
  const auto rng = generator_state(at::detail::getDefaultCPUGenerator());
  for (double sigma_rel : parse_sigma_rels(cfg_.ema_power)) {
    power_gammas_.push_back(sigma_rel_to_gamma(sigma_rel));
    UNet2DModel m(mc);
    m->to(device_);
    m->set_channels_last(cfg_.channels_last);
    m->eval();
    // The decay is given at every update; the first (beta_1 = 0) replaces the initial weights.
    power_emas_.push_back(std::make_unique<Ema>(*model_, m.ptr(), 0.0, false));
    power_models_.push_back(m);
  }
  set_generator_state(at::detail::getDefaultCPUGenerator(), rng);
}

void Trainer::update_power_emas() {
  auto opts = torch::TensorOptions().device(device_).dtype(device_.is_cuda() ? torch::kFloat32
                                                                             : torch::kFloat64);
  for (size_t i = 0; i < power_emas_.size(); ++i)
    power_emas_[i]->update(torch::full({}, power_ema_beta(step_ + 1, power_gammas_[i]), opts));
}

void Trainer::save_power_ema_snapshots() {
  if (!is_main()) return;
  for (size_t i = 0; i < power_models_.size(); ++i)
    save_power_ema_snapshot(power_ema_snapshot_path(cfg_.out, step_, i),
                            state_dict(*power_models_[i]),
                            {static_cast<double>(step_), power_gammas_[i]});
}

void Trainer::make_loader(Dataset data, int64_t size) {
  LoaderOptions lo;
  lo.batch_size = cfg_.batch;
  lo.seed = cfg_.seed;
  lo.random_flip = cfg_.flip;
  lo.pad_to = data.height() < size ? size : 0;
  lo.device = device_;
  if (group_) {
    lo.shard = group_->rank();
    lo.num_shards = group_->world_size();
  }
  loader_ = std::make_unique<Loader>(std::move(data), lo);
}

std::unique_ptr<Trainer> Trainer::resume(const std::string& run_dir,
                                         const std::function<void(TrainConfig&)>& override_cfg,
                                         DistEnv env, DistOptions dist) {
  const auto cfg_path = (fs::path(run_dir) / "config.json").string();
  check(fs::exists(cfg_path), "--resume ", run_dir,
        ": no config.json there (not a diffuse run folder)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(cfg_path));
  } catch (const nlohmann::json::exception& e) {
    fail(cfg_path, ": not valid JSON (", e.what(), ")");
  }
  auto cfg = TrainConfig::from_json(j, cfg_path);
  cfg.out = run_dir;
  const int64_t made_for = cfg.steps;
  if (override_cfg) override_cfg(cfg);
  if (cfg.steps != made_for && cfg.lr_schedule != "constant" && env.rank == 0)
    std::cerr << "diffuse: warning: --steps " << cfg.steps << " moves the end of the "
              << cfg.lr_schedule << " learning-rate schedule from step " << made_for
              << ": the rate follows the new budget from here on\n";
  std::vector<std::string> warnings;
  auto ck = load_latest_checkpoint(run_dir, &warnings);
  if (env.rank == 0)
    for (const auto& w : warnings) std::cerr << "diffuse: warning: " << w << "\n";
  check(ck.has_value(), "--resume ", run_dir, ": no complete checkpoint to resume from");
  std::unique_ptr<Trainer> t(new Trainer(cfg, true, std::move(env), std::move(dist)));
  t->restore(*ck);
  return t;
}

void Trainer::restore(const LoadedCheckpoint& ck) {
  auto& f = ck.files;
  auto need = [&](const std::string& rel) -> const std::map<std::string, torch::Tensor>& {
    auto it = f.tensors.find(rel);
    check(it != f.tensors.end(), ck.dir, ": checkpoint lacks ", rel);
    return it->second;
  };
  load_state_dict(*model_, need("unet/diffusion_pytorch_model.safetensors"), ck.dir + "/unet");
  load_state_dict(*ema_model_, need("unet_ema/diffusion_pytorch_model.safetensors"),
                  ck.dir + "/unet_ema");
  opt_->load_state_dict(need("optimizer.safetensors"), ck.dir + "/optimizer.safetensors");
  const auto& rng = need("rng.safetensors");
  gen_.set_state(rng.at("train_generator"));
  // Dropout draws from the default generator of the model's device; a copy of the handle shares
  // its state. Checkpoints from before the CUDA state was kept have none to restore.
  set_generator_state(at::detail::getDefaultCPUGenerator(), rng.at("default_cpu_generator"));
  if (device_.is_cuda() && rng.count("default_cuda_generator"))
    set_generator_state(at::globalContext().defaultGenerator(device_),
                        rng.at("default_cuda_generator"));
  for (size_t i = 0; i < power_models_.size(); ++i)
    load_state_dict(*power_models_[i], need("power_ema_" + std::to_string(i) + ".safetensors"),
                    ck.dir + "/power_ema_" + std::to_string(i) + ".safetensors");
  auto sampler = f.tensors.find("timestep_sampler.safetensors");
  if (sampler != f.tensors.end())
    tsampler_->load_state(sampler->second, ck.dir + "/timestep_sampler.safetensors");
  else if (!tsampler_->state().empty() && is_main())
    std::cerr << "diffuse: warning: " << ck.dir << " holds no timestep-sampler history (made "
              << "before it was checkpointed); the history starts again\n";
  auto it = f.texts.find("trainer_state.json");
  check(it != f.texts.end(), ck.dir, ": checkpoint lacks trainer_state.json");
  auto st = nlohmann::json::parse(it->second);
  step_ = st.at("step").get<int64_t>();
  wall_offset_ = st.value("wall_time", 0.0);
  time_fraction_ = st.value("lr_time_fraction", 0.0);
  loader_->reset({st.at("loader_epoch").get<int64_t>(), st.at("loader_position").get<int64_t>()});
  split_dropout_stream();
  if (is_main())
    std::cerr << "diffuse: resumed " << cfg_.out << " at step " << step_ << " from " << ck.dir
              << "\n";
}

void Trainer::sync_replicas() {
  if (!group_) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> all;
  for (auto* m : {&model_, &ema_model_}) {
    for (const auto& p : (*m)->parameters()) all.push_back(p);
    for (const auto& b : (*m)->buffers()) all.push_back(b);
  }
  group_->broadcast_from_main(all);
}

void Trainer::split_dropout_stream() {
  if (!group_ || group_->is_main()) return;
  const uint64_t r = static_cast<uint64_t>(group_->rank());
  torch::manual_seed(cfg_.seed ^ (0x9e3779b97f4a7c15ULL * (r + 1)) ^
                     (static_cast<uint64_t>(step_) << 20));
}

// Every random draw of a step comes from the run's CPU generator, for the whole global batch on
// every rank, and is then sliced: the ranks together see exactly what one process would.
Trainer::StepInputs Trainer::draw_inputs() {
  auto batch = loader_->next();
  StepInputs in;
  in.x0 = batch.x;  // (b, C, H, W): this rank's slice [lo, lo + b) of the global batch
  const int64_t B = group_ ? cfg_.batch : in.x0.size(0), b = in.x0.size(0);
  const int64_t lo = group_ ? B * group_->rank() / group_->world_size() : 0;
  auto draw = tsampler_->sample(B, device_, gen_);
  auto shape = in.x0.sizes().vec();
  shape[0] = B;
  in.noise = at::randn(shape, gen_, torch::kFloat32).narrow(0, lo, b).to(device_, true);
  in.t = draw.t.narrow(0, lo, b);
  in.weights = draw.weights.narrow(0, lo, b);
  in.t_batch = draw.t;
  if (null_class_ >= 0)
    in.labels = drop_labels(batch.y, null_class_, cfg_.label_dropout, gen_, B, lo);
  // float64 on the CPU, where the optimizer and the EMA read them on the host as they are.
  auto scalar = torch::TensorOptions().device(device_).dtype(device_.is_cuda() ? torch::kFloat32
                                                                               : torch::kFloat64);
  last_lr_ = next_lr();
  in.lr = torch::full({}, last_lr_, scalar);
  // The EMA's warmup counts the updates before this one, as diffusers' EMAModel does.
  in.ema_decay = torch::full({}, ema_->decay_at(step_), scalar);
  return in;
}

Trainer::StepOutputs Trainer::step_body(const StepInputs& in) {
  opt_->zero_grad();
  auto x_t = diffusion_->q_sample(in.x0, in.t, in.noise);
  torch::Tensor out;
  {
    AutocastGuard autocast(autocast_bf16(precision_));
    out = model_->forward(x_t, in.t, in.labels);
  }
  auto losses = diffusion_->training_losses(out.to(torch::kFloat32), in.x0, x_t, in.t, in.noise,
                                            loss_type_, loss_weighting_);
  // Each rank's mean over its slice; the mean over the ranks (GradReducer) is the global mean.
  auto loss = (losses.loss * in.weights).mean();
  loss.backward();
  if (reducer_) reducer_->finish();
  auto gnorm = opt_->clip_grad_norm(cfg_.grad_clip);
  opt_->step(in.lr);
  ema_->update(in.ema_decay);
  loss_sum_.add_(loss.detach());
  gnorm_sum_.add_(gnorm.to(torch::kFloat32));
  return {loss.detach(), losses.loss.detach()};
}

// step_body on inputs copied into buffers that outlive the calls, captured once and replayed.
Trainer::StepOutputs Trainer::captured_step(const StepInputs& in) {
  auto buffers = [](const StepInputs& s) {
    return std::vector<torch::Tensor>{s.x0, s.t, s.noise, s.weights, s.labels, s.lr, s.ema_decay};
  };
  if (!static_in_.x0.defined()) {
    static_in_ = in;
    static_in_.t_batch = torch::Tensor();
    for (auto* b : {&static_in_.x0, &static_in_.t, &static_in_.noise, &static_in_.weights,
                    &static_in_.labels, &static_in_.lr, &static_in_.ema_decay})
      if (b->defined()) *b = torch::empty_like(*b);
  }
  check(in.x0.sizes() == static_in_.x0.sizes(), "--cuda-graph: batch shape changed from ",
        static_in_.x0.sizes(), " to ", in.x0.sizes());
  auto dst = buffers(static_in_), src = buffers(in);
  for (size_t i = 0; i < dst.size(); ++i)
    if (dst[i].defined()) dst[i].copy_(src[i], /*non_blocking=*/true);
  (*captured_step_)([this] {
    auto out = step_body(static_in_);
    if (!static_out_.loss.defined()) static_out_ = {out.loss.clone(), out.losses.clone()};
    static_out_.loss.copy_(out.loss);
    static_out_.losses.copy_(out.losses);
  });
  return {static_out_.loss.clone(), static_out_.losses.clone()};
}

torch::Tensor Trainer::train_step() {
  model_->train();
  auto in = draw_inputs();
  auto out = captured_step_ ? captured_step(in) : step_body(in);
  update_power_emas();
  ++step_;
  ++since_log_;
  if (cfg_.timestep_sampler != "uniform") {
    // The sampler's history must see the whole batch on every rank, so its state stays shared.
    auto all = out.losses;
    if (group_) {
      const int64_t B = cfg_.batch, b = all.size(0), lo = B * group_->rank() / group_->world_size();
      all = torch::zeros({B}, out.losses.options());
      all.narrow(0, lo, b).copy_(out.losses);
      group_->allreduce_sum(all);
    }
    tsampler_->update(in.t_batch, all);
  }
  return out.loss;
}

void Trainer::save_checkpoint_now() {
  if (!is_main()) {
    split_dropout_stream();  // as a resume from this checkpoint would
    return;
  }
  CheckpointFiles files;
  files.tensors["unet/diffusion_pytorch_model.safetensors"] = state_dict(*model_);
  files.tensors["unet_ema/diffusion_pytorch_model.safetensors"] = state_dict(*ema_model_);
  files.texts["unet/config.json"] = model_->config().to_json().dump(2);
  files.texts["unet_ema/config.json"] = ema_model_->config().to_json().dump(2);
  files.texts["scheduler/scheduler_config.json"] = process_.to_scheduler_json().dump(2);
  files.tensors["optimizer.safetensors"] = opt_->state_dict();
  auto& rng = files.tensors["rng.safetensors"];
  rng = {{"train_generator", generator_state(gen_)},
         {"default_cpu_generator", generator_state(at::detail::getDefaultCPUGenerator())}};
  if (device_.is_cuda())
    rng["default_cuda_generator"] = generator_state(at::globalContext().defaultGenerator(device_));
  for (size_t i = 0; i < power_models_.size(); ++i)
    files.tensors["power_ema_" + std::to_string(i) + ".safetensors"] =
        state_dict(*power_models_[i]);
  auto sampler = tsampler_->state();
  if (!sampler.empty()) files.tensors["timestep_sampler.safetensors"] = std::move(sampler);
  const auto st = loader_->state();
  nlohmann::json ts = {{"step", step_},
                       {"loader_epoch", st.epoch},
                       {"loader_position", st.position},
                       {"wall_time", wall_time()},
                       {"lr_time_fraction", time_fraction_},
                       {"torch_version", torch_version()}};
  files.texts["trainer_state.json"] = ts.dump(2);
  save_checkpoint(cfg_.out, step_, files, cfg_.keep);
}

double Trainer::wall_time() const {
  if (!run_start_) return wall_offset_;
  return wall_offset_ +
         std::chrono::duration<double>(std::chrono::steady_clock::now() - *run_start_).count();
}

void Trainer::log_line(double loss, double grad_norm, double images_per_s, double wall) {
  nlohmann::json j = {{"step", step_},
                      {"loss", loss},
                      {"grad_norm", grad_norm},
                      {"lr", last_lr_},
                      {"images_per_s", images_per_s},
                      {"wall_time", wall}};
  log_ << j.dump() << "\n";
  log_.flush();
}

// Every rank samples the grid (rank 0 alone would keep the others waiting just as long, and
// close to the collectives' timeout on slow devices); rank 0 saves it.
void Trainer::write_preview_grid() {
  auto images = preview_samples(ema_model_, process_, cfg_.sample_n, cfg_.sample_steps,
                                cfg_.seed + 1, device_);
  if (!is_main()) return;
  const auto path = (fs::path(cfg_.out) / "grids" / (checkpoint_dir_name(step_) + ".png")).string();
  fs::create_directories(fs::path(path).parent_path());
  // Class-conditional models sample every class in turn: one column per class.
  const auto nrow =
      null_class_ >= 0
          ? null_class_
          : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(cfg_.sample_n))));
  save_grid_png(path, images, nrow);
}

Trainer::Tick Trainer::log_tick(double elapsed, Tick votes) {
  auto opts = loss_sum_.options();
  auto stats = torch::stack(
      {loss_sum_, gnorm_sum_, torch::full({}, votes.time_up ? 1.0 : 0.0, opts),
       torch::full({}, votes.interrupted ? 1.0 : 0.0, opts), torch::full({}, elapsed, opts)});
  if (group_) group_->allreduce_sum(stats);
  stats = stats.to(torch::kCPU, torch::kFloat64);
  const double world = group_ ? group_->world_size() : 1;
  const double loss = stats[0].item<double>() / world / since_log_;
  const double gnorm = stats[1].item<double>() / world / since_log_;
  loss_sum_.zero_();
  gnorm_sum_.zero_();
  since_log_ = 0;
  const auto now = std::chrono::steady_clock::now();
  const double dt = std::chrono::duration<double>(now - tick_time_).count();
  const double ips = dt > 0 ? (step_ - tick_step_) * cfg_.batch / dt : 0.0;
  tick_time_ = now;
  tick_step_ = step_;
  if (is_main()) log_line(loss, gnorm, ips, wall_offset_ + elapsed);
  char status[96];
  std::snprintf(status, sizeof status, "loss %.4f  %.0f img/s", loss, ips);
  return {stats[2].item<double>() > 0, stats[3].item<double>() > 0, status,
          stats[4].item<double>() / world};
}

void Trainer::spend_time(double elapsed) {
  if (cfg_.time_limit <= 0) return;
  time_fraction_ = time_fraction_start_ + (1 - time_fraction_start_) * elapsed / cfg_.time_limit;
}

void Trainer::run(bool progress) {
  sync_replicas();
  if (is_main()) {
    fs::create_directories(cfg_.out);
    write_file_atomic((fs::path(cfg_.out) / "config.json").string(), cfg_.to_json().dump(2));
    const auto log_path = (fs::path(cfg_.out) / "log.jsonl").string();
    log_.open(log_path, std::ios::app);
    check(log_.good(), log_path, ": cannot open for writing");
    // A process killed mid-line leaves a partial last line: end it, so that it stays one
    // unreadable line and the next one is whole.
    std::ifstream tail(log_path, std::ios::binary | std::ios::ate);
    if (tail && tail.tellg() > 0 && tail.seekg(-1, std::ios::end) && tail.get() != '\n')
      log_ << "\n";
  }
  g_stop_requested = 0;
  auto prev_int = std::signal(SIGINT, on_signal);
  auto prev_term = std::signal(SIGTERM, on_signal);
  const auto start = std::chrono::steady_clock::now();
  run_start_ = tick_time_ = start;
  tick_step_ = step_;
  time_fraction_start_ = time_fraction_;
  ProgressBar bar(cfg_.steps, "train", "step", progress && is_main());
  bar.resume_from(step_);
  if (cfg_.time_limit > 0) bar.set_time_limit(cfg_.time_limit);
  std::string stop_reason = "reached --steps";
  while (step_ < cfg_.steps) {
    train_step();
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!group_) spend_time(elapsed);
    const Tick votes{cfg_.time_limit > 0 && elapsed >= cfg_.time_limit, g_stop_requested != 0};
    // Ranks stop together: in a job they decide at log ticks, by the votes sent with the losses.
    Tick stop = group_ ? Tick{} : votes;
    if (step_ % cfg_.log_every == 0 || step_ == cfg_.steps) {
      const auto tick = log_tick(elapsed, votes);
      if (group_) {
        stop = tick;
        spend_time(tick.elapsed);
      }
      bar.set_extra(tick.status);
    }
    bar.update(1);
    if (cfg_.sample_every > 0 && step_ % cfg_.sample_every == 0) write_preview_grid();
    if (!power_models_.empty() && step_ % cfg_.ema_snapshot_every == 0) save_power_ema_snapshots();
    if (cfg_.ckpt_every > 0 && step_ % cfg_.ckpt_every == 0 && step_ < cfg_.steps && !stop.time_up)
      save_checkpoint_now();
    if (stop.time_up || stop.interrupted) {
      stop_reason = stop.time_up ? "reached --time-limit" : "interrupted";
      break;
    }
  }
  bar.finish();
  save_checkpoint_now();
  if (cfg_.sample_every > 0 && step_ % cfg_.sample_every != 0 && is_main()) write_preview_grid();
  if (!power_models_.empty() && step_ % cfg_.ema_snapshot_every != 0) save_power_ema_snapshots();
  std::signal(SIGINT, prev_int);
  std::signal(SIGTERM, prev_term);
  const double total_wall = wall_time();
  wall_offset_ = total_wall;
  run_start_.reset();
  if (is_main())
    std::cerr << "diffuse: training stopped at step " << step_ << " (" << stop_reason << "), "
              << format_duration(total_wall) << " of training in all; checkpoint in " << cfg_.out
              << "/checkpoints/" << checkpoint_dir_name(step_) << "\n";
}

}  // namespace diffuse
