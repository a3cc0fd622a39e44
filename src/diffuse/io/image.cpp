#include "diffuse/io/image.h"

#include <climits>

#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"

// The only translation unit that compiles stb's implementations; only the decoders this project
// reads are built, which also keeps the code exposed to untrusted files small.
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STB_IMAGE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include "stb_image.h"
#include "stb_image_write.h"
#pragma GCC diagnostic pop

namespace diffuse {

namespace {

// Bounds what one decoded image may allocate (a small file can declare a huge size).
constexpr int64_t kMaxImageBytes = int64_t{1} << 30;
constexpr int64_t kMaxGridSide = 1 << 16;

void append_bytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data),
                                             static_cast<size_t>(size));
}

}  // namespace

torch::Tensor to_uint8(const torch::Tensor& x) {
  check(x.defined() && x.is_floating_point(),
        "to_uint8: expected a floating-point image tensor in [-1, 1]");
  auto v = (x.to(torch::kFloat32) + 1.0) * 127.5;
  // floor(v + 0.5) rounds halves up; torch::round would round them to even.
  return torch::nan_to_num(v, 0.0, 255.0, 0.0).add_(0.5).floor_().clamp_(0, 255).to(torch::kUInt8);
}

torch::Tensor make_grid(const torch::Tensor& images, int64_t nrow, int64_t pad, uint8_t pad_value) {
  check(images.defined() && images.dim() == 4, "make_grid: expected (N, C, H, W) images, got ",
        images.defined() ? images.sizes() : torch::IntArrayRef{});
  check(images.size(0) > 0, "make_grid: no images");
  check(nrow > 0, "make_grid: nrow must be positive, got ", nrow);
  check(pad >= 0 && pad <= kMaxGridSide, "make_grid: pad must be in [0, ", kMaxGridSide, "], got ",
        pad);
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const int64_t cols = std::min(nrow, n), rows = (n + cols - 1) / cols;
  const int64_t gh = rows * (h + pad) + pad, gw = cols * (w + pad) + pad;
  check(gh <= kMaxGridSide && gw <= kMaxGridSide, "make_grid: a ", gh, "x", gw,
        " grid is too large (limit ", kMaxGridSide, " pixels a side)");
  const auto u8 = to_uint8(images).to(torch::kCPU);
  auto grid = torch::full({c, gh, gw}, pad_value, torch::kUInt8);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = pad + (i / cols) * (h + pad), x = pad + (i % cols) * (w + pad);
    grid.narrow(1, y, h).narrow(2, x, w).copy_(u8[i]);
  }
  return grid;
}

std::string encode_png(const torch::Tensor& chw_uint8, const std::string& what) {
  const auto& t = chw_uint8;
  check(t.defined() && t.dim() == 3 && t.scalar_type() == torch::kUInt8, what,
        ": a PNG needs a (C, H, W) uint8 tensor");
  const int64_t c = t.size(0), h = t.size(1), w = t.size(2);
  check(c >= 1 && c <= 4, what, ": cannot write a ", c, "-channel PNG (1 to 4 channels)");
  check(h > 0 && w > 0, what, ": cannot write an empty ", h, "x", w, " image");
  check(h * w * c <= kMaxImageBytes, what, ": image of ", h, "x", w, " is too large");
  const auto hwc = t.to(torch::kCPU).permute({1, 2, 0}).contiguous();
  std::string png;
  const int ok =
      stbi_write_png_to_func(append_bytes, &png, static_cast<int>(w), static_cast<int>(h),
                             static_cast<int>(c), hwc.data_ptr<uint8_t>(), static_cast<int>(w * c));
  check(ok != 0 && !png.empty(), what, ": PNG encoding failed");
  return png;
}

void save_png(const std::string& path, const torch::Tensor& chw_uint8) {
  write_file_atomic(path, encode_png(chw_uint8, path));
}

void save_grid_png(const std::string& path, const torch::Tensor& images, int64_t nrow) {
  save_png(path, make_grid(images, nrow));
}

void save_strip_png(const std::string& path, const std::vector<torch::Tensor>& rows) {
  check(!rows.empty(), path, ": save_strip_png needs at least one row");
  std::vector<torch::Tensor> cpu;
  for (size_t r = 0; r < rows.size(); ++r) {
    check(rows[r].defined() && rows[r].dim() == 4, path, ": strip row ", r,
          " is not an (N, C, H, W) tensor");
    check(rows[r].sizes() == rows[0].sizes(), path, ": strip row ", r, " has shape ",
          rows[r].sizes(), " but row 0 has ", rows[0].sizes());
    cpu.push_back(rows[r].to(torch::kCPU));
  }
  save_png(path, make_grid(torch::cat(cpu), rows[0].size(0)));
}

torch::Tensor load_image(const std::string& path, int64_t channels) {
  check(channels >= 0 && channels <= 4, path, ": cannot load an image with ", channels,
        " channels (1 to 4, or 0 for the file's own)");
  const std::string bytes = read_file(path);
  check(bytes.size() <= static_cast<size_t>(INT_MAX), path, ": image file too large");
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(bytes.size());
  int w = 0, h = 0, file_c = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &file_c))
    fail(path, ": cannot read image: ", stbi_failure_reason());
  const int64_t c = channels > 0 ? channels : file_c;
  check(int64_t{w} * h * c <= kMaxImageBytes, path, ": image of ", w, "x", h, " is too large");
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(data, len, &w, &h, &file_c, static_cast<int>(channels)),
      stbi_image_free);
  if (!pixels) fail(path, ": cannot read image: ", stbi_failure_reason());
  // pixels: (H, W, C) interleaved -> a fresh (C, H, W) tensor, copied element by element so no
  // view can outlive the stb buffer.
  auto out = torch::empty({c, h, w}, torch::kUInt8);
  auto* dst = out.data_ptr<uint8_t>();
  const stbi_uc* src = pixels.get();
  const int64_t plane = int64_t{h} * w;
  for (int64_t p = 0; p < plane; ++p)
    for (int64_t k = 0; k < c; ++k) dst[k * plane + p] = src[p * c + k];
  return out;
}

}  // namespace diffuse
