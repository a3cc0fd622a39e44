#include "diffuse/models/presets.h"

#include <filesystem>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

// The DDPM paper's CIFAR-10 network (Ho et al. 2020, appendix B) as google/ddpm-cifar10-32 has
// it: four levels 32..4, attention at 16x16, two resnets per level, dropout 0.1.
UNetConfig ddpm_cifar10() {
  UNetConfig c;
  c.sample_size = 32;
  c.in_channels = c.out_channels = 3;
  c.block_out_channels = {128, 256, 256, 256};
  c.down_block_types = {"DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"};
  c.layers_per_block = 2;
  c.attention_head_dim = 0;
  c.norm_num_groups = 32;
  c.norm_eps = 1e-6;
  c.downsample_padding = 0;
  c.flip_sin_to_cos = false;
  c.freq_shift = 1;
  c.dropout = 0.1;
  return c;
}

// Sized for a few minutes of CPU training on 28x28 images padded to 32x32. Attention only in the
// 8x8 middle block: on two CPU cores the three 16x16 attention layers cost 40% of the training
// step (87 against 143 images/s at batch 32) for no visible gain in a few minutes of training.
UNetConfig fmnist_small() {
  UNetConfig c = ddpm_cifar10();
  c.in_channels = c.out_channels = 1;
  c.block_out_channels = {32, 64, 64};
  c.down_block_types = {"DownBlock2D", "DownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "UpBlock2D", "UpBlock2D"};
  c.layers_per_block = 1;
  c.norm_num_groups = 8;
  c.dropout = 0;
  return c;
}

UNetConfig fmnist_cifar10size() {
  UNetConfig c = ddpm_cifar10();
  c.in_channels = c.out_channels = 1;
  return c;
}

UNetConfig tiny_test() {
  UNetConfig c = ddpm_cifar10();
  c.sample_size = 16;
  c.in_channels = c.out_channels = 1;
  c.block_out_channels = {16, 32};
  c.down_block_types = {"DownBlock2D", "AttnDownBlock2D"};
  c.up_block_types = {"AttnUpBlock2D", "UpBlock2D"};
  c.layers_per_block = 1;
  c.norm_num_groups = 4;
  c.dropout = 0;
  return c;
}

struct Preset {
  const char* name;
  const char* description;
  UNetConfig (*make)();
};

const Preset kPresets[] = {
    {"ddpm-cifar10", "DDPM's CIFAR-10 U-Net (google/ddpm-cifar10-32), 32x32x3", ddpm_cifar10},
    {"fmnist-small", "a small 32x32x1 U-Net that trains on a CPU in minutes", fmnist_small},
    {"fmnist-cifar10size", "ddpm-cifar10's architecture with one channel (Fashion-MNIST on a GPU)",
     fmnist_cifar10size},
    {"tiny-test", "a very small 16x16x1 U-Net for tests", tiny_test},
};

std::string preset_list() {
  std::string s;
  for (const auto& p : kPresets) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> preset_names() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& p : kPresets) out.emplace_back(p.name, p.description);
  return out;
}

UNetConfig preset_config(const std::string& name) {
  for (const auto& p : kPresets) {
    if (name == p.name) {
      UNetConfig c = p.make();
      c.validate("preset " + name);
      return c;
    }
  }
  fail("unknown model preset '", name, "' (presets: ", preset_list(), ")");
}

UNetConfig model_config_from_spec(const std::string& spec) {
  for (const auto& p : kPresets)
    if (spec == p.name) return preset_config(spec);
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(spec, ec)) {
    const fs::path config = fs::path(spec) / "config.json";
    check(fs::exists(config, ec), "--model ", spec, ": a folder without config.json");
    return load_config_json(config.string());
  }
  check(fs::exists(spec, ec), "--model ", spec, ": not a preset (", preset_list(),
        ") nor a config.json file");
  return load_config_json(spec);
}

UNetConfig with_learned_variance(UNetConfig cfg) {
  cfg.out_channels *= 2;
  return cfg;
}

}  // namespace diffuse
