// The U-Net as a ModelFn (diffusion/model_fn.h): the one place that turns the network into the
// function samplers, guidance and the bound call. It builds nothing but the call: the timestep
// tensor comes from the caller, labels are bound here, autocast is entered here.
#pragma once
#include <torch/torch.h>

#include <vector>

#include "diffuse/diffusion/model_fn.h"
#include "diffuse/models/unet.h"

namespace diffuse {

// model->forward(x_t, t, labels) under c10::InferenceMode (on the CPU through cpu_unet_forward):
// x_t cast to the weights' dtype, the output back to x_t's, bf16 autocast when asked and on CUDA.
// labels: (B) int64 for the batches it will be called with; undefined means the null class for a
// class-conditional model (its unconditional half) and nothing for an unconditional one.
ModelFn unet_model_fn(UNet2DModel model, bool bf16 = false, torch::Tensor labels = {});

// A class-conditional model guided at `scale` (samplers/guidance.h) towards labels (B): scale 1
// and 0 cost one forward of x (the labels, or the null class), any other scale one forward of the
// doubled batch.
ModelFn guided_unet_model_fn(UNet2DModel model, torch::Tensor labels, double scale, bool bf16);

// The forward replayed from a CUDA graph captured for inputs of x_shape (CUDA only; other shapes
// run eagerly). Capturing costs several forwards: build it once and reuse it across calls.
// Unconditional models only.
ModelFn graphed_unet_model_fn(UNet2DModel model, std::vector<int64_t> x_shape, bool bf16);

}  // namespace diffuse
