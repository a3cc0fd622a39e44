// The U-Net's CPU inference path on oneDNN: weights packed once into the layouts oneDNN's
// convolutions prefer, activations in one channel-blocked layout from conv_in to conv_out (no
// reorders between layers), bias, residual add and output scale in the convolutions' epilogues,
// the time-embedding add inside the GroupNorm + SiLU kernel (cpu/blocked.h), attention as matmul
// and softmax primitives. It computes what UNet2DModelImpl::forward computes (the reference it is
// tested against) for float32 models; training and everything else keep ATen.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "diffuse/models/unet.h"

namespace diffuse {

// Which path a CPU forward takes: --cpu-engine.
enum class CpuEngine { Dnnl, Aten };
inline constexpr const char* kCpuEngineHelp =
    "auto | dnnl | aten: the CPU inference path (auto: dnnl when this build has oneDNN); "
    "training always uses aten";
// "auto", "dnnl" or "aten"; diffuse::Error naming --cpu-engine for anything else, or for dnnl
// in a build without oneDNN.
CpuEngine parse_cpu_engine(const std::string& spec);
// Process-wide choice (default: dnnl when compiled in), set once by the CLI's device options.
void set_cpu_engine(CpuEngine engine);
CpuEngine cpu_engine();
const char* cpu_engine_name(CpuEngine engine);
// Whether this build has oneDNN (DIFFUSE_WITH_DNNL at configure time).
bool dnnl_compiled();
// Why the oneDNN path cannot run cfg on this CPU (empty when it can): channel counts must be
// multiples of oneDNN's channel block (8 with AVX2, 16 with AVX-512).
std::string dnnl_unsupported(const UNetConfig& cfg);

// A U-Net packed for oneDNN from model's weights as they are now (later changes to the model's
// weights are not seen). model: float32 on the CPU, dnnl_unsupported(config) empty; otherwise
// diffuse::Error saying why. forward takes what UNet2DModelImpl::forward takes (same checks,
// same messages) and returns a (B, out_channels, H, W) float32 tensor.
class DnnlUNet {
 public:
  explicit DnnlUNet(UNet2DModel model);
  ~DnnlUNet();
  DnnlUNet(const DnnlUNet&) = delete;
  DnnlUNet& operator=(const DnnlUNet&) = delete;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t,
                        const torch::Tensor& class_labels = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Whether cpu_unet_forward would take the oneDNN path for this model and input.
bool dnnl_applies(const UNet2DModel& model, const torch::Tensor& x);
// model->forward(x, t, labels), through a DnnlUNet when dnnl_applies: the packed model is kept
// (a few models at a time) and repacked when any parameter is replaced or modified in place
// (tensor version counters), so an EMA model sampled during training stays current.
torch::Tensor cpu_unet_forward(UNet2DModel model, const torch::Tensor& x, const torch::Tensor& t,
                               const torch::Tensor& class_labels = {});

}  // namespace diffuse
