#include "diffuse/models/unet_config.h"

#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"

namespace diffuse {

namespace {

using json = nlohmann::json;

// Reads one config.json field with the error messages a user can act on: each names the source
// file and the field.
class FieldReader {
 public:
  FieldReader(const json& j, const std::string& source) : j_(j), source_(source) {}

  bool has(const char* key) const { return j_.contains(key); }
  bool is_null(const char* key) const { return j_.contains(key) && j_.at(key).is_null(); }

  void require(const char* key) const {
    check(j_.contains(key), source_, ": required field \"", key, "\" is missing");
  }

  int64_t integer(const char* key, int64_t fallback) const {
    return has(key) ? as_integer(j_.at(key), key) : fallback;
  }
  // A null field (diffusers' None) reads as null_value.
  int64_t nullable_integer(const char* key, int64_t fallback, int64_t null_value) const {
    if (!has(key)) return fallback;
    return j_.at(key).is_null() ? null_value : as_integer(j_.at(key), key);
  }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const auto& v = j_.at(key);
    check(v.is_number(), source_, ": \"", key, "\" must be a number, got ", v.dump());
    const double d = v.get<double>();
    check(std::isfinite(d), source_, ": \"", key, "\" must be finite, got ", v.dump());
    return d;
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const auto& v = j_.at(key);
    check(v.is_boolean(), source_, ": \"", key, "\" must be true or false, got ", v.dump());
    return v.get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    return as_string(j_.at(key), key);
  }
  std::string nullable_string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    return j_.at(key).is_null() ? std::string() : as_string(j_.at(key), key);
  }
  std::vector<int64_t> integers(const char* key) const {
    std::vector<int64_t> out;
    for (const auto& v : array(key)) out.push_back(as_integer(v, key));
    return out;
  }
  std::vector<std::string> strings(const char* key) const {
    std::vector<std::string> out;
    for (const auto& v : array(key)) out.push_back(as_string(v, key));
    return out;
  }

  // diffusers accepts an int or [height, width]; this model keeps square sizes only.
  int64_t sample_size() const {
    const auto& v = j_.at("sample_size");
    if (!v.is_array()) return as_integer(v, "sample_size");
    check(v.size() == 2, source_, ": \"sample_size\" must be an integer or [height, width], got ",
          v.dump());
    const int64_t h = as_integer(v[0], "sample_size"), w = as_integer(v[1], "sample_size");
    check(h == w, source_, ": \"sample_size\" ", v.dump(), " is not square; only square ",
          "sizes are supported");
    return h;
  }

 private:
  const json& array(const char* key) const {
    const auto& v = j_.at(key);
    check(v.is_array(), source_, ": \"", key, "\" must be a list, got ", v.dump());
    return v;
  }
  int64_t as_integer(const json& v, const char* key) const {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15)
        return static_cast<int64_t>(d);
    }
    fail(source_, ": \"", key, "\" must be an integer, got ", v.dump());
  }
  std::string as_string(const json& v, const char* key) const {
    check(v.is_string(), source_, ": \"", key, "\" must be a string, got ", v.dump());
    return v.get<std::string>();
  }

  const json& j_;
  const std::string& source_;
};

// 1 -> 1, 0.5 -> 0.5: diffusers declares freq_shift an int, so integral values are written as one.
json number_json(double d) {
  if (d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  return d;
}

}  // namespace

