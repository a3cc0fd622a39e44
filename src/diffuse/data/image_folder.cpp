// Folders of PNG/JPEG files, and the crop/resize/channel conversions that bring any image to the
// square uint8 form the models train on.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "diffuse/core/error.h"
#include "diffuse/data/dataset.h"
#include "diffuse/io/image.h"

namespace diffuse {

namespace fs = std::filesystem;

namespace {

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

std::vector<std::string> list_images(const std::string& dir) {
  std::error_code ec;
  check(fs::is_directory(dir, ec), dir, ": not a directory");
  std::vector<std::string> paths;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (is_image_name(it->path()) && it->is_regular_file(ec)) paths.push_back(it->path().string());
  }
  check(!ec, dir, ": cannot list the directory (", ec.message(), ")");
  check(!paths.empty(), dir, ": no PNG or JPEG images found (looked for *.png, *.jpg, *.jpeg)");
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace

torch::Tensor center_crop_resize(const torch::Tensor& images, int64_t size) {
  check((images.dim() == 3 || images.dim() == 4) && images.scalar_type() == torch::kUInt8,
        "center_crop_resize: expected (C, H, W) or (N, C, H, W) uint8 images");
  check(size > 0, "center_crop_resize: size must be positive, got ", size);
  const int64_t h = images.size(-2), w = images.size(-1), side = std::min(h, w);
  const int64_t rank = images.dim();
  auto square =
      images.narrow(rank - 2, (h - side) / 2, side).narrow(rank - 1, (w - side) / 2, side);
  if (side == size) return square.contiguous();
  auto batch = rank == 3 ? square.unsqueeze(0) : square;  // (N, C, side, side)
  auto out = torch::empty({batch.size(0), batch.size(1), size, size}, torch::kUInt8);
  namespace F = torch::nn::functional;
  // Antialiased bilinear: the triangle filter widens with the downscale factor, so every source
  // pixel contributes (no aliasing when shrinking), and it is plain bilinear when enlarging.
  const auto options = F::InterpolateFuncOptions()
                           .size(std::vector<int64_t>{size, size})
                           .mode(torch::kBilinear)
                           .align_corners(false)
                           .antialias(true);
  for (int64_t i = 0; i < batch.size(0); i += 256) {  // chunks bound the float copy
    const int64_t n = std::min<int64_t>(256, batch.size(0) - i);
    auto resized = F::interpolate(batch.narrow(0, i, n).to(torch::kFloat32), options);
    out.narrow(0, i, n).copy_(resized.round().clamp(0, 255).to(torch::kUInt8));
  }
  return rank == 3 ? out.squeeze(0) : out;
}

torch::Tensor convert_channels(const torch::Tensor& images, int64_t channels) {
  check(channels == 1 || channels == 3, "channels must be 1 or 3, got ", channels);
  const int64_t have = images.size(1);
  if (have == channels) return images;
  check(have == 1 || have == 3, "cannot convert ", have, "-channel images to ", channels);
  if (channels == 3) return images.repeat({1, 3, 1, 1});
  // ITU-R BT.601 luma, the weights PIL's convert("L") uses; chunked to bound the float copy.
  auto out = torch::empty({images.size(0), 1, images.size(2), images.size(3)}, torch::kUInt8);
  const auto w = torch::tensor({0.299f, 0.587f, 0.114f}).view({1, 3, 1, 1});
  for (int64_t i = 0; i < images.size(0); i += 1024) {
    const int64_t n = std::min<int64_t>(1024, images.size(0) - i);
    auto luma = (images.narrow(0, i, n).to(torch::kFloat32) * w).sum(1, true);
    out.narrow(0, i, n).copy_(luma.round().clamp(0, 255).to(torch::kUInt8));
  }
  return out;
}

Dataset read_image_folder(const std::string& dir, int64_t image_size, int64_t channels) {
  check(image_size > 0, dir, ": an image size is needed to read a folder of images");
  check(channels == 1 || channels == 3, dir, ": channels must be 1 or 3, got ", channels);
  const auto paths = list_images(dir);
  const auto n = static_cast<int64_t>(paths.size());
  Dataset ds;
  ds.images = torch::empty({n, channels, image_size, image_size}, torch::kUInt8);
  ds.name = dir;
  // Decoding dominates; at::parallel_for rethrows the first worker exception on this thread.
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      torch::Tensor img;
      try {
        img = load_image(paths[i], channels);
      } catch (const Error& e) {
        const std::string msg = e.what();
        if (msg.find(paths[i]) != std::string::npos) throw;
        fail(paths[i], ": ", msg);
      }
      ds.images[i].copy_(center_crop_resize(img, image_size));
    }
  });
  return ds;
}

}  // namespace diffuse
