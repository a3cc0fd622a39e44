// The idx format (LeCun's MNIST files): 4 magic bytes {0, 0, type, ndims}, ndims big-endian uint32
// sizes, then the row-major data. Only type 0x08 (unsigned byte) is used by the image datasets.
#include <cstdio>
#include <cstring>

#include "diffuse/core/error.h"
#include "diffuse/data/dataset.h"
#include "diffuse/data/gzip.h"

namespace diffuse {

namespace {

uint32_t big_endian_u32(const std::string& bytes, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + at);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Parses the header, checks the magic and the exact data size, and returns the sizes.
std::vector<int64_t> idx_dims(const std::string& path, const std::string& bytes, uint32_t magic,
                              const char* what) {
  check(bytes.size() >= 4, path, ": too short for an idx file (", bytes.size(), " bytes)");
  const uint32_t got = big_endian_u32(bytes, 0);
  if (got != magic) {
    char hex[2][16];
    std::snprintf(hex[0], sizeof hex[0], "0x%08x", got);
    std::snprintf(hex[1], sizeof hex[1], "0x%08x", magic);
    fail(path, ": bad idx magic ", hex[0], " (expected ", hex[1], " for ", what, ")");
  }
  const size_t ndims = magic & 0xff;
  const size_t header = 4 + 4 * ndims;
  check(bytes.size() >= header, path, ": truncated idx header");
  std::vector<int64_t> dims(ndims);
  uint64_t total = 1;
  for (size_t i = 0; i < ndims; ++i) {
    dims[i] = big_endian_u32(bytes, 4 + 4 * i);
    check(dims[i] > 0, path, ": idx dimension ", i, " is zero");
    const uint64_t limit = uint64_t{1} << 40;  // 1 TiB: keeps the product far from overflow
    check(static_cast<uint64_t>(dims[i]) <= limit / total, path,
          ": idx sizes are implausibly large");
    total *= static_cast<uint64_t>(dims[i]);
  }
  const uint64_t have = bytes.size() - header;
  check(have >= total, path, ": truncated: ", have, " data bytes, the header promises ", total);
  check(have == total, path, ": ", have - total, " trailing bytes after the ", total,
        " data bytes the header promises");
  return dims;
}

torch::Tensor bytes_to_tensor(const std::string& bytes, size_t offset, std::vector<int64_t> shape) {
  auto t = torch::empty(shape, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), bytes.data() + offset, static_cast<size_t>(t.numel()));
  return t;
}

}  // namespace

torch::Tensor read_idx_images(const std::string& path) {
  const std::string bytes = read_file_maybe_gzip(path);
  const auto d = idx_dims(path, bytes, 0x00000803, "images (idx3-ubyte)");
  return bytes_to_tensor(bytes, 16, {d[0], 1, d[1], d[2]});
}

torch::Tensor read_idx_labels(const std::string& path) {
  const std::string bytes = read_file_maybe_gzip(path);
  const auto d = idx_dims(path, bytes, 0x00000801, "labels (idx1-ubyte)");
  return bytes_to_tensor(bytes, 8, {d[0]}).to(torch::kInt64);
}

Dataset read_idx(const std::string& images_path, const std::string& labels_path) {
  Dataset ds;
  ds.images = read_idx_images(images_path);
  ds.name = images_path;
  if (!labels_path.empty()) {
    ds.labels = read_idx_labels(labels_path);
    check(ds.labels.size(0) == ds.images.size(0), labels_path, ": ", ds.labels.size(0),
          " labels for the ", ds.images.size(0), " images of ", images_path);
    ds.num_classes = ds.labels.max().item<int64_t>() + 1;
  }
  return ds;
}

}  // namespace diffuse
