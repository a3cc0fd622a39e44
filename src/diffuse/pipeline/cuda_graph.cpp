#include "diffuse/pipeline/cuda_graph.h"

#include <ATen/autocast_mode.h>

#include <exception>
#include <functional>
#include <iostream>
#include <mutex>

#include "diffuse/core/compat.h"

#ifdef DIFFUSE_WITH_CUDA
#if DIFFUSE_TORCH_AT_LEAST(2, 11)
#include <ATen/core/CachingHostAllocator.h>
#endif
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace diffuse {

namespace {

std::mutex g_fault_mutex;
std::function<void()> g_fault;

// The test fault, taken once.
void run_capture_fault() {
  std::function<void()> fault;
  {
    std::lock_guard<std::mutex> lock(g_fault_mutex);
    fault.swap(g_fault);
  }
  if (fault) fault();
}

// One capture attempt of fn with runner; on failure the graph is dropped and one warning names
// what was being captured and why it failed. -> whether the graph is ready to replay.
bool try_capture(GraphRunner& runner, const std::function<void()>& fn, const char* what) {
  std::string why;
  try {
    runner.capture([&] {
      run_capture_fault();
      fn();
    });
    return true;
  } catch (const c10::Error& e) {
    why = e.what_without_backtrace();
  } catch (const std::exception& e) {
    why = e.what();
  } catch (...) {
    why = "an exception that is not a std::exception";
  }
  runner.discard();
  std::cerr << "diffuse: warning: CUDA graph capture of " << what
            << " failed; running it eagerly from now on: " << why << "\n";
  return false;
}

#ifdef DIFFUSE_WITH_CUDA

// capture_begin .. capture_end as a scope. The destructor ends a capture an exception left open,
// and undoes what a failing capture_end leaves undone: it throws on an invalidated capture (a
// sync inside it, say) before the allocators stop routing to the graph's pool, and the graph
// releases that pool only after a successful end.
class CaptureScope {
 public:
  CaptureScope(at::cuda::CUDAGraph& graph, c10::DeviceIndex device)
      : graph_(graph), device_(device), pool_(at::cuda::graph_pool_handle()) {}
  void begin() {
    graph_.capture_begin(pool_);
    open_ = true;
  }
  void end() {
    open_ = false;
    try {
      graph_.capture_end();
    } catch (...) {
      restore();
      throw;
    }
  }
  ~CaptureScope() {
    if (!open_) return;
    try {
      graph_.capture_end();  // a partial graph: discarded by the caller
    } catch (...) {
      restore();
    }
  }

 private:
  void restore() noexcept;
  at::cuda::CUDAGraph& graph_;
  c10::DeviceIndex device_;
  c10::MempoolId_t pool_;
  bool open_ = false;
};

void CaptureScope::restore() noexcept {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device_).stream();
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) == cudaSuccess &&
      status != cudaStreamCaptureStatusNone) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(stream, &partial);
    if (partial) cudaGraphDestroy(partial);
  }
  // Each throws if capture_end got as far as it; then there is nothing to undo.
  try {
    c10::cuda::CUDACachingAllocator::endAllocateToPool(device_, pool_);
  } catch (...) {
  }
#if DIFFUSE_TORCH_AT_LEAST(2, 11)
  try {
    at::getHostAllocator(at::kCUDA)->end_allocate_to_pool(pool_);
  } catch (...) {
  }
#endif
  bool ended = true;
  try {
    graph_.pool();
  } catch (...) {
    ended = false;
  }
  if (!ended) {
    try {
      c10::cuda::CUDACachingAllocator::releasePool(device_, pool_);
    } catch (...) {
    }
  }
  // The capture errors are not sticky; left set they would fail the next launch check.
  (void)cudaGetLastError();
}

// Autocast's cast cache off while capturing: casts cached outside the capture would be freed
// under the graph's feet.
struct CastCacheOff {
  bool was = at::autocast::is_autocast_cache_enabled();
  CastCacheOff() { at::autocast::set_autocast_cache_enabled(false); }
  ~CastCacheOff() { at::autocast::set_autocast_cache_enabled(was); }
};

class CudaGraphRunner final : public GraphRunner {
 public:
  explicit CudaGraphRunner(const torch::Device& device)
      : device_(device), side_(c10::cuda::getStreamFromPool(false, device.index())) {}
  void eager(const std::function<void()>& fn) override { on_side_stream(fn); }
  void capture(const std::function<void()>& fn) override;
  void replay() override { graph_->replay(); }
  void discard() override { graph_.reset(); }

