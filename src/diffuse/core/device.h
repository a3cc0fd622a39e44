// Device selection and process-wide runtime settings.
#pragma once
#include <torch/torch.h>

#include <string>

namespace diffuse {

// "auto" picks CUDA when available, else CPU; also accepts "cpu", "cuda", "cuda:N".
torch::Device parse_device(const std::string& spec);

// Sets intra-op threads to the core count (LibTorch from C++ starts with one here), and on CUDA
// enables TF32 for float32 matmuls/convs and cuDNN benchmark mode.
void configure_runtime(const torch::Device& device);

}  // namespace diffuse
