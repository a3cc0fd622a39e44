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

Precision parse_precision(const std::string& spec, const torch::Device& device) {
  if (spec == "auto") return device.is_cuda() ? Precision::BF16 : Precision::FP32;
  if (spec == "fp32") return Precision::FP32;
  if (spec == "tf32") return device.is_cuda() ? Precision::TF32 : Precision::FP32;
  if (spec == "bf16") {
    check(device.is_cuda(), "--precision bf16 needs a CUDA device; on the CPU diffuse computes in ",
          "fp32 (use --precision fp32 or auto)");
    return Precision::BF16;
  }
  fail("--precision: unknown precision '", spec, "' (expected ", kPrecisionChoices, ")");
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::FP32:
      return "fp32";
    case Precision::TF32:
      return "tf32";
    case Precision::BF16:
      return "bf16";
  }
  return "?";
}

void configure_runtime(const torch::Device& device, Precision precision) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(cores));
  if (device.is_cuda()) {
    const bool tf32 = precision == Precision::TF32;
    at::globalContext().setAllowTF32CuBLAS(tf32);
    at::globalContext().setAllowTF32CuDNN(tf32);
    at::globalContext().setBenchmarkCuDNN(true);
  }
}

}  // namespace diffuse
