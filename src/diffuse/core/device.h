// Device selection, numeric precision and process-wide runtime settings.
#pragma once
#include <torch/torch.h>

#include <string>

namespace diffuse {

// "auto" picks CUDA when available, else CPU; also accepts "cpu", "cuda", "cuda:N".
torch::Device parse_device(const std::string& spec);

// How networks compute. FP32: float32 everywhere, TF32 off (what a float64 reference can be
// matched to ~1e-4 with). TF32: float32 storage, TF32 tensor-core matmuls and convolutions on CUDA.
// BF16: bf16 autocast around the network on CUDA, the rest float32 with TF32 off.
enum class Precision { FP32, TF32, BF16 };

// The values --precision takes, and its default ("auto": bf16 on CUDA, fp32 on the CPU).
inline constexpr const char* kPrecisionChoices = "auto | fp32 | tf32 | bf16";
// The help of --device, --threads and --precision, which every command that computes takes.
inline constexpr const char* kDeviceHelp = "auto, cpu, cuda or cuda:N";
inline constexpr const char* kThreadsHelp = "CPU threads (0 = all cores)";
inline constexpr const char* kPrecisionHelp =
    "auto | fp32 | tf32 | bf16: how networks compute on CUDA (auto: bf16 autocast; fp32: float32 "
    "with TF32 off, to match a float64 reference; tf32: TF32 matmuls/convs); the CPU computes in "
    "fp32";
// Resolves spec for device. On the CPU tf32 is fp32 (there is no TF32 to allow there); bf16 is
// an error naming --precision, since the CPU path computes in float32 only.
Precision parse_precision(const std::string& spec, const torch::Device& device);
const char* precision_name(Precision p);
inline bool autocast_bf16(Precision p) {
  return p == Precision::BF16;
}

// Sets intra-op threads to the core count (LibTorch from C++ starts with one here), and on CUDA
// cuDNN benchmark mode and TF32 on or off as the precision says.
void configure_runtime(const torch::Device& device, Precision precision);

}  // namespace diffuse
