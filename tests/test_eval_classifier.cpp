// The FD-FMNIST classifier: trained here from scratch on Fashion-MNIST (two epochs on the CPU,
// about two minutes on two cores) to at least 90% test accuracy; then saved, reloaded and used
// for the reference statistics the fd command prints.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <thread>

#include "diffuse/core/error.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/data/dataset.h"
#include "diffuse/eval/classifier.h"
#include "diffuse/eval/sample_quality.h"
#include "diffuse/io/npy.h"

namespace fs = std::filesystem;
using namespace diffuse;

namespace {

fs::path temp_dir(const std::string& name) {
  auto p = fs::temp_directory_path() /
           ("diffuse_test_classifier_" + name + "_" + std::to_string(::getpid()));
  remove_tree(p.string());
  fs::create_directories(p);
  return p;
}

}  // namespace

TEST(ClassifierInput, PadsUint8AndFloatLikeTraining) {
  auto u8 = torch::full({2, 1, 28, 28}, 255, torch::kUInt8);
  auto x = classifier_input(u8);
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{2, 1, 32, 32}));
  EXPECT_EQ(x.slice(2, 2, 30).slice(3, 2, 30).min().item<float>(), 1.0f);
  EXPECT_EQ(x[0][0][0][0].item<float>(), -1.0f);  // the border is the background, -1
  EXPECT_EQ(x.sum().item<float>(), 2 * (784 - (1024 - 784)));
  auto f = classifier_input(torch::full({1, 1, 32, 32}, 2.0));
  EXPECT_EQ(f.max().item<float>(), 1.0f);  // clamped
  EXPECT_THROW(classifier_input(torch::zeros({1, 1, 29, 29})), Error);
  EXPECT_THROW(classifier_input(torch::zeros({1, 1, 36, 36})), Error);
  EXPECT_THROW(classifier_input(torch::zeros({1, 28, 28})), Error);
}

TEST(Classifier, ShapesAndSaveLoadRoundTrip) {
  torch::manual_seed(3);
  FmnistClassifier m;
  auto x = torch::rand({5, 1, 32, 32}) * 2 - 1;
  EXPECT_EQ(m->features(x).sizes(), (std::vector<int64_t>{5, 256}));
  EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{5, 10}));
  auto dir = temp_dir("roundtrip");
  save_classifier(dir.string(), m, 0.5);
  ASSERT_TRUE(classifier_exists(dir.string()));
  auto loaded = load_classifier(dir.string(), torch::kCPU);
  m->eval();
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::equal(m->forward(x), loaded->forward(x)));
  auto out = classify(loaded, x, 2);  // batches of 2, 2, 1
  EXPECT_EQ(out.probs.sizes(), (std::vector<int64_t>{5, 10}));
  EXPECT_TRUE(torch::allclose(out.probs.sum(1), torch::ones({5}, torch::kFloat64)));
  EXPECT_TRUE(torch::allclose(out.features, m->features(x).to(torch::kFloat64), 1e-6, 1e-6));
  EXPECT_NE(classifier_fingerprint(dir.string()), "");

  // A missing folder, and a weights file that does not fit the config, are errors.
  EXPECT_THROW(load_classifier((dir / "none").string(), torch::kCPU), Error);
  ClassifierConfig wide;
  wide.width = 16;
  FmnistClassifier other(wide);
  save_classifier((dir / "other").string(), other, 0.5);
  fs::copy_file(dir / "other" / "classifier.safetensors", dir / "classifier.safetensors",
                fs::copy_options::overwrite_existing);
  EXPECT_THROW(load_classifier(dir.string(), torch::kCPU), Error);
  remove_tree(dir.string());
}

