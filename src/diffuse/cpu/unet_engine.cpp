#include "diffuse/cpu/unet_engine.h"

#include <deque>
#include <mutex>
#include <utility>
#include <vector>

#include "diffuse/core/error.h"

#if DIFFUSE_WITH_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace diffuse {

namespace {

CpuEngine& engine_choice() {
  static CpuEngine e = dnnl_compiled() ? CpuEngine::Dnnl : CpuEngine::Aten;
  return e;
}

// What identifies a model's weights as they are: each parameter's storage and version counter
// (bumped by every in-place change: an optimiser step, an EMA update, load_state_dict).
std::vector<std::pair<const void*, uint32_t>> fingerprint(const UNet2DModel& model) {
  std::vector<std::pair<const void*, uint32_t>> fp;
  for (const auto& p : model->parameters()) fp.emplace_back(p.data_ptr(), p._version());
  return fp;
}

struct Packed {
  UNet2DModel model{nullptr};  // held, so its address is not reused by another model while cached
  std::vector<std::pair<const void*, uint32_t>> fingerprint;
  std::shared_ptr<DnnlUNet> engine;
};

// The engine for model's current weights, packed on first use and after any weight change. A
// few models (a sampler's model and a classifier-free guidance pair, an EMA and a raw model).
std::shared_ptr<DnnlUNet> packed_for(const UNet2DModel& model) {
  static std::mutex mu;
  static std::deque<Packed> cache;
  constexpr size_t kKept = 2;
  auto fp = fingerprint(model);
  std::lock_guard<std::mutex> lock(mu);
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (it->model.get() != model.get()) continue;
    if (it->fingerprint == fp) return it->engine;
    cache.erase(it);
    break;
  }
  auto engine = std::make_shared<DnnlUNet>(model);
  cache.push_front({model, std::move(fp), engine});
  if (cache.size() > kKept) cache.pop_back();
  return engine;
}

}  // namespace

CpuEngine parse_cpu_engine(const std::string& spec) {
  if (spec == "auto") return dnnl_compiled() ? CpuEngine::Dnnl : CpuEngine::Aten;
  if (spec == "aten") return CpuEngine::Aten;
  if (spec == "dnnl") {
    check(dnnl_compiled(),
          "--cpu-engine dnnl: this build has no oneDNN (install libdnnl-dev, scripts/setup.sh "
          "does, and reconfigure); use --cpu-engine aten");
    return CpuEngine::Dnnl;
  }
  fail("--cpu-engine: unknown engine '", spec, "' (expected auto, dnnl or aten)");
}

void set_cpu_engine(CpuEngine engine) {
  engine_choice() = engine;
}

CpuEngine cpu_engine() {
  return engine_choice();
}

const char* cpu_engine_name(CpuEngine engine) {
  return engine == CpuEngine::Dnnl ? "dnnl" : "aten";
}

bool dnnl_compiled() {
#if DIFFUSE_WITH_DNNL
  return true;
#else
  return false;
#endif
}

std::string dnnl_unsupported(const UNetConfig& cfg) {
#if DIFFUSE_WITH_DNNL
  const int64_t blk = dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core ? 16 : 8;
  for (const auto c : cfg.block_out_channels)
    if (c % blk != 0)
      return "block_out_channels " + std::to_string(c) + " is not a multiple of " +
             std::to_string(blk) + " (oneDNN's channel block on this CPU)";
  return "";
#else
  (void)cfg;
  return "this build has no oneDNN";
#endif
}

bool dnnl_applies(const UNet2DModel& model, const torch::Tensor& x) {
  if (cpu_engine() != CpuEngine::Dnnl || !x.defined() || !x.device().is_cpu()) return false;
  const auto params = model->parameters();
  if (params.empty() || !params.front().device().is_cpu() ||
      params.front().scalar_type() != torch::kFloat32)
    return false;
  // The engine computes the network in eval mode: with dropout active only ATen matches.
  if (model->is_training() && model->config().dropout > 0) return false;
  return dnnl_unsupported(model->config()).empty();
}

torch::Tensor cpu_unet_forward(UNet2DModel model, const torch::Tensor& x, const torch::Tensor& t,
                               const torch::Tensor& class_labels) {
  if (!dnnl_applies(model, x)) return model->forward(x, t, class_labels);
  return packed_for(model)->forward(x, t, class_labels).to(x.scalar_type());
}

#if !DIFFUSE_WITH_DNNL
struct DnnlUNet::Impl {};
DnnlUNet::DnnlUNet(UNet2DModel) {
  fail("cpu engine dnnl: this build has no oneDNN");
}
DnnlUNet::~DnnlUNet() = default;
torch::Tensor DnnlUNet::forward(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) {
  fail("cpu engine dnnl: this build has no oneDNN");
}
#endif

}  // namespace diffuse
