#include "diffuse/eval/classifier.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "diffuse/core/error.h"
#include "diffuse/core/progress.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/safetensors.h"

namespace fs = std::filesystem;

namespace diffuse {

namespace {

constexpr const char* kWeightsFile = "classifier.safetensors";
constexpr const char* kInfoFile = "classifier.json";

int64_t groups_for(int64_t channels) {
  return channels % 8 == 0 ? 8 : 1;
}

std::map<std::string, torch::Tensor> state_of(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> s;
  for (const auto& p : m.named_parameters()) s[p.key()] = p.value();
  for (const auto& b : m.named_buffers()) s[b.key()] = b.value();
  return s;
}

double cosine_lr(double peak, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return peak * (step + 1) / static_cast<double>(warmup);
  const double u = static_cast<double>(step - warmup) / std::max<int64_t>(1, total - warmup);
  return 0.5 * peak * (1.0 + std::cos(M_PI * std::min(1.0, u)));
}

}  // namespace

nlohmann::json ClassifierConfig::to_json() const {
  return {{"in_channels", in_channels},
          {"image_size", image_size},
          {"width", width},
          {"feature_dim", feature_dim},
          {"num_classes", num_classes}};
}

ClassifierConfig ClassifierConfig::from_json(const nlohmann::json& j, const std::string& source) {
  check(j.is_object(), source, ": classifier config must be a JSON object");
  ClassifierConfig c;
  try {
    c.in_channels = j.at("in_channels").get<int64_t>();
    c.image_size = j.at("image_size").get<int64_t>();
    c.width = j.at("width").get<int64_t>();
    c.feature_dim = j.at("feature_dim").get<int64_t>();
    c.num_classes = j.at("num_classes").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": classifier config: ", e.what());
  }
  check(c.in_channels >= 1 && c.in_channels <= 4, source, ": in_channels must be 1 to 4");
  check(c.image_size >= 8 && c.image_size % 8 == 0 && c.image_size <= 256, source,
        ": image_size must be a multiple of 8 in [8, 256]");
  check(c.width >= 1 && c.width <= 1024, source, ": width must be in [1, 1024]");
  check(c.feature_dim >= 1 && c.feature_dim <= 65536, source,
        ": feature_dim must be in [1, 65536]");
  check(c.num_classes >= 2 && c.num_classes <= 10000, source,
        ": num_classes must be in [2, 10000]");
  return c;
}

FmnistClassifierImpl::FmnistClassifierImpl(ClassifierConfig config) : config_(config) {
  namespace nn = torch::nn;
  nn::Sequential body;
  int64_t in = config_.in_channels;
  // Each stage halves the resolution: a max-pool after the first conv, stride 2 in the others
  // (a quarter of the arithmetic of pooling after full-resolution convs, for CPU training).
  for (int64_t stage = 0; stage < 3; ++stage) {
    const int64_t out = config_.width << stage;
    body->push_back(
        nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1).stride(stage == 0 ? 1 : 2)));
    body->push_back(nn::GroupNorm(nn::GroupNormOptions(groups_for(out), out)));
    body->push_back(nn::ReLU());
    if (stage == 0) body->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2)));
    in = out;
  }
  body_ = register_module("body", body);
  const int64_t side = config_.image_size / 8;
  fc_ = register_module("fc", nn::Linear(in * side * side, config_.feature_dim));
  out_ = register_module("out", nn::Linear(config_.feature_dim, config_.num_classes));
}

torch::Tensor FmnistClassifierImpl::features(const torch::Tensor& x) {
  const auto& c = config_;
  check(x.dim() == 4 && x.size(1) == c.in_channels && x.size(2) == c.image_size &&
            x.size(3) == c.image_size,
        "classifier: expected input (B, ", c.in_channels, ", ", c.image_size, ", ", c.image_size,
        "), got ", x.sizes());
  // x: (B, C, S, S) -> (B, 4 width, S/8, S/8) -> (B, feature_dim)
  return torch::relu(fc_(body_->forward(x).flatten(1)));
}

