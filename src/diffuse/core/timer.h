// Timing for benchmarks: CUDA events on a CUDA device (device time, no host sync inside the timed
// region), a steady clock on the CPU. Peak memory: the CUDA caching allocator's peak, or the
// process's maximum resident set on the CPU.
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <vector>

namespace diffuse {

class DeviceTimer {
 public:
  explicit DeviceTimer(const torch::Device& device);
  ~DeviceTimer();
  void start();
  double stop_ms();  // waits for the device, returns the elapsed milliseconds

 private:
  torch::Device device_;
  std::chrono::steady_clock::time_point t0_;
  struct CudaEvents;
  std::unique_ptr<CudaEvents> events_;
};

// Median of values (copied).
double median(std::vector<double> v);

void reset_peak_memory(const torch::Device& device);
// Bytes: peak allocated by tensors on a CUDA device since the reset, or the peak resident set of
// the process on the CPU.
int64_t peak_memory_bytes(const torch::Device& device);

void synchronize(const torch::Device& device);

}  // namespace diffuse
