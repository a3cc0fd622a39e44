// Image datasets held in memory as uint8 tensors, and the readers for the formats diffuse trains
// on: idx (MNIST, Fashion-MNIST), the CIFAR-10 binary batches and folders of PNG/JPEG files.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace diffuse {

struct Dataset {
  torch::Tensor images;  // (N, C, H, W) uint8, CPU, contiguous
  torch::Tensor labels;  // (N) int64, or undefined when the dataset has none
  int64_t num_classes = 0;
  std::string name;

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  int64_t channels() const { return images.size(1); }
  int64_t height() const { return images.size(2); }
  int64_t width() const { return images.size(3); }
};

// Opens a dataset by spec:
// clang-format off
//   fashion-mnist      Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist)
//   mnist:DIR          {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] inside DIR
//   idx:IMAGES_FILE    one idx3 file; labels from the sibling named with 'labels-idx1' in place
//                      of 'images-idx3' when that file exists (split is then ignored)
//   cifar10:DIR        CIFAR-10 binary version: data_batch_{1..5}.bin / test_batch.bin
//   folder:DIR         every PNG/JPEG below DIR (either split gives all of them; no labels)
// clang-format on
// split: "train" or "test". image_size: side of the square images returned; fixed-size datasets
// are resized (antialiased bilinear) when it differs from theirs, 0 keeps their size (folder
// requires a size). channels: 1 or 3, or 0 for the dataset's own (folder: 3).
Dataset load_dataset(const std::string& spec, const std::string& split, int64_t image_size,
                     int64_t channels = 0);

// idx readers; files may be gzip-compressed (detected by the magic bytes, not the name).
// images: magic 0x00000803, dims (N, H, W) -> (N, 1, H, W). labels: magic 0x00000801, dims (N).
torch::Tensor read_idx_images(const std::string& path);
torch::Tensor read_idx_labels(const std::string& path);
// Images plus optional labels (labels_path empty: none); the counts must agree.
Dataset read_idx(const std::string& images_path, const std::string& labels_path);

// CIFAR-10 binary batch files: records of 1 label byte (0..9) + 3072 bytes (3x32x32,
// channel-major).
Dataset read_cifar10_files(const std::vector<std::string>& paths);

// Every *.png/*.jpg/*.jpeg (case-insensitive) below dir, in sorted path order, each center-cropped
// to a square and resized to image_size x image_size with antialiased bilinear interpolation.
// channels: 3 (RGB) or 1 (grey).
Dataset read_image_folder(const std::string& dir, int64_t image_size, int64_t channels = 3);

// Square images: center crop to min(H, W), then antialiased bilinear resize to size x size.
// images: (C, H, W) or (N, C, H, W) uint8 -> (C, size, size) or (N, C, size, size) uint8.
torch::Tensor center_crop_resize(const torch::Tensor& images, int64_t size);

// images: (N, C, H, W) uint8 -> (N, channels, H, W): grey to RGB repeats the plane, RGB to grey
// uses the ITU-R BT.601 luma weights.
torch::Tensor convert_channels(const torch::Tensor& images, int64_t channels);

}  // namespace diffuse
