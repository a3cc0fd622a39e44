// FD-FMNIST and IS-FMNIST of generated images, beside the reference points that say what the
// numbers mean for this classifier: the train set against the test set (the floor a perfect
// model reaches, up to sampling noise) and the test set under a heavy Gaussian blur against the
// test set (a poor model).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>

#include "diffuse/eval/classifier.h"
#include "diffuse/eval/frechet.h"

namespace diffuse {

// images: (N, C, H, W) floating -> blurred with a normalised Gaussian of std sigma pixels
// (separable, radius ceil(3 sigma), border pixels repeated outward).
torch::Tensor gaussian_blur(const torch::Tensor& images, double sigma);

// The central size x size window of (N, C, H, W) images (H, W >= size, H - size even).
torch::Tensor center_crop(const torch::Tensor& images, int64_t size);

// Samples from an .npy file: (N, C, S, S) or (N, S, S), float in [-1, 1] or uint8 -> (N, 1,
// data_size, data_size) uint8 as samples_to_data_images makes them (RGB becomes grey). Floats are
// quantised as a PNG of them would be, so samples and data pass the same path.
torch::Tensor load_sample_images(const std::string& path, int64_t data_size = 28);

// (N, C, S, S) float in [-1, 1] (or uint8) from a model -> (N, C, data_size, data_size) uint8:
// the central crop when S is data_size padded evenly, else a centre-cropped antialiased resize.
torch::Tensor samples_to_data_images(const torch::Tensor& samples, int64_t data_size);

struct SampleScores {
  double fd = 0;      // FD-FMNIST against the reference (test set) statistics
  InceptionScore is;  // IS-FMNIST
  int64_t n = 0;
};

// images: (N, C, 28, 28) uint8 (or anything classifier_input takes).
SampleScores score_images(FmnistClassifier& classifier, const torch::Tensor& images,
                          const FeatureStats& reference, int64_t is_splits = 10);

struct ReferenceStats {
  FeatureStats test;         // the statistics samples are compared with
  double fd_train_test = 0;  // first n_test training images against the test set
  double fd_blur_test = 0;   // the test set blurred with blur_sigma against itself unblurred
  InceptionScore is_test, is_train, is_blur;
  int64_t n_train = 0, n_test = 0;
  double blur_sigma = 2.0;
  int64_t image_size = 0;   // side of the data's images (samples are cropped to it)
  std::string data;         // dataset spec
  std::string fingerprint;  // of the classifier weights the statistics belong to
};

// A hash of the classifier's weights file, so cached statistics are never used with another.
std::string classifier_fingerprint(const std::string& classifier_dir);

ReferenceStats compute_reference_stats(FmnistClassifier& classifier, const std::string& data,
                                       double blur_sigma = 2.0, int64_t is_splits = 10);

// classifier_dir/reference_stats.safetensors.
std::string reference_stats_path(const std::string& classifier_dir);
void save_reference_stats(const std::string& path, const ReferenceStats& stats);
// The cached statistics when the file exists and matches (fingerprint, data); else nullopt. A
// damaged file is treated as absent.
std::optional<ReferenceStats> load_reference_stats(const std::string& path,
                                                   const std::string& fingerprint,
                                                   const std::string& data);

}  // namespace diffuse
