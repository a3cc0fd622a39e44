#include "diffuse/train/cuda_graph.h"

#include <ATen/autocast_mode.h>

#include <iostream>

#include "diffuse/core/compat.h"

#ifdef DIFFUSE_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace diffuse {

struct GraphedForward::Graph {
#ifdef DIFFUSE_WITH_CUDA
  at::cuda::CUDAGraph graph;
#endif
};

torch::Tensor GraphedForward::eager(const torch::Tensor& x, const torch::Tensor& t) {
  AutocastGuard autocast(bf16_ && x.is_cuda());
  return model_->forward(x, t).to(torch::kFloat32);
}

GraphedForward::GraphedForward(UNet2DModel model, std::vector<int64_t> x_shape, bool bf16)
    : model_(std::move(model)), shape_(std::move(x_shape)), bf16_(bf16) {
#ifdef DIFFUSE_WITH_CUDA
  const auto device = model_->parameters().front().device();
  if (!device.is_cuda()) return;
  c10::InferenceMode inference;
  auto opts = torch::TensorOptions().device(device);
  static_x_ = torch::randn(shape_, opts);
  static_t_ = torch::zeros({shape_[0]}, opts.dtype(torch::kLong));
  // Casts cached by autocast outside the capture would be freed under the graph's feet.
  const bool cache = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  try {
    auto side = c10::cuda::getStreamFromPool(false, device.index());
    auto current = c10::cuda::getCurrentCUDAStream(device.index());
    at::cuda::CUDAEvent ready;
    ready.record(current);
    ready.block(side);
    {
      c10::cuda::CUDAStreamGuard guard(side);
      for (int i = 0; i < 3; ++i)
        static_out_ = eager(static_x_, static_t_);  // warm-up: cuDNN plans, allocator
      graph_ = std::make_unique<Graph>();
      graph_->graph.capture_begin();
      static_out_ = eager(static_x_, static_t_);
      graph_->graph.capture_end();
    }
    at::cuda::CUDAEvent done;
    done.record(side);
    done.block(current);
    captured_ = true;
  } catch (const c10::Error& e) {
    std::cerr << "diffuse: CUDA graph capture failed, running eagerly: "
              << e.what_without_backtrace() << "\n";
    graph_.reset();
  }
  at::autocast::set_autocast_cache_enabled(cache);
#endif
}

GraphedForward::~GraphedForward() = default;

torch::Tensor GraphedForward::operator()(const torch::Tensor& x, const torch::Tensor& t) {
#ifdef DIFFUSE_WITH_CUDA
  if (captured_ && x.sizes() == static_x_.sizes() && x.device() == static_x_.device()) {
    static_x_.copy_(x);
    static_t_.copy_(t.to(torch::kLong).expand({shape_[0]}));
    graph_->graph.replay();
    return static_out_;
  }
#endif
  return eager(x, t);
}

struct CapturedStep::Graph {
#ifdef DIFFUSE_WITH_CUDA
  at::cuda::CUDAGraph graph;
#endif
};

CapturedStep::CapturedStep(torch::Device device, int64_t warmup)
    : device_(device), warmup_(warmup) {}

CapturedStep::~CapturedStep() = default;

void CapturedStep::operator()(const std::function<void()>& body) {
#ifdef DIFFUSE_WITH_CUDA
  if (captured_) {
    graph_->graph.replay();
    return;
  }
  if (!device_.is_cuda() || failed_ || calls_++ < warmup_) {
    body();
    return;
  }
  const bool cache = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  try {
    auto side = c10::cuda::getStreamFromPool(false, device_.index());
    auto current = c10::cuda::getCurrentCUDAStream(device_.index());
    at::cuda::CUDAEvent ready;
    ready.record(current);
    ready.block(side);
    {
      c10::cuda::CUDAStreamGuard guard(side);
      graph_ = std::make_unique<Graph>();
      graph_->graph.capture_begin();
      body();
      graph_->graph.capture_end();
    }
    at::cuda::CUDAEvent done;
    done.record(side);
    done.block(current);
    captured_ = true;
  } catch (const c10::Error& e) {
    std::cerr << "diffuse: CUDA graph capture of the step failed, running it eagerly: "
              << e.what_without_backtrace() << "\n";
    graph_.reset();
    failed_ = true;
  }
  at::autocast::set_autocast_cache_enabled(cache);
  // Capture records the work without doing it: this call's step happens now.
  if (captured_)
    graph_->graph.replay();
  else
    body();
#else
  body();
#endif
}

}  // namespace diffuse
