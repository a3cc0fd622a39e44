// diffuse bench: forward, training-step and sampling speed of a model preset, timed with CUDA
// events on a GPU and a steady clock on the CPU; warm-up excluded; medians of repeats.
#include <iostream>

#include "commands.h"
#include "diffuse/core/compat.h"
#include "diffuse/core/error.h"
#include "diffuse/core/timer.h"
#include "diffuse/cpu/unet_engine.h"
#include "diffuse/models/group_norm_act.h"
#include "diffuse/models/presets.h"
#include "diffuse/models/weights.h"
#include "diffuse/pipeline/cuda_graph.h"
#include "diffuse/pipeline/generate.h"
#include "diffuse/train/trainer.h"

namespace diffuse::cli {

namespace {

struct Figures {
  std::vector<double> ms;
  int64_t peak = 0;
};

template <typename F>
Figures time_repeats(const torch::Device& device, int64_t warmup, int64_t repeats, F&& f) {
  for (int64_t i = 0; i < warmup; ++i) f();
  synchronize(device);
  reset_peak_memory(device);
  Figures r;
  DeviceTimer timer(device);
  for (int64_t i = 0; i < repeats; ++i) {
    timer.start();
    f();
    r.ms.push_back(timer.stop_ms());
  }
  r.peak = peak_memory_bytes(device);
  return r;
}

// The command line's settings, checked, with the device set up.
struct Settings {
  std::string what, spec;
  torch::Device device = torch::kCPU;
  int64_t batch = 0, warmup = 0, repeats = 0;
  Precision precision{};
  bool bf16 = false, graph = false, channels_last = false, fused_norm = false;
};

Settings read_settings(const Args& a) {
  check(a.positional.size() == 1, "diffuse bench: name one of train, forward, sample");
  Settings s;
  s.what = a.positional[0];
  check(s.what == "train" || s.what == "forward" || s.what == "sample",
        "diffuse bench: unknown benchmark '", s.what, "' (train, forward or sample)");
  s.device = setup_device(a);
  s.spec = a.str("model");
  s.batch = a.integer("batch");
  s.warmup = a.integer("warmup");
  s.repeats = a.integer("repeats");
  check(s.batch >= 1 && s.repeats >= 1 && s.warmup >= 0,
        "--batch and --repeats must be >= 1, --warmup >= 0");
  s.precision = precision_of(a, s.device);
  s.bf16 = autocast_bf16(s.precision);
  s.graph = a.flag("cuda-graph");
  s.channels_last = s.device.is_cuda() && a.flag("channels-last");
  s.fused_norm = s.device.is_cuda() && a.flag("fused-norm");
  check(!a.flag("fused-norm") || a.flag("channels-last"),
        "--fused-norm needs --channels-last (the kernels take NHWC activations)");
  check(!s.fused_norm || fused_group_norm_compiled(),
        "--fused-norm: this build has no CUDA kernels (it needs a CUDA LibTorch and nvcc)");
  return s;
}

struct Measured {
  Figures fig;
  int64_t params = 0;
};

Measured bench_train(const Args& a, const Settings& s) {
  TrainConfig tc;
  tc.data = "synthetic";
  tc.model = s.spec;
  tc.batch = s.batch;
  tc.device = a.str("device");
  tc.threads = a.integer("threads");
  tc.precision = a.str("precision");
  tc.channels_last = s.channels_last;
  tc.fused_norm = s.fused_norm;
  tc.cuda_graph = s.graph && s.device.is_cuda();
  tc.out = "/tmp/diffuse-bench-run";
  tc.ckpt_every = tc.sample_every = 0;
  Trainer trainer(tc);
  Measured m;
  m.params = count_parameters(*trainer.model());
  // A captured step is captured on the 4th call (after 3 eager ones): keep that out of the
  // timing.
  const int64_t untimed = tc.cuda_graph ? std::max<int64_t>(s.warmup, 4) : s.warmup;
  m.fig = time_repeats(s.device, untimed, s.repeats, [&] { trainer.train_step(); });
  return m;
}

Figures bench_forward(UNet2DModel& model, const torch::Tensor& x, const Settings& s) {
  c10::InferenceMode inference;
  auto t = torch::randint(0, 1000, {s.batch},
                          torch::TensorOptions().dtype(torch::kLong).device(s.device));
  std::unique_ptr<GraphedForward> graphed;
  if (s.graph && s.device.is_cuda())
    graphed = std::make_unique<GraphedForward>(model, x.sizes().vec(), s.bf16);
  return time_repeats(s.device, s.warmup, s.repeats, [&] {
    if (graphed) {
      (*graphed)(x, t);
    } else {
      AutocastGuard autocast(s.bf16);
      cpu_unet_forward(model, x, t);
    }
  });
}

Figures bench_sample(const Args& a, UNet2DModel& model, const UNetConfig& cfg, const Settings& s) {
  ProcessConfig process;
  const auto kind = a.str("sampler");
  GenerateOptions g;
  g.n = g.batch = s.batch;
  g.bf16 = s.bf16;
  g.progress = false;
  // Captured once, outside the timed runs, as a sampling service would keep it.
  if (s.graph && s.device.is_cuda())
    g.model_fn = graphed_unet_model_fn(
        model, {s.batch, cfg.in_channels, cfg.sample_size, cfg.sample_size}, s.bf16);
  const auto steps = a.integer("steps");
  return time_repeats(s.device, std::min<int64_t>(s.warmup, 1), s.repeats, [&] {
    generate(model, process, sampler_options(process, kind, steps), g, s.device);
  });
}

// forward and sample: a U-Net with random weights.
Measured bench_unet(const Args& a, const UNetConfig& cfg, const Settings& s) {
  torch::manual_seed(0);
  UNet2DModel model(cfg);
  model->to(s.device);
  model->set_channels_last(s.channels_last);
  model->eval();
  Measured m;
  m.params = count_parameters(*model);
  auto x = torch::randn({s.batch, cfg.in_channels, cfg.sample_size, cfg.sample_size},
                        torch::TensorOptions().device(s.device));
  m.fig = s.what == "forward" ? bench_forward(model, x, s) : bench_sample(a, model, cfg, s);
  return m;
}

nlohmann::json result_json(const Args& a, const Settings& s, const Measured& m, double ms,
                           double ips) {
  nlohmann::json j = {{"bench", s.what},
                      {"model", s.spec},
                      {"params", m.params},
                      {"batch", s.batch},
                      {"device", s.device.str()},
                      {"threads", torch::get_num_threads()},
                      {"precision", precision_name(s.precision)},
                      {"cuda_graph", s.graph && s.device.is_cuda()},
                      {"channels_last", s.channels_last},
                      {"fused_norm", s.fused_norm},
                      {"cpu_engine", s.device.is_cpu() ? cpu_engine_name(cpu_engine()) : "none"},
                      {"median_ms", ms},
                      {"images_per_s", ips},
                      {"peak_memory_bytes", m.fig.peak},
                      {"repeats", s.repeats},
                      {"torch", torch_version()}};
  if (s.what == "sample") {
    j["sampler"] = a.str("sampler");
    j["steps"] = a.integer("steps");
  }
  return j;
}

int run_bench(const Args& a) {
  const auto s = read_settings(a);
  set_fused_group_norm(s.fused_norm);
  auto cfg = model_config_from_spec(s.spec);
  const auto m = s.what == "train" ? bench_train(a, s) : bench_unet(a, cfg, s);
  const double ms = median(m.fig.ms);
  const double ips = s.batch / (ms / 1000.0);
  if (a.flag("json")) {
    std::cout << result_json(a, s, m, ms, ips).dump() << std::endl;
  } else {
    std::printf(
        "%s %s batch %lld on %s: median %.2f ms, %.1f images/s, peak memory %.2f GiB (%lld "
        "repeats)\n",
        s.what.c_str(), s.spec.c_str(), static_cast<long long>(s.batch), s.device.str().c_str(), ms,
        ips, m.fig.peak / double(1 << 30), static_cast<long long>(s.repeats));
  }
  return 0;
}

}  // namespace

Command bench_command() {
  Command c;
  c.name = "bench";
  c.summary = "time the forward pass, a training step or sampling of a model preset";
  c.usage =
      "diffuse bench train|forward|sample --model PRESET --batch B [--sampler S --steps N] "
      "[--json]";
  c.description =
      "Weights are random (speed does not depend on them); training uses random pixels. On CUDA "
      "the\n"
      "times are CUDA-event medians and the memory is the caching allocator's peak; on the CPU a\n"
      "steady clock and the process's peak resident set. Warm-up runs are not timed.";
  c.options = {
      {"model", "ddpm-cifar10", "model preset or diffusers config.json"},
      {"batch", "1", "batch size"},
      {"sampler", "ddim", "sample: " + sampler_names()},
      {"steps", "50", "sample: network evaluations"},
      {"warmup", "3", "untimed runs first"},
      {"repeats", "10", "timed runs (the median is reported)"},
      {"cuda-graph", "",
       "replay the forward (forward, sample) or the whole step (train) from a CUDA graph", true},
      {"channels-last", "", "CUDA: channels-last (NHWC) weights and activations", true},
      {"fused-norm", "", "CUDA: diffuse's fused GroupNorm+SiLU kernels (with --channels-last)",
       true},
      {"json", "", "one JSON object per line", true}};
  for (auto& o : device_options()) c.options.push_back(o);
  c.run = run_bench;
  return c;
}

}  // namespace diffuse::cli
