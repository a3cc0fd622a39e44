// safetensors reader and writer (https://github.com/huggingface/safetensors format):
// 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, ...,
// "__metadata__": {str: str}}, then the raw little-endian tensor bytes.
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <string_view>

namespace diffuse {

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;  // contiguous CPU tensors, dtype as stored
  std::map<std::string, std::string> metadata;   // "__metadata__"
};

// Reads and fully validates a file (header length, JSON, dtypes F64/F32/F16/BF16/I64/I32/U8,
// shapes, offsets inside the data area, no overlaps or gaps, total size). Any problem throws
// diffuse::Error naming the file and the problem.
SafetensorsFile load_safetensors(const std::string& path);

// The same for a file's bytes already in memory; `path` only names them in errors.
SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& path);

// Writes tensors (any device; copied to CPU contiguous) atomically: temporary file, fsync, rename.
void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace diffuse