torch::Tensor FmnistClassifierImpl::head(const torch::Tensor& features) {
  return out_(features);
}

torch::Tensor classifier_input(const torch::Tensor& images, int64_t image_size) {
  check(images.dim() == 4, "classifier input: images must be (N, C, H, W), got ", images.sizes());
  const int64_t h = images.size(2), w = images.size(3);
  check(h == w && h <= image_size && (image_size - h) % 2 == 0, "classifier input: images of ", h,
        "x", w, " cannot be padded to ", image_size, "x", image_size);
  torch::Tensor x;
  if (images.scalar_type() == torch::kUInt8) {
    x = images.to(torch::kFloat32) / 127.5 - 1.0;
  } else {
    check(images.is_floating_point(), "classifier input: images must be uint8 or floating, got ",
          images.scalar_type());
    x = images.to(torch::kFloat32).clamp(-1.0, 1.0);
  }
  const int64_t p = (image_size - h) / 2;
  return p > 0 ? torch::constant_pad_nd(x, {p, p, p, p}, -1.0) : x;
}

ClassifierOutputs classify(FmnistClassifier& model, const torch::Tensor& images, int64_t batch) {
  check(batch >= 1, "classifier: batch must be >= 1");
  c10::InferenceMode guard;
  model->eval();
  const auto device = model->parameters().front().device();
  std::vector<torch::Tensor> feats, probs;
  for (int64_t i = 0; i < images.size(0); i += batch) {
    auto x = classifier_input(images.slice(0, i, i + batch), model->config().image_size);
    auto f = model->features(x.to(device));
    feats.push_back(f.to(torch::kCPU, torch::kFloat64));
    probs.push_back(torch::softmax(model->head(f).to(torch::kFloat64), 1).to(torch::kCPU));
  }
  ClassifierOutputs out;
  const auto& c = model->config();
  out.features =
      feats.empty() ? torch::zeros({0, c.feature_dim}, torch::kFloat64) : torch::cat(feats);
  out.probs = probs.empty() ? torch::zeros({0, c.num_classes}, torch::kFloat64) : torch::cat(probs);
  return out;
}

double classifier_accuracy(FmnistClassifier& model, const torch::Tensor& images,
                           const torch::Tensor& labels, int64_t batch) {
  check(labels.defined() && labels.dim() == 1 && labels.size(0) == images.size(0) &&
            images.size(0) > 0,
        "classifier accuracy: need one label per image");
  auto pred = classify(model, images, batch).probs.argmax(1);
  return pred.eq(labels.to(torch::kCPU, torch::kLong)).to(torch::kFloat64).mean().item<double>();
}