TEST(SampleQuality, BlurCropAndSampleFiles) {
  // Blur keeps constants, conserves the mean of an interior impulse, and smooths it.
  auto c = torch::full({1, 1, 20, 20}, 0.3);
  EXPECT_TRUE(torch::allclose(gaussian_blur(c, 2.0), c, 1e-6, 1e-6));
  auto impulse = torch::zeros({1, 1, 28, 28}, torch::kFloat64);
  impulse[0][0][14][14] = 1.0;
  auto b = gaussian_blur(impulse, 2.0);
  EXPECT_NEAR(b.sum().item<double>(), 1.0, 1e-9);
  EXPECT_NEAR(b[0][0][14][14].item<double>(), 1.0 / (2 * M_PI * 4), 2e-3);
  EXPECT_NEAR(b[0][0][14][16].item<double>() / b[0][0][14][14].item<double>(), std::exp(-0.5),
              2e-3);

  auto dir = temp_dir("samples");
  auto samples = torch::rand({3, 1, 32, 32}) * 2 - 1;
  save_npy((dir / "s32.npy").string(), samples);
  auto loaded = load_sample_images((dir / "s32.npy").string());
  ASSERT_EQ(loaded.sizes(), (std::vector<int64_t>{3, 1, 28, 28}));
  EXPECT_EQ(loaded.scalar_type(), torch::kUInt8);
  auto expected = ((samples.slice(2, 2, 30).slice(3, 2, 30) + 1) * 127.5).round().clamp(0, 255);
  EXPECT_LE((loaded.to(torch::kFloat32) - expected).abs().max().item<float>(), 1.0f);
  save_npy((dir / "u8.npy").string(), torch::randint(0, 256, {4, 28, 28}).to(torch::kUInt8));
  EXPECT_EQ(load_sample_images((dir / "u8.npy").string()).sizes(),
            (std::vector<int64_t>{4, 1, 28, 28}));
  save_npy((dir / "bad_size.npy").string(), torch::zeros({2, 1, 30, 31}));
  EXPECT_THROW(load_sample_images((dir / "bad_size.npy").string()), Error);
  save_npy((dir / "unit_range.npy").string(), torch::rand({2, 1, 28, 28}));
  EXPECT_THROW(load_sample_images((dir / "unit_range.npy").string()), Error);
  remove_tree(dir.string());
}

TEST(Classifier, TrainsToNinetyPercentAndOrdersReferencePoints) {
  ClassifierTrainOptions o;  // the defaults diffuse eval train-classifier uses
  o.progress = false;
  torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  auto t = train_classifier(o);
  std::cout << "classifier test accuracy " << t.test_accuracy << " after " << t.seconds << " s\n";
  EXPECT_GE(t.test_accuracy, 0.90);

  // The reference points: real data scores near the floor, blur far above it; IS of real data
  // is high (confident and diverse), of blurred data lower.
  auto ref = compute_reference_stats(t.model, "fashion-mnist");
  EXPECT_EQ(ref.n_test, 10000);
  EXPECT_EQ(ref.image_size, 28);
  EXPECT_LT(ref.fd_train_test * 10, ref.fd_blur_test);
  EXPECT_GT(ref.is_test.mean, 5.0);
  EXPECT_LT(ref.is_test.mean, 10.0);
  EXPECT_LT(ref.is_blur.mean, ref.is_test.mean);

  // Scoring the test set against its own statistics gives FD 0; the cache round-trips and is
  // refused for another classifier or dataset.
  auto test = load_dataset("fashion-mnist", "test", 0);
  auto self = score_images(t.model, test.images, ref.test);
  EXPECT_NEAR(self.fd, 0.0, 1e-6);
  EXPECT_NEAR(self.is.mean, ref.is_test.mean, 1e-9);
  // Other training images, stored as samples are (float, padded to 32x32), score near the floor.
  auto dir = temp_dir("reference");
  auto train = load_dataset("fashion-mnist", "train", 0);
  auto other = torch::constant_pad_nd(
      train.images.slice(0, 10000, 20000).to(torch::kFloat32) / 127.5 - 1.0, {2, 2, 2, 2}, -1.0);
  save_npy((dir / "train.npy").string(), other);
  auto as_samples =
      score_images(t.model, load_sample_images((dir / "train.npy").string()), ref.test);
  std::cout << "FD-FMNIST of other training images " << as_samples.fd << " (floor "
            << ref.fd_train_test << ", blur " << ref.fd_blur_test << ")\n";
  EXPECT_LT(as_samples.fd, 3 * ref.fd_train_test);

  ref.fingerprint = "abc";
  save_reference_stats(reference_stats_path(dir.string()), ref);
  auto back = load_reference_stats(reference_stats_path(dir.string()), "abc", "fashion-mnist");
  ASSERT_TRUE(back.has_value());
  EXPECT_DOUBLE_EQ(back->fd_blur_test, ref.fd_blur_test);
  EXPECT_DOUBLE_EQ(back->is_train.mean, ref.is_train.mean);
  EXPECT_TRUE(torch::equal(back->test.sigma, ref.test.sigma));
  EXPECT_FALSE(load_reference_stats(reference_stats_path(dir.string()), "abd", "fashion-mnist"));
  EXPECT_FALSE(load_reference_stats(reference_stats_path(dir.string()), "abc", "mnist:x"));
  remove_tree(dir.string());
}
