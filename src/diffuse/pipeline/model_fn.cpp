#include "diffuse/pipeline/model_fn.h"

#include "diffuse/core/compat.h"
#include "diffuse/core/error.h"
#include "diffuse/cpu/unet_engine.h"
#include "diffuse/models/class_labels.h"
#include "diffuse/pipeline/cuda_graph.h"
#include "diffuse/samplers/guidance.h"

namespace diffuse {

ModelFn unet_model_fn(UNet2DModel model, bool bf16, torch::Tensor labels) {
  return [model, bf16, labels](const torch::Tensor& x_t, const torch::Tensor& t) mutable {
    c10::InferenceMode inference;
    const auto& cfg = model->config();
    auto y = labels.defined() ? labels : null_labels(cfg, x_t.size(0), {});
    if (y.defined()) {
      check(y.dim() == 1 && y.size(0) == x_t.size(0), "model: ", y.numel(),
            " class labels for a batch of ", x_t.size(0));
      if (y.device() != x_t.device()) labels = y = y.to(x_t.device());
    }
    const auto dtype = model->parameters().front().scalar_type();
    AutocastGuard autocast(bf16 && x_t.is_cuda());
    // On the CPU: the oneDNN path unless --cpu-engine aten (cpu/unet_engine.h).
    return cpu_unet_forward(model, x_t.to(dtype), t, y).to(x_t.scalar_type());
  };
}

ModelFn guided_unet_model_fn(UNet2DModel model, torch::Tensor labels, double scale, bool bf16) {
  const auto& cfg = model->config();
  check(num_classes(cfg) > 0, "classifier-free guidance: the model is not class-conditional");
  check(labels.defined() && labels.dim() == 1, "classifier-free guidance: labels must be (B)");
  const auto null = torch::full_like(labels, null_class(cfg));
  if (scale == 1.0) return unet_model_fn(model, bf16, labels);
  if (scale == 0.0) return unet_model_fn(model, bf16, null);
  return classifier_free_guidance(unet_model_fn(model, bf16, torch::cat({labels, null})), scale);
}

ModelFn graphed_unet_model_fn(UNet2DModel model, std::vector<int64_t> x_shape, bool bf16) {
  check(num_classes(model->config()) == 0,
        "--cuda-graph: class-conditional models are sampled eagerly (the graph takes no labels)");
  auto graphed = std::make_shared<GraphedForward>(std::move(model), std::move(x_shape), bf16);
  return [graphed](const torch::Tensor& x_t, const torch::Tensor& t) {
    // The graph's output buffer is reused by the next replay: samplers may keep it.
    return (*graphed)(x_t, t).to(x_t.scalar_type()).clone();
  };
}

}  // namespace diffuse
