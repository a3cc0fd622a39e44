#include "diffuse/models/weights.h"

#include <filesystem>
#include <sstream>
#include <vector>

#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/safetensors.h"

namespace diffuse {

namespace fs = std::filesystem;

namespace {

constexpr const char* kWeightsFile = "diffusion_pytorch_model.safetensors";
constexpr const char* kConfigFile = "config.json";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// diffusers < 0.14 named the attention projections query/key/value/proj_attn; checkpoints of that
// era (google/ddpm-*) still carry those names.
std::string modern_name(const std::string& name) {
  static const std::pair<const char*, const char*> kRenames[] = {{".query.", ".to_q."},
                                                                 {".key.", ".to_k."},
                                                                 {".value.", ".to_v."},
                                                                 {".proj_attn.", ".to_out.0."}};
  for (const auto& [old_part, new_part] : kRenames) {
    for (const char* leaf : {"weight", "bias"}) {
      const std::string suffix = std::string(old_part) + leaf;
      if (ends_with(name, suffix))
        return name.substr(0, name.size() - suffix.size()) + new_part + leaf;
    }
  }
  return name;
}

std::string shape_str(torch::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

void append_list(std::ostringstream& os, const char* what, const std::vector<std::string>& items) {
  if (items.empty()) return;
  os << "\n  " << items.size() << " " << what << ":";
  for (const auto& i : items) os << "\n    " << i;
}

}  // namespace

std::map<std::string, torch::Tensor> state_dict(const torch::nn::Module& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : model.named_parameters(true)) out[p.key()] = p.value();
  for (const auto& b : model.named_buffers(true)) out[b.key()] = b.value();
  return out;
}

void load_state_dict(torch::nn::Module& model, const std::map<std::string, torch::Tensor>& tensors,
                     const std::string& source) {
  auto targets = state_dict(model);
  std::map<std::string, const torch::Tensor*> matched;  // model name -> file tensor
  std::vector<std::string> unexpected, missing, mismatched;
  for (const auto& [name, t] : tensors) {
    std::string target = name;
    if (!targets.count(target) && targets.count(modern_name(name))) target = modern_name(name);
    if (!targets.count(target) || matched.count(target)) {
      unexpected.push_back(name);
      continue;
    }
    const auto& dst = targets.at(target);
    if (!t.defined() || t.sizes() != dst.sizes()) {
      mismatched.push_back(name + ": file " + (t.defined() ? shape_str(t.sizes()) : "undefined") +
                           ", model " + shape_str(dst.sizes()));
    } else if (dst.is_floating_point() && !t.is_floating_point()) {
      std::ostringstream os;
      os << name << ": file dtype " << t.scalar_type() << ", model needs floating point";
      mismatched.push_back(os.str());
    }
    matched[target] = &t;
  }
  for (const auto& [name, t] : targets)
    if (!matched.count(name)) missing.push_back(name);
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::ostringstream os;
    os << source << ": the weights do not match the model";
    append_list(os, "missing", missing);
    append_list(os, "unexpected", unexpected);
    append_list(os, "with the wrong shape or dtype", mismatched);
    fail(os.str());
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : matched) targets.at(name).copy_(*t);
}

UNet2DModel load_diffusers_dir(const std::string& dir) {
  const fs::path d(dir);
  check(fs::is_directory(d), dir, ": not a directory (expected a diffusers UNet2DModel folder)");
  const fs::path config = d / kConfigFile;
  check(fs::exists(config), dir, ": no ", kConfigFile, " (not a diffusers model folder)");
  fs::path weights = d / kWeightsFile;
  if (!fs::exists(weights) && fs::exists(d / "diffusion_pytorch_model.fp16.safetensors"))
    weights = d / "diffusion_pytorch_model.fp16.safetensors";
  if (!fs::exists(weights)) {
    check(!fs::exists(d / "diffusion_pytorch_model.bin"), dir, ": has only the pickled ",
          "diffusion_pytorch_model.bin, which cannot be read here; convert it to safetensors with ",
          "diffusers (UNet2DModel.from_pretrained(dir).save_pretrained(dir))");
    check(!fs::exists(d / (std::string(kWeightsFile) + ".index.json")), dir,
          ": sharded checkpoints are not supported");
    fail(dir, ": no ", kWeightsFile);
  }
  UNet2DModel model(load_config_json(config.string()));
  load_state_dict(*model, load_safetensors(weights.string()).tensors, weights.string());
  return model;
}

void save_diffusers_dir(const UNet2DModelImpl& model, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec && fs::is_directory(dir), dir, ": cannot create the directory (", ec.message(), ")");
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [name, t] : state_dict(model))
    tensors[name] = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  save_safetensors((fs::path(dir) / kWeightsFile).string(), tensors, {{"format", "pt"}});
  write_file_atomic((fs::path(dir) / kConfigFile).string(),
                    model.config().to_json().dump(2) + "\n");
}

int64_t count_parameters(const torch::nn::Module& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters(true)) n += p.numel();
  return n;
}

}  // namespace diffuse
