#include "diffuse/models/class_labels.h"

#include <sstream>

#include "diffuse/core/error.h"

namespace diffuse {

int64_t num_classes(const UNetConfig& cfg) {
  return cfg.num_class_embeds > 0 ? cfg.num_class_embeds - 1 : 0;
}

int64_t null_class(const UNetConfig& cfg) {
  return cfg.num_class_embeds > 0 ? cfg.num_class_embeds - 1 : -1;
}

int64_t class_embeds_for(int64_t classes) {
  return classes + 1;
}

torch::Tensor null_labels(const UNetConfig& cfg, int64_t B, const torch::TensorOptions& options) {
  if (cfg.num_class_embeds == 0) return {};
  return torch::full({B}, null_class(cfg), options.dtype(torch::kLong));
}

torch::Tensor drop_labels(const torch::Tensor& y, int64_t null_class, double p, at::Generator& gen,
                          int64_t global_batch, int64_t offset) {
  const int64_t n = global_batch > 0 ? global_batch : y.size(0);
  auto u = at::rand({n}, gen, torch::kFloat64).narrow(0, offset, y.size(0)).to(y.device());
  return torch::where(u < p, torch::full_like(y, null_class), y);
}

std::vector<int64_t> parse_class_list(const std::string& spec, int64_t classes) {
  check(classes > 0, "--class: the model is not class-conditional (its config.json has no ",
        "num_class_embeds)");
  std::vector<int64_t> out;
  if (spec == "all") {
    for (int64_t k = 0; k < classes; ++k) out.push_back(k);
    return out;
  }
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int64_t k = -1;
    try {
      k = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(!item.empty() && used == item.size(), "--class: '", item,
          "' is not a class number (expected K, K1,K2,... or all)");
    check(k >= 0 && k < classes, "--class ", k, " is out of range: the model has ", classes,
          " classes (0 to ", classes - 1, ")");
    out.push_back(k);
  }
  check(!out.empty(), "--class: no class given (expected K, K1,K2,... or all)");
  return out;
}

torch::Tensor cycle_labels(const std::vector<int64_t>& classes, int64_t n) {
  auto list = torch::tensor(classes, torch::kInt64);
  return list.index_select(0, torch::arange(n, torch::kInt64).remainder(list.size(0)));
}

}  // namespace diffuse
