// Images in and out: the [-1, 1] float <-> uint8 convention, sample grids, and PNG/JPEG files.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

// x: (..., C, H, W) floating, nominally in [-1, 1] -> uint8 round((x + 1) * 127.5) clamped to
// [0, 255], rounding halves up (so 0 -> 128); NaN -> 0. Stays on x's device.
torch::Tensor to_uint8(const torch::Tensor& x);

// images: (N, C, H, W) floating in [-1, 1] -> (C, H', W') uint8 on the CPU, nrow images per row
// (torchvision's layout): H' = rows * (H + pad) + pad, W' = min(nrow, N) * (W + pad) + pad, with
// the padding and any unused cells of the last row filled with pad_value.
torch::Tensor make_grid(const torch::Tensor& images, int64_t nrow, int64_t pad = 2,
                        uint8_t pad_value = 0);

// chw: (C, H, W) uint8 with C = 1 (grey), 3 (RGB) or 4 (RGBA) -> the bytes of a PNG file;
// errors name `what` (the file or page being made).
std::string encode_png(const torch::Tensor& chw_uint8, const std::string& what = "PNG");

// encode_png, written atomically.
void save_png(const std::string& path, const torch::Tensor& chw_uint8);

// save_png(path, make_grid(images, nrow)).
void save_grid_png(const std::string& path, const torch::Tensor& images, int64_t nrow);

// Each row: (N, C, H, W) floating in [-1, 1], all the same shape; row r of the picture shows
// rows[r] left to right (denoising trajectories, interpolations).
void save_strip_png(const std::string& path, const std::vector<torch::Tensor>& rows);

// PNG or JPEG file -> (C, H, W) uint8 with the requested channels (1 to 4; 0 keeps the
// file's own). An unreadable file throws diffuse::Error naming it and the decoder's reason.
torch::Tensor load_image(const std::string& path, int64_t channels);

}  // namespace diffuse
