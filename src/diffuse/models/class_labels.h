// Class labels of a class-conditional U-Net, written once. A model with num_class_embeds = K + 1
// has K classes 0 .. K-1 and the null class K (no label: the unconditional model) last, the
// convention classifier-free guidance needs (Ho & Salimans 2022; diffusers fixes none).
// Unconditional models: 0 classes and null class -1.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "diffuse/models/unet_config.h"

namespace diffuse {

int64_t num_classes(const UNetConfig& cfg);
int64_t null_class(const UNetConfig& cfg);
// num_class_embeds for a model of `classes` classes: one embedding more, the null class.
int64_t class_embeds_for(int64_t classes);

// (B) int64 labels on `options`' device: all the null class, or undefined for an unconditional
// model (what it is called with when no class is asked for).
torch::Tensor null_labels(const UNetConfig& cfg, int64_t B, const torch::TensorOptions& options);

// Label dropout for classifier-free guidance: each label y: (B) int64 is replaced by null_class
// with probability p, from one uniform draw per example on gen (CPU). In data-parallel training y
// is rows [offset, offset + len) of a global batch: all global_batch draws are made on every rank
// and sliced, so the ranks together drop what one process would.
torch::Tensor drop_labels(const torch::Tensor& y, int64_t null_class, double p, at::Generator& gen,
                          int64_t global_batch = 0, int64_t offset = 0);

// The classes a --class value names for a model with `classes` classes: "all" (0 .. classes-1),
// or one class K or a comma-separated list. Errors name --class.
std::vector<int64_t> parse_class_list(const std::string& spec, int64_t classes);
// n labels cycling through `classes`: label i = classes[i % classes.size()].
torch::Tensor cycle_labels(const std::vector<int64_t>& classes, int64_t n);

}  // namespace diffuse