TrainedClassifier train_classifier(const ClassifierTrainOptions& o) {
  check(o.epochs >= 1, "--epochs must be >= 1");
  check(o.batch >= 1, "--batch must be >= 1");
  check(o.lr > 0, "classifier: learning rate must be > 0");
  auto train = load_dataset(o.data, "train", 0);
  auto test = load_dataset(o.data, "test", 0);
  check(train.labels.defined() && test.labels.defined(), o.data,
        ": the classifier needs a labelled dataset");
  check(train.height() <= 32 && train.width() == train.height(), o.data,
        ": the classifier takes square images of at most 32x32, got ", train.height(), "x",
        train.width());
  if (o.train_limit > 0 && o.train_limit < train.size()) {
    train.images = train.images.slice(0, 0, o.train_limit);
    train.labels = train.labels.slice(0, 0, o.train_limit);
  }
  const int64_t n = train.size();
  check(n >= o.batch, o.data, ": ", n, " training images are fewer than one batch of ", o.batch);
  ClassifierConfig cfg;
  cfg.in_channels = train.channels();
  cfg.num_classes = std::max<int64_t>(train.num_classes, 2);

  torch::manual_seed(o.seed);
  TrainedClassifier result;
  result.model = FmnistClassifier(cfg);
  auto& model = result.model;
  model->to(o.device);
  model->train();
  torch::optim::AdamW opt(model->parameters(),
                          torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  const int64_t per_epoch = n / o.batch, total = per_epoch * o.epochs;
  const int64_t warmup = std::min<int64_t>(100, total / 10 + 1);
  auto gen = at::detail::createCPUGenerator(o.seed);
  ProgressBar bar(total, "classifier", "step", o.progress);
  const auto start = std::chrono::steady_clock::now();
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    auto perm = torch::randperm(n, gen, torch::kLong);
    for (int64_t b = 0; b < per_epoch; ++b, ++step) {
      auto idx = perm.slice(0, b * o.batch, (b + 1) * o.batch);
      auto x = classifier_input(train.images.index_select(0, idx), cfg.image_size);
      auto y = train.labels.index_select(0, idx);
      for (auto& g : opt.param_groups())
        static_cast<torch::optim::AdamWOptions&>(g.options())
            .lr(cosine_lr(o.lr, step, warmup, total));
      auto loss = torch::cross_entropy_loss(model->forward(x.to(o.device)), y.to(o.device));
      opt.zero_grad();
      loss.backward();
      opt.step();
      if (step % 50 == 0) {
        char extra[48];
        std::snprintf(extra, sizeof extra, "loss %.3f", loss.item<double>());
        bar.set_extra(extra);
      }
      bar.update(1);
    }
  }
  bar.finish();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  model->eval();
  result.test_accuracy = classifier_accuracy(model, test.images, test.labels);
  return result;
}

void save_classifier(const std::string& dir, FmnistClassifier& model, double test_accuracy,
                     const nlohmann::json& info) {
  fs::create_directories(dir);
  save_safetensors((fs::path(dir) / kWeightsFile).string(), state_of(*model),
                   {{"format", "pt"}, {"model", "diffuse fmnist-classifier"}});
  nlohmann::json j = {
      {"config", model->config().to_json()}, {"test_accuracy", test_accuracy}, {"info", info}};
  write_file_atomic((fs::path(dir) / kInfoFile).string(), j.dump(2) + "\n");
}

bool classifier_exists(const std::string& dir) {
  return fs::exists(fs::path(dir) / kWeightsFile) && fs::exists(fs::path(dir) / kInfoFile);
}

FmnistClassifier load_classifier(const std::string& dir, const torch::Device& device) {
  const auto info_path = (fs::path(dir) / kInfoFile).string();
  check(classifier_exists(dir), dir, ": no classifier here (", kWeightsFile, " and ", kInfoFile,
        "); train one with diffuse eval train-classifier --out ", dir);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(info_path));
  } catch (const nlohmann::json::exception& e) {
    fail(info_path, ": not valid JSON (", e.what(), ")");
  }
  check(j.is_object() && j.contains("config"), info_path, ": no \"config\" object");
  FmnistClassifier model(ClassifierConfig::from_json(j["config"], info_path));
  const auto weights_path = (fs::path(dir) / kWeightsFile).string();
  auto file = load_safetensors(weights_path);
  auto state = state_of(*model);
  check(file.tensors.size() == state.size(), weights_path, ": holds ", file.tensors.size(),
        " tensors, the classifier has ", state.size());
  torch::NoGradGuard no_grad;
  for (auto& [name, dst] : state) {
    auto it = file.tensors.find(name);
    check(it != file.tensors.end(), weights_path, ": missing tensor ", name);
    check(it->second.sizes() == dst.sizes(), weights_path, ": ", name, " has shape ",
          it->second.sizes(), ", expected ", dst.sizes());
    check(it->second.is_floating_point(), weights_path, ": ", name, " is not floating point");
    dst.copy_(it->second);
  }
  model->to(device);
  model->eval();
  return model;
}

std::string default_classifier_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return (fs::path(xdg) / "diffuse" / "fmnist-classifier").string();
  if (const char* home = std::getenv("HOME"); home && *home)
    return (fs::path(home) / ".cache" / "diffuse" / "fmnist-classifier").string();
  return (fs::path(".cache") / "diffuse" / "fmnist-classifier").string();
}

}  // namespace diffuse
