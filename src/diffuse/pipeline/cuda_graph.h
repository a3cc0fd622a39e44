// The U-Net forward, or a whole training step, captured once as a CUDA graph and replayed: at
// batch 1 an eager forward is almost all kernel-launch overhead (bench/RESULTS.md, PyTorch on an
// H100: forward b1 14.2 ms eager, 1.69 ms with torch.compile). Inputs are copied into static
// buffers; calls with another shape, or on the CPU, or in a build without CUDA, run eagerly.
//
// PyTorch's recipe (torch.cuda.graphs, "Whole-network capture"), which both wrappers follow:
// warm-up and capture on one side stream ordered after the caller's stream, a device sync before
// the capture, the caller's stream ordered after the side stream on the way back. A capture that
// fails (any exception inside it) is ended and discarded, the allocators stop routing to the
// graph's pool, one "diffuse: warning:" line goes to stderr and the work runs eagerly from then on.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

#include "diffuse/models/unet.h"

namespace diffuse {

// What the graph wrappers need from a device. The CUDA one is make_cuda_graph_runner's; tests
// drive the wrappers' logic (warm-up, one capture attempt, the fallback) with a stand-in.
class GraphRunner {
 public:
  virtual ~GraphRunner() = default;
  // Runs fn now (on the capture stream, ordered both ways with the caller's stream).
  virtual void eager(const std::function<void()>& fn) = 0;
  // Captures fn into a graph. On failure it throws what fn or the capture threw, and the device
  // is usable again: the capture ended, the allocators and the caller's stream restored.
  virtual void capture(const std::function<void()>& fn) = 0;
  virtual void replay() = 0;
  // Drops the graph, captured or not.
  virtual void discard() = 0;
};

// The CUDA graph runner of a CUDA device; null in a build without CUDA or for another device.
std::unique_ptr<GraphRunner> make_cuda_graph_runner(const torch::Device& device);

// Test hook: fault runs once, inside the next capture attempt of any wrapper in the process, just
// before the captured function; a test makes it throw, or break the capture, to check the
// failure path. Empty clears it.
void set_capture_fault_for_testing(std::function<void()> fault);

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
  std::unique_ptr<GraphRunner> runner_;
};

// A whole step (the training step: forward, backward, clipping, AdamW, EMA) captured once as a
// CUDA graph and replayed. The first `warmup` calls run the body eagerly on the capture stream
// (cuDNN and cuBLAS plans, the allocator's pools), the next captures it and replays it, later
// calls replay. The body must read its inputs from, and leave its results in, tensors that
// outlive the calls; host code inside it runs only during warm-up and capture, so per-step
// scalars belong in device tensors filled before each call. If the capture fails the body runs
// eagerly from then on.
class CapturedStep {
 public:
  explicit CapturedStep(torch::Device device, int64_t warmup = 3);
  // With another runner (tests); a null runner runs every call eagerly.
  CapturedStep(std::unique_ptr<GraphRunner> runner, int64_t warmup);
  ~CapturedStep();
  void operator()(const std::function<void()>& body);
  bool captured() const { return captured_; }
  // Whether the capture was tried and failed (every call since has run eagerly).
  bool failed() const { return failed_; }

 private:
  std::unique_ptr<GraphRunner> runner_;
  int64_t warmup_, calls_ = 0;
  bool captured_ = false, failed_ = false;
};

}  // namespace diffuse
