// NumPy .npy arrays (format versions 1.0-3.0 on read, 1.0 on write): little-endian, C order,
// dtypes float32 (<f4), float64 (<f8), uint8 (|u1) and int64 (<i8).
#pragma once
#include <torch/torch.h>

#include <string>
#include <string_view>

namespace diffuse {

// Any problem (bad magic or header, Fortran order, big-endian or other dtypes, truncated or
// trailing data) throws diffuse::Error naming the file.
torch::Tensor load_npy(const std::string& path);

// The same for a file's bytes already in memory; `path` only names them in errors.
torch::Tensor parse_npy(std::string_view bytes, const std::string& path);

// Refuses an array holding NaN or +-Inf, naming `source` (the file), how many and the first one's
// flat (C-order) index and value: such an input would be sampled into a broken image silently.
void check_finite(const torch::Tensor& x, const std::string& source);

// Writes a CPU copy of t atomically, in the layout numpy.save produces.
void save_npy(const std::string& path, const torch::Tensor& t);

}  // namespace diffuse
