#include "diffuse/pipeline/cuda_graph.h"

#include <ATen/autocast_mode.h>

#include <functional>
#include <iostream>

#include "diffuse/core/compat.h"

#ifdef DIFFUSE_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace diffuse {

#ifdef DIFFUSE_WITH_CUDA
namespace {

// Runs warmup (if any) and then captures body into graph, both on a side stream ordered after the
// device's current stream, with autocast's cast cache off: casts cached outside the capture would
// be freed under the graph's feet. Throws c10::Error when the capture fails.
void capture_on_side_stream(at::cuda::CUDAGraph& graph, const torch::Device& device,
                            const std::function<void()>& warmup,
                            const std::function<void()>& body) {
  struct CastCacheOff {
    bool was = at::autocast::is_autocast_cache_enabled();
    CastCacheOff() { at::autocast::set_autocast_cache_enabled(false); }
    ~CastCacheOff() { at::autocast::set_autocast_cache_enabled(was); }
  } cache_off;
  auto side = c10::cuda::getStreamFromPool(false, device.index());
  auto current = c10::cuda::getCurrentCUDAStream(device.index());
  at::cuda::CUDAEvent ready;
  ready.record(current);
  ready.block(side);
  {
    c10::cuda::CUDAStreamGuard guard(side);
    if (warmup) warmup();
    graph.capture_begin();
    body();
    graph.capture_end();
  }
  at::cuda::CUDAEvent done;
  done.record(side);
  done.block(current);
}

}  // namespace
#endif

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
  try {
    graph_ = std::make_unique<Graph>();
    capture_on_side_stream(
        graph_->graph, device,
        [&] {
          for (int i = 0; i < 3; ++i)
            static_out_ = eager(static_x_, static_t_);  // warm-up: cuDNN plans, allocator
        },
        [&] { static_out_ = eager(static_x_, static_t_); });
    captured_ = true;
  } catch (const c10::Error& e) {
    std::cerr << "diffuse: CUDA graph capture failed, running eagerly: "
              << e.what_without_backtrace() << "\n";
    graph_.reset();
  }
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
  try {
    graph_ = std::make_unique<Graph>();
    capture_on_side_stream(graph_->graph, device_, nullptr, body);
    captured_ = true;
  } catch (const c10::Error& e) {
    std::cerr << "diffuse: CUDA graph capture of the step failed, running it eagerly: "
              << e.what_without_backtrace() << "\n";
    graph_.reset();
    failed_ = true;
  }
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
