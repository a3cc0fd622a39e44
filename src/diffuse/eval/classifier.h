// A small Fashion-MNIST classifier whose penultimate features and softmax stand in for
// Inception-v3's in FD-FMNIST and IS-FMNIST (see frechet.h): Inception was trained on ImageNet
// photographs and says little about 28x28 grey clothing, while a classifier trained on the data
// itself measures what matters for it. diffuse trains it (train_classifier) and caches it.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "diffuse/data/dataset.h"

namespace diffuse {

struct ClassifierConfig {
  int64_t in_channels = 1;
  int64_t image_size = 32;  // inputs are (B, in_channels, image_size, image_size) in [-1, 1]
  int64_t width = 32;       // channels of the first of three conv stages (width, 2 width, 4 width)
  int64_t feature_dim = 256;
  int64_t num_classes = 10;

  nlohmann::json to_json() const;
  static ClassifierConfig from_json(const nlohmann::json& j, const std::string& source);
};

// Three stages of conv3x3 -> GroupNorm -> ReLU, each halving the resolution (2x2 max-pool after
// the first, stride 2 in the others), then a linear layer to the feature_dim features (after
// ReLU) and a linear layer to the class logits.
class FmnistClassifierImpl : public torch::nn::Module {
 public:
  explicit FmnistClassifierImpl(ClassifierConfig config = {});

  // x: (B, C, S, S) in [-1, 1] -> (B, feature_dim), the penultimate layer.
  torch::Tensor features(const torch::Tensor& x);
  // features: (B, feature_dim) -> logits (B, num_classes).
  torch::Tensor head(const torch::Tensor& features);
  torch::Tensor forward(const torch::Tensor& x) { return head(features(x)); }

  const ClassifierConfig& config() const { return config_; }

 private:
  ClassifierConfig config_;
  torch::nn::Sequential body_{nullptr};
  torch::nn::Linear fc_{nullptr}, out_{nullptr};
};
TORCH_MODULE(FmnistClassifier);

struct ClassifierTrainOptions {
  std::string data = "fashion-mnist";  // any labelled load_dataset spec with 28x28 or 32x32 images
  int64_t epochs = 2;
  int64_t batch = 128;
  double lr = 2e-3;  // AdamW peak, linear warmup then cosine decay to 0
  double weight_decay = 1e-4;
  int64_t train_limit = 0;  // use only the first N training images (0: all)
  uint64_t seed = 0;
  torch::Device device = torch::kCPU;
  bool progress = true;
};

struct TrainedClassifier {
  FmnistClassifier model{nullptr};
  double test_accuracy = 0;  // on the test split
  double seconds = 0;        // training time
};

TrainedClassifier train_classifier(const ClassifierTrainOptions& options);

// Images as the classifier takes them: (N, C, 28 or 32, 28 or 32) uint8 or floating in [-1, 1]
// -> (N, C, 32, 32) float32 in [-1, 1], 28x28 padded with -1 (the background) as training pads.
torch::Tensor classifier_input(const torch::Tensor& images, int64_t image_size = 32);

struct ClassifierOutputs {
  torch::Tensor features;  // (N, feature_dim) float64, CPU
  torch::Tensor probs;     // (N, num_classes) float64, CPU, softmax of the logits
};

// Runs the classifier in batches on its device. images: as for classifier_input.
ClassifierOutputs classify(FmnistClassifier& model, const torch::Tensor& images,
                           int64_t batch = 500);

// Fraction of labels (N) the classifier predicts for images.
double classifier_accuracy(FmnistClassifier& model, const torch::Tensor& images,
                           const torch::Tensor& labels, int64_t batch = 500);

// dir/classifier.safetensors + dir/classifier.json (config, accuracy and `info`).
void save_classifier(const std::string& dir, FmnistClassifier& model, double test_accuracy,
                     const nlohmann::json& info = nlohmann::json::object());
// Throws diffuse::Error naming the folder when it holds no (valid) classifier.
FmnistClassifier load_classifier(const std::string& dir, const torch::Device& device);
bool classifier_exists(const std::string& dir);

// $XDG_CACHE_HOME/diffuse/fmnist-classifier, else ~/.cache/diffuse/fmnist-classifier.
std::string default_classifier_dir();

}  // namespace diffuse
