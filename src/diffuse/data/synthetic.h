// Random pixels in the shape of a dataset: what `--data synthetic` trains on, so that benchmarks
// measure the speed of a step and not what it learns.
#pragma once
#include <cstdint>

#include "diffuse/data/dataset.h"

namespace diffuse {

// n images of (channels, size, size), uint8 uniform in [0, 255], from their own generator seeded
// with seed (the run's global generator, which draws the weights, is left alone). No labels.
Dataset synthetic_dataset(int64_t n, int64_t channels, int64_t size, uint64_t seed);

}  // namespace diffuse