 private:
  void on_side_stream(const std::function<void()>& fn);
  torch::Device device_;
  c10::cuda::CUDAStream side_;
  std::unique_ptr<at::cuda::CUDAGraph> graph_;
};

// fn on the side stream, after the work queued on the caller's stream and before what the caller
// queues next, on every path out (torch.cuda.graphs: s.wait_stream(current) ...
// current.wait_stream(s)).
void CudaGraphRunner::on_side_stream(const std::function<void()>& fn) {
  c10::cuda::CUDAGuard device_guard(device_);
  const auto current = c10::cuda::getCurrentCUDAStream(device_.index());
  at::cuda::CUDAEvent ready;
  ready.record(current);
  ready.block(side_);
  struct Join {
    c10::cuda::CUDAStream side, current;
    ~Join() {
      try {
        at::cuda::CUDAEvent done;
        done.record(side);
        done.block(current);
      } catch (...) {
      }
    }
  } join{side_, current};
  c10::cuda::CUDAStreamGuard stream_guard(side_);
  fn();
}

void CudaGraphRunner::capture(const std::function<void()>& fn) {
  CastCacheOff cache_off;
  graph_ = std::make_unique<at::cuda::CUDAGraph>();
  c10::cuda::CUDAGuard device_guard(device_);
  // torch.cuda.graph syncs before capturing: no work of the warm-up still in flight on any stream.
  c10::cuda::device_synchronize();
  on_side_stream([&] {
    CaptureScope scope(*graph_, device_.index());
    scope.begin();
    fn();
    scope.end();
  });
}

#endif  // DIFFUSE_WITH_CUDA

}  // namespace

std::unique_ptr<GraphRunner> make_cuda_graph_runner(const torch::Device& device) {
#ifdef DIFFUSE_WITH_CUDA
  if (device.is_cuda()) return std::make_unique<CudaGraphRunner>(device);
#endif
  return nullptr;
}

void set_capture_fault_for_testing(std::function<void()> fault) {
  std::lock_guard<std::mutex> lock(g_fault_mutex);
  g_fault = std::move(fault);
}

torch::Tensor GraphedForward::eager(const torch::Tensor& x, const torch::Tensor& t) {
  AutocastGuard autocast(bf16_ && x.is_cuda());
  return model_->forward(x, t).to(torch::kFloat32);
}

GraphedForward::GraphedForward(UNet2DModel model, std::vector<int64_t> x_shape, bool bf16)
    : model_(std::move(model)), shape_(std::move(x_shape)), bf16_(bf16) {
  const auto device = model_->parameters().front().device();
  runner_ = make_cuda_graph_runner(device);
  if (!runner_) return;
  c10::InferenceMode inference;
  auto opts = torch::TensorOptions().device(device);
  static_x_ = torch::randn(shape_, opts);
  static_t_ = torch::zeros({shape_[0]}, opts.dtype(torch::kLong));
  // Warm-up on the capture stream: cuDNN plans, cuBLAS handles, the allocator's pools.
  runner_->eager([&] {
    for (int i = 0; i < 3; ++i) static_out_ = eager(static_x_, static_t_);
  });
  captured_ = try_capture(
      *runner_, [&] { static_out_ = eager(static_x_, static_t_); }, "the U-Net forward");
}

GraphedForward::~GraphedForward() = default;

torch::Tensor GraphedForward::operator()(const torch::Tensor& x, const torch::Tensor& t) {
  if (captured_ && x.sizes() == static_x_.sizes() && x.device() == static_x_.device()) {
    static_x_.copy_(x);
    static_t_.copy_(t.to(torch::kLong).expand({shape_[0]}));
    runner_->replay();
    return static_out_;
  }
  return eager(x, t);
}

CapturedStep::CapturedStep(torch::Device device, int64_t warmup)
    : CapturedStep(make_cuda_graph_runner(device), warmup) {}

CapturedStep::CapturedStep(std::unique_ptr<GraphRunner> runner, int64_t warmup)
    : runner_(std::move(runner)), warmup_(warmup) {}

CapturedStep::~CapturedStep() = default;

void CapturedStep::operator()(const std::function<void()>& body) {
  if (!runner_) return body();
  if (captured_) return runner_->replay();
  if (failed_ || calls_++ < warmup_) return runner_->eager(body);
  captured_ = try_capture(*runner_, body, "the training step");
  failed_ = !captured_;
  // Capture records the work without doing it: this call's step happens now.
  if (captured_)
    runner_->replay();
  else
    runner_->eager(body);
}

}  // namespace diffuse
