// Model weights by name: state dicts, and diffusers' model directory layout (config.json +
// diffusion_pytorch_model.safetensors), so checkpoints move both ways between diffuse and
// diffusers.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>

#include "diffuse/models/unet.h"

namespace diffuse {

// Parameters and buffers under their dotted names (the tensors themselves, not copies).
std::map<std::string, torch::Tensor> state_dict(const torch::nn::Module& model);

// Copies tensors into the model's parameters and buffers, converting dtype and device. Keys that
// diffusers renamed in 0.14 (attention query/key/value/proj_attn) are accepted under their old
// names. Missing, unexpected and mis-shaped keys (and non-floating tensors for floating
// parameters) are all listed in one diffuse::Error naming `source`; nothing is copied then.
void load_state_dict(torch::nn::Module& model, const std::map<std::string, torch::Tensor>& tensors,
                     const std::string& source);

// A diffusers UNet2DModel directory (what save_pretrained writes): config.json and
// diffusion_pytorch_model.safetensors with F16/BF16/F32/F64 tensors. Returns a float32 CPU model.
UNet2DModel load_diffusers_dir(const std::string& dir);

// Writes dir/diffusion_pytorch_model.safetensors (float32) and dir/config.json, each atomically,
// creating dir if needed.
void save_diffusers_dir(const UNet2DModelImpl& model, const std::string& dir);

int64_t count_parameters(const torch::nn::Module& model);

}  // namespace diffuse