void UNetConfig::validate(const std::string& source) const {
  const auto& s = source;
  check(sample_size > 0, s, ": sample_size must be positive, got ", sample_size);
  check(in_channels > 0, s, ": in_channels must be positive, got ", in_channels);
  check(out_channels > 0, s, ": out_channels must be positive, got ", out_channels);
  check(time_embedding_type == "positional", s, ": time_embedding_type \"", time_embedding_type,
        "\" is not supported (only \"positional\")");
  check(time_embedding_dim >= 0, s, ": time_embedding_dim must be positive or null, got ",
        time_embedding_dim);
  check(!block_out_channels.empty(), s, ": block_out_channels must not be empty");
  check(levels() <= 16, s, ": block_out_channels has ", levels(), " levels (at most 16)");
  for (int64_t c : block_out_channels)
    check(c > 0, s, ": block_out_channels must be positive, got ", c);
  check(static_cast<int64_t>(down_block_types.size()) == levels(), s, ": down_block_types has ",
        down_block_types.size(), " entries but block_out_channels has ", levels());
  check(static_cast<int64_t>(up_block_types.size()) == levels(), s, ": up_block_types has ",
        up_block_types.size(), " entries but block_out_channels has ", levels());
  for (const auto& t : down_block_types)
    check(t == "DownBlock2D" || t == "AttnDownBlock2D", s, ": down_block_types: unknown block \"",
          t, "\" (supported: DownBlock2D, AttnDownBlock2D)");
  for (const auto& t : up_block_types)
    check(t == "UpBlock2D" || t == "AttnUpBlock2D", s, ": up_block_types: unknown block \"", t,
          "\" (supported: UpBlock2D, AttnUpBlock2D)");
  check(mid_block_type.empty() || mid_block_type == "UNetMidBlock2D", s, ": mid_block_type \"",
        mid_block_type, "\" is not supported (UNetMidBlock2D or null)");
  check(layers_per_block >= 1, s, ": layers_per_block must be >= 1, got ", layers_per_block);
  check(std::isfinite(freq_shift), s, ": freq_shift must be finite");
  const double half = static_cast<double>(block_out_channels[0] / 2);
  check(block_out_channels[0] >= 2 && half - freq_shift > 0, s, ": freq_shift ", freq_shift,
        " must be below half the time embedding width (", half, ")");
  check(mid_block_scale_factor > 0 && std::isfinite(mid_block_scale_factor), s,
        ": mid_block_scale_factor must be positive, got ", mid_block_scale_factor);
  check(downsample_padding == 0 || downsample_padding == 1, s,
        ": downsample_padding must be 0 or 1, got ", downsample_padding);
  check(dropout >= 0 && dropout < 1, s, ": dropout must be in [0, 1), got ", dropout);
  check(act_fn == "silu" || act_fn == "swish", s, ": act_fn \"", act_fn,
        "\" is not supported (only \"silu\")");
  check(norm_num_groups > 0, s, ": norm_num_groups must be positive, got ", norm_num_groups);
  for (int64_t c : block_out_channels)
    check(c % norm_num_groups == 0, s, ": block_out_channels entry ", c,
          " is not divisible by norm_num_groups ", norm_num_groups);
  check(norm_eps > 0 && std::isfinite(norm_eps), s, ": norm_eps must be positive, got ", norm_eps);
  check(resnet_time_scale_shift == "default", s, ": resnet_time_scale_shift \"",
        resnet_time_scale_shift, "\" is not supported (only \"default\")");
  check(attention_head_dim >= 0, s, ": attention_head_dim must be positive or null, got ",
        attention_head_dim);
  auto check_heads = [&](int64_t c) {
    check(c % head_dim(c) == 0, s, ": attention_head_dim ", attention_head_dim,
          " does not divide the ", c, " channels of an attention block");
  };
  for (int64_t i = 0; i < levels(); ++i) {
    if (down_block_types[i] == "AttnDownBlock2D") check_heads(block_out_channels[i]);
    if (up_block_types[i] == "AttnUpBlock2D") check_heads(block_out_channels[levels() - 1 - i]);
  }
  const int64_t deepest = block_out_channels.back();
  if (!mid_block_type.empty() && add_attention) {
    check_heads(deepest);
    check(attn_norm_num_groups >= 0, s, ": attn_norm_num_groups must be positive or null");
    if (attn_norm_num_groups > 0)
      check(deepest % attn_norm_num_groups == 0, s, ": attn_norm_num_groups ", attn_norm_num_groups,
            " does not divide the mid block's ", deepest, " channels");
  }
  check(class_embed_type.empty(), s, ": class_embed_type \"", class_embed_type,
        "\" is not supported (only null, with num_class_embeds)");
  check(num_class_embeds >= 0, s, ": num_class_embeds must be positive or null, got ",
        num_class_embeds);
  check(sample_size % size_multiple() == 0, s, ": sample_size ", sample_size,
        " is not a multiple of ", size_multiple(), " (2^(levels - 1))");
}

