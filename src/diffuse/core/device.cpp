#include "diffuse/core/device.h"

#include <thread>

#include "diffuse/core/error.h"

namespace diffuse {

torch::Device parse_device(const std::string& spec) {
  if (spec == "auto")
    return torch::cuda::is_available() ? torch::Device("cuda") : torch::Device("cpu");
  if (spec == "cpu") return torch::Device("cpu");
  if (spec.rfind("cuda", 0) == 0) {
    check(torch::cuda::is_available(), "--device ", spec,
          ": CUDA is not available in this build or machine");
    return torch::Device(spec);
  }
  fail("--device: unknown device '", spec, "' (expected auto, cpu, cuda or cuda:N)");
}

void configure_runtime(const torch::Device& device) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(cores));
  if (device.is_cuda()) {
    at::globalContext().setAllowTF32CuBLAS(true);
    at::globalContext().setAllowTF32CuDNN(true);
    at::globalContext().setBenchmarkCuDNN(true);
  }
}

}  // namespace diffuse
