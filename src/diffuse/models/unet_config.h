// The U-Net's hyperparameters, in the field names of diffusers' UNet2DModel config.json, so a
// config written here loads in diffusers and a diffusers config loads here.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace diffuse {

struct UNetConfig {
  // Height and width the model was trained on (metadata: forward accepts any size that the
  // levels divide).
  int64_t sample_size = 32;
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  bool center_input_sample = false;  // x -> 2x - 1 before conv_in
  std::string time_embedding_type = "positional";
  int64_t time_embedding_dim = 0;  // 0: 4 * block_out_channels[0] (diffusers' null)
  double freq_shift = 0;
  bool flip_sin_to_cos = true;
  std::vector<std::string> down_block_types;      // DownBlock2D | AttnDownBlock2D, one per level
  std::string mid_block_type = "UNetMidBlock2D";  // or "" (diffusers' null): no mid block
  std::vector<std::string> up_block_types;        // UpBlock2D | AttnUpBlock2D, deepest first
  std::vector<int64_t> block_out_channels;
  int64_t layers_per_block = 2;
  double mid_block_scale_factor = 1;
  int64_t downsample_padding = 1;  // 0: pad right/bottom by one, as the original DDPM code
  double dropout = 0;
  std::string act_fn = "silu";
  int64_t attention_head_dim = 8;  // 0 (diffusers' null): one head spanning all channels
  int64_t norm_num_groups = 32;
  int64_t attn_norm_num_groups = 0;  // 0 (null): the mid-block attention uses norm_num_groups
  double norm_eps = 1e-5;
  std::string resnet_time_scale_shift = "default";
  bool add_attention = true;     // attention in the mid block
  std::string class_embed_type;  // "" (null) only
  int64_t num_class_embeds = 0;  // > 0: nn.Embedding of class labels added to the time embedding

  int64_t levels() const { return static_cast<int64_t>(block_out_channels.size()); }
  int64_t time_embed_dim() const {
    return time_embedding_dim > 0 ? time_embedding_dim : 4 * block_out_channels.at(0);
  }
  // Channels per attention head at a level of c channels (diffusers: attention_head_dim or c).
  int64_t head_dim(int64_t c) const { return attention_head_dim > 0 ? attention_head_dim : c; }
  // H and W must be multiples of this: each level but the last halves them.
  int64_t size_multiple() const { return int64_t{1} << (levels() - 1); }

  // Throws diffuse::Error naming `source` and the first offending field.
  void validate(const std::string& source = "UNet config") const;

  // A diffusers config.json object. Fields diffusers has defaults for take diffusers' defaults;
  // sample_size, in_channels, out_channels, block_out_channels, down_block_types and up_block_types
  // are required. Keys this model does not know ("_class_name", ...) are ignored. Validated.
  static UNetConfig from_json(const nlohmann::json& j, const std::string& source);
  // What diffusers' UNet2DModel.from_config accepts, with "_class_name": "UNet2DModel".
  nlohmann::json to_json() const;
};

// Reads a diffusers config.json file; errors name the file.
UNetConfig load_config_json(const std::string& path);

// diffusers' version whose UNet2DModel the configs written here are checked against.
inline constexpr const char* kDiffusersVersion = "0.42.1";

}  // namespace diffuse
