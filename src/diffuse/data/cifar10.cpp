// CIFAR-10 "binary version" batches: each record is 1 label byte then the 32x32 image as 1024 red,
// 1024 green and 1024 blue bytes, rows top to bottom.
#include <cstring>

#include "diffuse/core/error.h"
#include "diffuse/data/dataset.h"
#include "diffuse/data/gzip.h"

namespace diffuse {

namespace {
constexpr int64_t kSide = 32;
constexpr int64_t kImageBytes = 3 * kSide * kSide;
constexpr int64_t kRecordBytes = 1 + kImageBytes;
constexpr int64_t kClasses = 10;
}  // namespace

Dataset read_cifar10_files(const std::vector<std::string>& paths) {
  check(!paths.empty(), "CIFAR-10: no batch files given");
  std::vector<std::string> files;
  int64_t total = 0;
  for (const auto& path : paths) {
    files.push_back(read_file_maybe_gzip(path));
    const auto size = static_cast<int64_t>(files.back().size());
    check(size > 0, path, ": empty CIFAR-10 batch file");
    check(size % kRecordBytes == 0, path, ": size ", size, " is not a multiple of the ",
          kRecordBytes, "-byte CIFAR-10 record (truncated or not a CIFAR-10 binary batch)");
    total += size / kRecordBytes;
  }
  Dataset ds;
  ds.images = torch::empty({total, 3, kSide, kSide}, torch::kUInt8);
  ds.labels = torch::empty({total}, torch::kInt64);
  ds.num_classes = kClasses;
  auto* img = ds.images.data_ptr<uint8_t>();
  auto* lab = ds.labels.data_ptr<int64_t>();
  int64_t n = 0;
  for (size_t f = 0; f < files.size(); ++f) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(files[f].data());
    const auto records = static_cast<int64_t>(files[f].size()) / kRecordBytes;
    for (int64_t r = 0; r < records; ++r, ++n) {
      const unsigned char* rec = bytes + r * kRecordBytes;
      check(rec[0] < kClasses, paths[f], ": record ", r, " has label ", int{rec[0]},
            " (CIFAR-10 labels are 0..9)");
      lab[n] = rec[0];
      std::memcpy(img + n * kImageBytes, rec + 1, kImageBytes);
    }
  }
  return ds;
}

}  // namespace diffuse
