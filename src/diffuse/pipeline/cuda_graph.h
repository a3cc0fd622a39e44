// The U-Net forward captured once as a CUDA graph and replayed: at batch 1 an eager forward is
// almost all kernel-launch overhead (bench/RESULTS.md, PyTorch on an H100: forward b1 14.2 ms
// eager, 1.69 ms with torch.compile). Inputs are copied into static buffers; calls with another
// shape, or on the CPU, or in a build without CUDA, run the model eagerly.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>

#include "diffuse/models/unet.h"

namespace diffuse {

class GraphedForward {
 public:
  // Captures model->forward for x of shape x_shape (and t of shape (B)) on model's CUDA device.
  GraphedForward(UNet2DModel model, std::vector<int64_t> x_shape, bool bf16);
  ~GraphedForward();
  // -> float32 output; the returned tensor is overwritten by the next replay, so copy it to keep
  // it.
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& t);
  bool captured() const { return captured_; }

 private:
  torch::Tensor eager(const torch::Tensor& x, const torch::Tensor& t);
  UNet2DModel model_;
  std::vector<int64_t> shape_;
  bool bf16_;
  bool captured_ = false;
  torch::Tensor static_x_, static_t_, static_out_;
  struct Graph;
  std::unique_ptr<Graph> graph_;
};

// A whole step (the training step: forward, backward, clipping, AdamW, EMA) captured once as a
// CUDA graph and replayed. The first `warmup` calls run the body eagerly (cuDNN plans, the
// allocator's pools), the next captures it on a side stream and replays it, later calls replay.
// The body must read its inputs from, and leave its results in, tensors that outlive the calls;
// host code inside it runs only during warm-up and capture, so per-step scalars belong in device
// tensors filled before each call. If capture fails the body runs eagerly from then on.
class CapturedStep {
 public:
  explicit CapturedStep(torch::Device device, int64_t warmup = 3);
  ~CapturedStep();
  void operator()(const std::function<void()>& body);
  bool captured() const { return captured_; }

 private:
  torch::Device device_;
  int64_t warmup_, calls_ = 0;
  bool captured_ = false, failed_ = false;
  struct Graph;
  std::unique_ptr<Graph> graph_;
};

}  // namespace diffuse
