// diffuse bench: forward, training-step and sampling speed of a model preset, timed with CUDA
// events on a GPU and a steady clock on the CPU; warm-up excluded; medians of repeats.
#include <iostream>

#include "commands.h"
#include "diffuse/core/compat.h"
#include "diffuse/core/error.h"
#include "diffuse/core/timer.h"
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

int run_bench(const Args& a) {
  check(a.positional.size() == 1, "diffuse bench: name one of train, forward, sample");
  const auto what = a.positional[0];
  check(what == "train" || what == "forward" || what == "sample",
        "diffuse bench: unknown benchmark '", what, "' (train, forward or sample)");
  const auto device = setup_device(a);
  const auto spec = a.str("model");
  const int64_t B = a.integer("batch"), warmup = a.integer("warmup"),
                repeats = a.integer("repeats");
  check(B >= 1 && repeats >= 1 && warmup >= 0, "--batch and --repeats must be >= 1, --warmup >= 0");
  const auto precision = precision_of(a, device);
  const bool bf16 = autocast_bf16(precision);
  const bool graph = a.flag("cuda-graph");
  const bool channels_last = device.is_cuda() && a.flag("channels-last");
  const bool fused_norm = device.is_cuda() && a.flag("fused-norm");
  check(!a.flag("fused-norm") || a.flag("channels-last"),
        "--fused-norm needs --channels-last (the kernels take NHWC activations)");
  check(!fused_norm || fused_group_norm_compiled(),
        "--fused-norm: this build has no CUDA kernels (it needs a CUDA LibTorch and nvcc)");
  set_fused_group_norm(fused_norm);
  auto cfg = model_config_from_spec(spec);
  Figures fig;
  int64_t images_per_call = B;
  int64_t params = 0;
  if (what == "train") {
    TrainConfig tc;
    tc.data = "synthetic";
    tc.model = spec;
    tc.batch = B;
    tc.device = a.str("device");
    tc.threads = a.integer("threads");
    tc.precision = a.str("precision");
    tc.channels_last = channels_last;
    tc.fused_norm = fused_norm;
    tc.cuda_graph = graph && device.is_cuda();
    tc.out = "/tmp/diffuse-bench-run";
    tc.ckpt_every = tc.sample_every = 0;
    Trainer trainer(tc);
    params = count_parameters(*trainer.model());
    // A captured step is captured on the 4th call (after 3 eager ones): keep that out of the
    // timing.
    const int64_t untimed = tc.cuda_graph ? std::max<int64_t>(warmup, 4) : warmup;
    fig = time_repeats(device, untimed, repeats, [&] { trainer.train_step(); });
  } else {
    torch::manual_seed(0);
    UNet2DModel model(cfg);
    model->to(device);
    model->set_channels_last(channels_last);
    model->eval();
    params = count_parameters(*model);
    auto x = torch::randn({B, cfg.in_channels, cfg.sample_size, cfg.sample_size},
                          torch::TensorOptions().device(device));
    if (what == "forward") {
      c10::InferenceMode inference;
      auto t =
          torch::randint(0, 1000, {B}, torch::TensorOptions().dtype(torch::kLong).device(device));
      std::unique_ptr<GraphedForward> graphed;
      if (graph && device.is_cuda())
        graphed = std::make_unique<GraphedForward>(model, x.sizes().vec(), bf16);
      fig = time_repeats(device, warmup, repeats, [&] {
        if (graphed) {
          (*graphed)(x, t);
        } else {
          AutocastGuard autocast(bf16);
          model->forward(x, t);
        }
      });
    } else {
      ProcessConfig process;
      const auto kind = a.str("sampler");
      GenerateOptions g;
      g.n = g.batch = B;
      g.bf16 = bf16;
      g.progress = false;
      // Captured once, outside the timed runs, as a sampling service would keep it.
      if (graph && device.is_cuda())
        g.model_fn = graphed_unet_model_fn(
            model, {B, cfg.in_channels, cfg.sample_size, cfg.sample_size}, bf16);
      const auto steps = a.integer("steps");
      fig = time_repeats(device, std::min<int64_t>(warmup, 1), repeats, [&] {
        generate(model, process, sampler_options(process, kind, steps), g, device);
      });
    }
  }
  const double ms = median(fig.ms);
  const double ips = images_per_call / (ms / 1000.0);
  nlohmann::json j = {{"bench", what},
                      {"model", spec},
                      {"params", params},
                      {"batch", B},
                      {"device", device.str()},
                      {"threads", torch::get_num_threads()},
                      {"precision", precision_name(precision)},
                      {"cuda_graph", graph && device.is_cuda()},
                      {"channels_last", channels_last},
                      {"fused_norm", fused_norm},
                      {"median_ms", ms},
                      {"images_per_s", ips},
                      {"peak_memory_bytes", fig.peak},
                      {"repeats", repeats},
                      {"torch", torch_version()}};
  if (what == "sample") {
    j["sampler"] = a.str("sampler");
    j["steps"] = a.integer("steps");
  }
  if (a.flag("json")) {
    std::cout << j.dump() << std::endl;
  } else {
    std::printf(
        "%s %s batch %lld on %s: median %.2f ms, %.1f images/s, peak memory %.2f GiB (%lld "
        "repeats)\n",
        what.c_str(), spec.c_str(), static_cast<long long>(B), device.str().c_str(), ms, ips,
        fig.peak / double(1 << 30), static_cast<long long>(repeats));
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