UNetConfig UNetConfig::from_json(const json& j, const std::string& source) {
  check(j.is_object(), source, ": a UNet config must be a JSON object");
  if (j.contains("_class_name"))
    check(j.at("_class_name") == "UNet2DModel", source, ": \"_class_name\" is ",
          j.at("_class_name").dump(), ", not \"UNet2DModel\"");
  FieldReader r(j, source);
  for (const char* key : {"sample_size", "in_channels", "out_channels", "block_out_channels",
                          "down_block_types", "up_block_types"})
    r.require(key);
  for (const char* key : {"downsample_type", "upsample_type"}) {
    const std::string v = r.nullable_string(key, "conv");
    check(v == "conv" || v.empty(), source, ": ", key, " \"", v,
          "\" is not supported (only \"conv\")");
  }

  // The struct's initialisers are diffusers' defaults; each is written there only.
  UNetConfig c;
  c.sample_size = r.sample_size();
  c.in_channels = r.integer("in_channels", c.in_channels);
  c.out_channels = r.integer("out_channels", c.out_channels);
  c.center_input_sample = r.boolean("center_input_sample", c.center_input_sample);
  c.time_embedding_type = r.string("time_embedding_type", c.time_embedding_type);
  c.time_embedding_dim = r.nullable_integer("time_embedding_dim", c.time_embedding_dim, 0);
  c.freq_shift = r.number("freq_shift", c.freq_shift);
  c.flip_sin_to_cos = r.boolean("flip_sin_to_cos", c.flip_sin_to_cos);
  c.down_block_types = r.strings("down_block_types");
  c.mid_block_type = r.nullable_string("mid_block_type", c.mid_block_type);
  c.up_block_types = r.strings("up_block_types");
  c.block_out_channels = r.integers("block_out_channels");
  c.layers_per_block = r.integer("layers_per_block", c.layers_per_block);
  c.mid_block_scale_factor = r.number("mid_block_scale_factor", c.mid_block_scale_factor);
  c.downsample_padding = r.integer("downsample_padding", c.downsample_padding);
  c.dropout = r.number("dropout", c.dropout);
  c.act_fn = r.string("act_fn", c.act_fn);
  c.attention_head_dim = r.nullable_integer("attention_head_dim", c.attention_head_dim, 0);
  c.norm_num_groups = r.integer("norm_num_groups", c.norm_num_groups);
  c.attn_norm_num_groups = r.nullable_integer("attn_norm_num_groups", c.attn_norm_num_groups, 0);
  c.norm_eps = r.number("norm_eps", c.norm_eps);
  c.resnet_time_scale_shift = r.string("resnet_time_scale_shift", c.resnet_time_scale_shift);
  c.add_attention = r.boolean("add_attention", c.add_attention);
  c.class_embed_type = r.nullable_string("class_embed_type", c.class_embed_type);
  c.num_class_embeds = r.nullable_integer("num_class_embeds", c.num_class_embeds, 0);
  // An explicit 0 is not diffusers' null: reject it rather than silently dropping a field.
  for (const char* key :
       {"time_embedding_dim", "attention_head_dim", "attn_norm_num_groups", "num_class_embeds"})
    if (r.has(key) && !r.is_null(key))
      check(r.integer(key, 0) > 0, source, ": \"", key, "\" must be positive or null");
  c.validate(source);
  return c;
}

json UNetConfig::to_json() const {
  auto nullable = [](int64_t v) { return v > 0 ? json(v) : json(nullptr); };
  auto nullable_str = [](const std::string& v) { return v.empty() ? json(nullptr) : json(v); };
  json j;
  j["_class_name"] = "UNet2DModel";
  j["_diffusers_version"] = kDiffusersVersion;
  j["sample_size"] = sample_size;
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["center_input_sample"] = center_input_sample;
  j["time_embedding_type"] = time_embedding_type;
  j["time_embedding_dim"] = nullable(time_embedding_dim);
  j["freq_shift"] = number_json(freq_shift);
  j["flip_sin_to_cos"] = flip_sin_to_cos;
  j["down_block_types"] = down_block_types;
  j["mid_block_type"] = nullable_str(mid_block_type);
  j["up_block_types"] = up_block_types;
  j["block_out_channels"] = block_out_channels;
  j["layers_per_block"] = layers_per_block;
  j["mid_block_scale_factor"] = number_json(mid_block_scale_factor);
  j["downsample_padding"] = downsample_padding;
  j["downsample_type"] = "conv";
  j["upsample_type"] = "conv";
  j["dropout"] = dropout;
  j["act_fn"] = act_fn;
  j["attention_head_dim"] = nullable(attention_head_dim);
  j["norm_num_groups"] = norm_num_groups;
  j["attn_norm_num_groups"] = nullable(attn_norm_num_groups);
  j["norm_eps"] = norm_eps;
  j["resnet_time_scale_shift"] = resnet_time_scale_shift;
  j["add_attention"] = add_attention;
  j["class_embed_type"] = nullable_str(class_embed_type);
  j["num_class_embeds"] = nullable(num_class_embeds);
  j["num_train_timesteps"] = nullptr;
  return j;
}

UNetConfig load_config_json(const std::string& path) {
  const std::string text = read_file(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  return UNetConfig::from_json(j, path);
}

}  // namespace diffuse
