#include "diffuse/core/timer.h"

#include <sys/resource.h>

#include <algorithm>

#ifdef DIFFUSE_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace diffuse {

struct DeviceTimer::CudaEvents {
#ifdef DIFFUSE_WITH_CUDA
  at::cuda::CUDAEvent begin{cudaEventDefault}, end{cudaEventDefault};
#endif
};

DeviceTimer::DeviceTimer(const torch::Device& device) : device_(device) {
  if (device_.is_cuda()) events_ = std::make_unique<CudaEvents>();
}

DeviceTimer::~DeviceTimer() = default;

void DeviceTimer::start() {
#ifdef DIFFUSE_WITH_CUDA
  if (device_.is_cuda()) {
    events_->begin.record(
        c10::cuda::getCurrentCUDAStream(device_.index() < 0 ? 0 : device_.index()));
    return;
  }
#endif
  t0_ = std::chrono::steady_clock::now();
}

double DeviceTimer::stop_ms() {
#ifdef DIFFUSE_WITH_CUDA
  if (device_.is_cuda()) {
    events_->end.record(c10::cuda::getCurrentCUDAStream(device_.index() < 0 ? 0 : device_.index()));
    events_->end.synchronize();
    return events_->begin.elapsed_time(events_->end);
  }
#endif
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void reset_peak_memory(const torch::Device& device) {
#ifdef DIFFUSE_WITH_CUDA
  if (device.is_cuda())
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
}

int64_t peak_memory_bytes(const torch::Device& device) {
#ifdef DIFFUSE_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats =
        c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[0].peak;  // aggregate over pool types
  }
#endif
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? 0 : device.index());
}

}  // namespace diffuse
