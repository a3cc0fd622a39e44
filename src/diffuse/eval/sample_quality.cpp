#include "diffuse/eval/sample_quality.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "diffuse/core/error.h"
#include "diffuse/data/dataset.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/image.h"
#include "diffuse/io/npy.h"
#include "diffuse/io/safetensors.h"

namespace fs = std::filesystem;

namespace diffuse {

namespace {

constexpr const char* kReferenceFile = "reference_stats.safetensors";
constexpr const char* kReferenceVersion = "1";

std::string num_text(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

torch::Tensor gaussian_blur(const torch::Tensor& images, double sigma) {
  check(images.dim() == 4 && images.is_floating_point(),
        "gaussian_blur: images must be (N, C, H, W) floating, got ", images.sizes());
  check(sigma > 0 && sigma <= 64, "gaussian_blur: sigma must be in (0, 64], got ", sigma);
  const int64_t c = images.size(1), radius = static_cast<int64_t>(std::ceil(3 * sigma));
  auto opts = torch::TensorOptions().dtype(images.scalar_type()).device(images.device());
  auto x = torch::arange(-radius, radius + 1, torch::kFloat64);
  auto k = (-(x * x) / (2 * sigma * sigma)).exp();
  k = (k / k.sum()).to(opts);
  // Depthwise: one copy of the kernel per channel, rows then columns.
  auto kh = k.view({1, 1, 1, -1}).repeat({c, 1, 1, 1});
  auto kv = k.view({1, 1, -1, 1}).repeat({c, 1, 1, 1});
  auto padded = torch::replication_pad2d(images, {radius, radius, radius, radius});
  auto out = torch::nn::functional::conv2d(padded, kh,
                                           torch::nn::functional::Conv2dFuncOptions().groups(c));
  return torch::nn::functional::conv2d(out, kv,
                                       torch::nn::functional::Conv2dFuncOptions().groups(c));
}

torch::Tensor center_crop(const torch::Tensor& images, int64_t size) {
  check(images.dim() == 4, "center_crop: images must be (N, C, H, W), got ", images.sizes());
  const int64_t h = images.size(2), w = images.size(3);
  check(h >= size && w >= size && (h - size) % 2 == 0 && (w - size) % 2 == 0, "images of ", h, "x",
        w, " cannot be cropped centrally to ", size, "x", size);
  return images.slice(2, (h - size) / 2, (h + size) / 2).slice(3, (w - size) / 2, (w + size) / 2);
}

torch::Tensor samples_to_data_images(const torch::Tensor& samples, int64_t data_size) {
  check(samples.dim() == 4, "samples must be (N, C, H, W), got ", samples.sizes());
  auto u8 = (samples.scalar_type() == torch::kUInt8 ? samples : to_uint8(samples)).to(torch::kCPU);
  const int64_t h = u8.size(2), w = u8.size(3);
  if (h == w && h >= data_size && (h - data_size) % 2 == 0)
    return center_crop(u8, data_size).contiguous();
  // A model trained at another resolution: resized as the data would be for it.
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < u8.size(0); ++i) out.push_back(center_crop_resize(u8[i], data_size));
  return torch::stack(out);
}

torch::Tensor load_sample_images(const std::string& path, int64_t data_size) {
  auto t = load_npy(path);
  if (t.dim() == 3) t = t.unsqueeze(1);
  check(t.dim() == 4 && t.size(0) >= 1, path, ": samples must be (N, C, H, W) or (N, H, W), got ",
        t.sizes());
  check(t.size(1) == 1 || t.size(1) == 3, path, ": samples must have 1 or 3 channels, got ",
        t.size(1));
  check(t.size(2) == t.size(3) && t.size(2) >= 4, path, ": samples must be square images, got ",
        t.size(2), "x", t.size(3));
  if (t.scalar_type() != torch::kUInt8) {
    check(t.is_floating_point(), path, ": samples must be float in [-1, 1] or uint8, got ",
          t.scalar_type());
    check(torch::isfinite(t).all().item<bool>(), path, ": samples contain NaN or Inf");
    const double lo = t.min().item<double>(), hi = t.max().item<double>();
    // Values outside [-1, 1] (unclipped samplers) are clamped as a PNG would clamp them; but
    // no negative value at all means the [0, 1] or [0, 255] convention, which would silently
    // score as nonsense.
    check(lo < 0, path, ": float samples must be in [-1, 1], but none is negative (range [", lo,
          ", ", hi, "]); [0, 1] data must be mapped with 2x - 1");
  }
  auto images = samples_to_data_images(t, data_size);
  if (images.size(1) == 3) images = convert_channels(images, 1);
  return images;
}

SampleScores score_images(FmnistClassifier& classifier, const torch::Tensor& images,
                          const FeatureStats& reference, int64_t is_splits) {
  check(images.size(0) >= 2, "FD-FMNIST needs at least 2 images, got ", images.size(0));
  auto out = classify(classifier, images);
  SampleScores s;
  s.n = images.size(0);
  s.fd = frechet_distance(feature_stats(out.features), reference);
  s.is = inception_score(out.probs, std::min(is_splits, s.n));
  return s;
}

std::string classifier_fingerprint(const std::string& classifier_dir) {
  const auto bytes = read_file((fs::path(classifier_dir) / "classifier.safetensors").string());
  // FNV-1a, 64 bits.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : bytes) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx-%zu", static_cast<unsigned long long>(h), bytes.size());
  return buf;
}

ReferenceStats compute_reference_stats(FmnistClassifier& classifier, const std::string& data,
                                       double blur_sigma, int64_t is_splits) {
  auto test = load_dataset(data, "test", 0);
  auto train = load_dataset(data, "train", 0);
  const int64_t n = test.size();
  check(n >= 2 && train.size() >= n, data, ": need at least as many training as test images");
  ReferenceStats r;
  r.data = data;
  r.blur_sigma = blur_sigma;
  r.n_test = n;
  r.n_train = n;
  r.image_size = test.height();
  auto test_out = classify(classifier, test.images);
  r.test = feature_stats(test_out.features);
  r.is_test = inception_score(test_out.probs, std::min(is_splits, n));
  // As many training images as test images, so the floor carries the same small-sample bias as
  // a score of that many samples.
  auto train_out = classify(classifier, train.images.slice(0, 0, n));
  r.fd_train_test = frechet_distance(feature_stats(train_out.features), r.test);
  r.is_train = inception_score(train_out.probs, std::min(is_splits, n));
  auto blurred = gaussian_blur(test.images.to(torch::kFloat32) / 127.5 - 1.0, blur_sigma);
  auto blur_out = classify(classifier, to_uint8(blurred));
  r.fd_blur_test = frechet_distance(feature_stats(blur_out.features), r.test);
  r.is_blur = inception_score(blur_out.probs, std::min(is_splits, n));
  return r;
}

std::string reference_stats_path(const std::string& classifier_dir) {
  return (fs::path(classifier_dir) / kReferenceFile).string();
}

void save_reference_stats(const std::string& path, const ReferenceStats& s) {
  std::map<std::string, std::string> meta = {{"version", kReferenceVersion},
                                             {"fingerprint", s.fingerprint},
                                             {"data", s.data},
                                             {"n", std::to_string(s.test.n)},
                                             {"n_train", std::to_string(s.n_train)},
                                             {"n_test", std::to_string(s.n_test)},
                                             {"image_size", std::to_string(s.image_size)},
                                             {"blur_sigma", num_text(s.blur_sigma)},
                                             {"fd_train_test", num_text(s.fd_train_test)},
                                             {"fd_blur_test", num_text(s.fd_blur_test)},
                                             {"is_test", num_text(s.is_test.mean)},
                                             {"is_test_std", num_text(s.is_test.std)},
                                             {"is_train", num_text(s.is_train.mean)},
                                             {"is_train_std", num_text(s.is_train.std)},
                                             {"is_blur", num_text(s.is_blur.mean)},
                                             {"is_blur_std", num_text(s.is_blur.std)}};
  save_safetensors(path, {{"mu", s.test.mu}, {"sigma", s.test.sigma}}, meta);
}

std::optional<ReferenceStats> load_reference_stats(const std::string& path,
                                                   const std::string& fingerprint,
                                                   const std::string& data) {
  if (!fs::exists(path)) return std::nullopt;
  try {
    auto f = load_safetensors(path);
    auto& m = f.metadata;
    auto get = [&](const std::string& k) {
      auto it = m.find(k);
      check(it != m.end(), path, ": no ", k);
      return it->second;
    };
    auto num = [&](const std::string& k) { return std::stod(get(k)); };
    if (get("version") != kReferenceVersion || get("fingerprint") != fingerprint ||
        get("data") != data)
      return std::nullopt;
    ReferenceStats s;
    s.fingerprint = fingerprint;
    s.data = data;
    s.test.mu = f.tensors.at("mu").to(torch::kFloat64);
    s.test.sigma = f.tensors.at("sigma").to(torch::kFloat64);
    s.test.n = std::stoll(get("n"));
    const int64_t d = s.test.mu.dim() == 1 ? s.test.mu.size(0) : -1;
    check(
        d > 0 && s.test.sigma.dim() == 2 && s.test.sigma.size(0) == d && s.test.sigma.size(1) == d,
        path, ": inconsistent shapes");
    s.n_train = std::stoll(get("n_train"));
    s.n_test = std::stoll(get("n_test"));
    s.image_size = std::stoll(get("image_size"));
    s.blur_sigma = num("blur_sigma");
    s.fd_train_test = num("fd_train_test");
    s.fd_blur_test = num("fd_blur_test");
    s.is_test = {num("is_test"), num("is_test_std")};
    s.is_train = {num("is_train"), num("is_train_std")};
    s.is_blur = {num("is_blur"), num("is_blur_std")};
    return s;
  } catch (const std::exception&) {
    return std::nullopt;  // damaged: recompute
  }
}

}  // namespace diffuse
