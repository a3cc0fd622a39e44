#include <ftw.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "diffuse/core/error.h"
#include "diffuse/data/dataset.h"
#include "diffuse/io/image.h"
#include "support.h"

using namespace diffuse;
using namespace diffuse::testing;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "diffuse_test_data_XXXXXX").string();
    char* made = mkdtemp(tmpl.data());
    if (!made) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  // Not fs::remove_all: PyPI LibTorch exports its own std::filesystem whose remove_all crashes.
  ~TempDir() {
    nftw(
        path_.c_str(),
        [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// mode "wb" starts a file, "ab" appends another gzip member.
void write_gzip(const std::string& path, const std::string& bytes, const char* mode = "wb") {
  gzFile f = gzopen(path.c_str(), mode);
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

void put_u32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xff));
}

std::string tensor_bytes(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.nbytes()));
}

// images: (N, H, W) uint8
std::string idx_images(const torch::Tensor& images) {
  std::string s;
  put_u32(s, 0x00000803);
  for (int d = 0; d < 3; ++d) put_u32(s, static_cast<uint32_t>(images.size(d)));
  return s + tensor_bytes(images);
}

// labels: (N) uint8
std::string idx_labels(const torch::Tensor& labels) {
  std::string s;
  put_u32(s, 0x00000801);
  put_u32(s, static_cast<uint32_t>(labels.size(0)));
  return s + tensor_bytes(labels);
}

// images: (N, 3, 32, 32) uint8, labels: (N) uint8
std::string cifar_records(const torch::Tensor& images, const torch::Tensor& labels) {
  std::string s;
  for (int64_t i = 0; i < images.size(0); ++i) {
    s.push_back(static_cast<char>(labels[i].item<uint8_t>()));
    s += tensor_bytes(images[i]);
  }
  return s;
}

}  // namespace

// ---- idx -------------------------------------------------------------------------------------

TEST(Idx, ReadsImagesAndLabelsExactly) {
  TempDir dir;
  const auto images = random_bytes({7, 5, 4}, 1);
  const auto labels = torch::tensor({3, 0, 9, 1, 4, 4, 2}, torch::kInt64);
  write_bytes(dir / "a-images-idx3-ubyte", idx_images(images));
  write_bytes(dir / "a-labels-idx1-ubyte", idx_labels(labels.to(torch::kUInt8)));
  const auto ds = read_idx(dir / "a-images-idx3-ubyte", dir / "a-labels-idx1-ubyte");
  ASSERT_EQ(ds.images.sizes(), (std::vector<int64_t>{7, 1, 5, 4}));
  EXPECT_EQ(ds.images.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(ds.images.squeeze(1), images));
  EXPECT_TRUE(torch::equal(ds.labels, labels));
  EXPECT_EQ(ds.num_classes, labels.max().item<int64_t>() + 1);
  const auto unlabelled = read_idx(dir / "a-images-idx3-ubyte", "");
  EXPECT_FALSE(unlabelled.labels.defined());
  EXPECT_EQ(unlabelled.num_classes, 0);
}

TEST(Idx, GzipIsDetectedByContentNotName) {
  TempDir dir;
  const auto images = random_bytes({4, 3, 3}, 2);
  const std::string raw = idx_images(images);
  write_gzip(dir / "compressed-without-suffix", raw);
  write_bytes(dir / "plain.gz", raw);
  EXPECT_TRUE(torch::equal(read_idx_images(dir / "compressed-without-suffix").squeeze(1), images));
  EXPECT_TRUE(torch::equal(read_idx_images(dir / "plain.gz").squeeze(1), images));
  // Concatenated gzip members are one file.
  write_gzip(dir / "multi.gz", raw.substr(0, 20));
  write_gzip(dir / "multi.gz", raw.substr(20), "ab");
  EXPECT_TRUE(torch::equal(read_idx_images(dir / "multi.gz").squeeze(1), images));
}

TEST(Idx, MalformedFilesNameTheFileAndProblem) {
  TempDir dir;
  const auto images = random_bytes({3, 4, 4}, 3);
  const std::string raw = idx_images(images);
  const std::string labels = idx_labels(torch::tensor({1, 2, 3}, torch::kUInt8));

  const std::string magic = dir / "magic-images-idx3-ubyte";
  write_bytes(magic, labels);
  expect_error([&] { read_idx_images(magic); }, {magic, "magic"});
  const std::string magic_l = dir / "magic-labels-idx1-ubyte";
  write_bytes(magic_l, raw);
  expect_error([&] { read_idx_labels(magic_l); }, {magic_l, "magic"});

  const std::string truncated = dir / "truncated";
  write_bytes(truncated, raw.substr(0, raw.size() - 1));
  expect_error([&] { read_idx_images(truncated); }, {truncated, "truncated"});

  const std::string header = dir / "header";
  write_bytes(header, raw.substr(0, 10));
  expect_error([&] { read_idx_images(header); }, {header, "truncated"});

  const std::string tiny = dir / "tiny";
  write_bytes(tiny, "ab");
  expect_error([&] { read_idx_images(tiny); }, {tiny});

  const std::string trailing = dir / "trailing";
  write_bytes(trailing, raw + "xy");
  expect_error([&] { read_idx_images(trailing); }, {trailing, "2 trailing bytes"});

  const std::string zero = dir / "zero";
  std::string z;
  put_u32(z, 0x00000803);
  put_u32(z, 0);
  put_u32(z, 4);
  put_u32(z, 4);
  write_bytes(zero, z);
  expect_error([&] { read_idx_images(zero); }, {zero, "zero"});

  const std::string huge = dir / "huge";
  std::string h;
  put_u32(h, 0x00000803);
  for (int i = 0; i < 3; ++i) put_u32(h, 0xffffffffu);
  write_bytes(huge, h);
  expect_error([&] { read_idx_images(huge); }, {huge});

  const std::string gz = dir / "cut.gz";
  write_gzip(gz, raw);
  const std::string whole = read_bytes(gz);
  write_bytes(gz, whole.substr(0, whole.size() - 12));
  expect_error([&] { read_idx_images(gz); }, {gz, "gzip"});

  const std::string corrupt = dir / "corrupt.gz";
  std::string bad = whole;
  for (size_t i = 12; i < bad.size() - 8; ++i) bad[i] = static_cast<char>(0xff);
  write_bytes(corrupt, bad);
  expect_error([&] { read_idx_images(corrupt); }, {corrupt, "gzip"});

  const std::string junk = dir / "junk.gz";
  write_bytes(junk, whole + "junk");
  expect_error([&] { read_idx_images(junk); }, {junk, "after the end"});

  const std::string img = dir / "count-images-idx3-ubyte";
  const std::string lab = dir / "count-labels-idx1-ubyte";
  write_bytes(img, raw);
  write_bytes(lab, idx_labels(torch::tensor({1, 2}, torch::kUInt8)));
  expect_error([&] { read_idx(img, lab); }, {lab, "2 labels", "3 images"});

  expect_error([&] { read_idx_images(dir / "missing"); }, {dir / "missing", "cannot open"});
  expect_error([&] { read_idx_images(dir.path().string()); }, {dir.path().string(), "directory"});
}

// ---- CIFAR-10 --------------------------------------------------------------------------------

TEST(Cifar10, ReadsRecordsExactlyAcrossFiles) {
  TempDir dir;
  const auto images = random_bytes({5, 3, 32, 32}, 4);
  const auto labels = torch::tensor({0, 9, 3, 3, 7}, torch::kUInt8);
  write_bytes(dir / "a.bin", cifar_records(images.narrow(0, 0, 2), labels.narrow(0, 0, 2)));
  write_bytes(dir / "b.bin", cifar_records(images.narrow(0, 2, 3), labels.narrow(0, 2, 3)));
  const auto ds = read_cifar10_files({dir / "a.bin", dir / "b.bin"});
  EXPECT_TRUE(torch::equal(ds.images, images));
  EXPECT_TRUE(torch::equal(ds.labels, labels.to(torch::kInt64)));
  EXPECT_EQ(ds.num_classes, 10);
}

TEST(Cifar10, MalformedFilesNameTheFileAndProblem) {
  TempDir dir;
  const auto images = random_bytes({2, 3, 32, 32}, 5);
  const std::string good = cifar_records(images, torch::tensor({1, 2}, torch::kUInt8));
  write_bytes(dir / "short.bin", good.substr(0, good.size() - 5));
  expect_error([&] { read_cifar10_files({dir / "short.bin"}); },
               {dir / "short.bin", "multiple of the 3073"});
  write_bytes(dir / "empty.bin", "");
  expect_error([&] { read_cifar10_files({dir / "empty.bin"}); }, {dir / "empty.bin", "empty"});
  write_bytes(dir / "label.bin", cifar_records(images, torch::tensor({1, 10}, torch::kUInt8)));
  expect_error([&] { read_cifar10_files({dir / "label.bin"}); },
               {dir / "label.bin", "record 1", "label 10"});
}

// ---- load_dataset ----------------------------------------------------------------------------

TEST(LoadDataset, MnistDirectoryWithPlainAndGzipFiles) {
  TempDir dir;
  const auto train = random_bytes({6, 28, 28}, 6);
  const auto test = random_bytes({3, 28, 28}, 7);
  const auto train_labels = torch::tensor({0, 1, 2, 3, 4, 5}, torch::kUInt8);
  const auto test_labels = torch::tensor({7, 8, 9}, torch::kUInt8);
  write_gzip(dir / "train-images-idx3-ubyte.gz", idx_images(train));
  write_bytes(dir / "train-labels-idx1-ubyte", idx_labels(train_labels));
  write_bytes(dir / "t10k-images-idx3-ubyte", idx_images(test));
  write_gzip(dir / "t10k-labels-idx1-ubyte.gz", idx_labels(test_labels));
  const std::string spec = "mnist:" + dir.path().string();
  const auto tr = load_dataset(spec, "train", 0);
  EXPECT_TRUE(torch::equal(tr.images.squeeze(1), train));
  EXPECT_TRUE(torch::equal(tr.labels, train_labels.to(torch::kInt64)));
  EXPECT_EQ(tr.name, spec);
  const auto te = load_dataset(spec, "test", 28);
  EXPECT_TRUE(torch::equal(te.images.squeeze(1), test));
  EXPECT_TRUE(torch::equal(te.labels, test_labels.to(torch::kInt64)));
  // Resizing and channel conversion on request.
  const auto rgb16 = load_dataset(spec, "test", 16, 3);
  ASSERT_EQ(rgb16.images.sizes(), (std::vector<int64_t>{3, 3, 16, 16}));
  EXPECT_TRUE(torch::equal(rgb16.images[0][0], rgb16.images[0][2]));

  fs::remove(dir / "train-labels-idx1-ubyte");
  expect_error([&] { load_dataset(spec, "train", 0); }, {"train-labels-idx1-ubyte", "missing"});
}

TEST(LoadDataset, IdxFileWithOptionalSiblingLabels) {
  TempDir dir;
  const auto images = random_bytes({4, 6, 6}, 8);
  write_bytes(dir / "x-images-idx3-ubyte", idx_images(images));
  auto ds = load_dataset("idx:" + (dir / "x-images-idx3-ubyte"), "train", 0);
  EXPECT_TRUE(torch::equal(ds.images.squeeze(1), images));
  EXPECT_FALSE(ds.labels.defined());
  const auto labels = torch::tensor({2, 0, 2, 1}, torch::kUInt8);
  write_bytes(dir / "x-labels-idx1-ubyte", idx_labels(labels));
  ds = load_dataset("idx:" + (dir / "x-images-idx3-ubyte"), "test", 0);
  EXPECT_TRUE(torch::equal(ds.labels, labels.to(torch::kInt64)));
  EXPECT_EQ(ds.num_classes, 3);
}

TEST(LoadDataset, Cifar10DirectorySplits) {
  TempDir dir;
  std::vector<torch::Tensor> parts;
  for (int i = 1; i <= 5; ++i) {
    parts.push_back(random_bytes({i, 3, 32, 32}, 10 + i));
    write_bytes(dir / ("data_batch_" + std::to_string(i) + ".bin"),
                cifar_records(parts.back(), torch::full({i}, i, torch::kUInt8)));
  }
  const auto test = random_bytes({2, 3, 32, 32}, 20);
  write_bytes(dir / "test_batch.bin", cifar_records(test, torch::tensor({9, 0}, torch::kUInt8)));
  const std::string spec = "cifar10:" + dir.path().string();
  const auto tr = load_dataset(spec, "train", 32);
  EXPECT_TRUE(torch::equal(tr.images, torch::cat(parts)));
  EXPECT_EQ(tr.labels[14].item<int64_t>(), 5);
  const auto te = load_dataset(spec, "test", 0);
  EXPECT_TRUE(torch::equal(te.images, test));
  const auto grey = load_dataset(spec, "test", 0, 1);
  ASSERT_EQ(grey.images.size(1), 1);
  fs::remove(dir / "data_batch_3.bin");
  expect_error([&] { load_dataset(spec, "train", 0); }, {"data_batch_3.bin", "missing"});
}

TEST(LoadDataset, BadSpecsAreExplained) {
  expect_error(
      [] { load_dataset("imagenet:/x", "train", 32); },
      {"imagenet", "fashion-mnist", "mnist:DIR", "idx:IMAGES_FILE", "cifar10:DIR", "folder:DIR"});
  expect_error([] { load_dataset("mnist", "train", 0); }, {"mnist", "missing the path"});
  expect_error([] { load_dataset("fashion-mnist", "validation", 0); }, {"validation"});
  expect_error([] { load_dataset("mnist:/nonexistent/dir", "train", 0); },
               {"/nonexistent/dir", "not a directory"});
}

TEST(LoadDataset, FashionMnistTestSplit) {
  const auto ds = load_dataset("fashion-mnist", "test", 28);
  ASSERT_EQ(ds.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(ds.images.scalar_type(), torch::kUInt8);
  ASSERT_EQ(ds.labels.sizes(), (std::vector<int64_t>{10000}));
  EXPECT_EQ(ds.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(ds.labels.max().item<int64_t>(), 9);
  EXPECT_EQ(ds.num_classes, 10);
  // The test split is balanced: 1000 images per class.
  const auto counts = torch::bincount(ds.labels);
  EXPECT_TRUE(torch::equal(counts, torch::full({10}, 1000, torch::kInt64)));
  EXPECT_GT(ds.images.to(torch::kFloat32).std().item<float>(), 10.0f);
}

// ---- folders ---------------------------------------------------------------------------------

TEST(ImageFolder, ReadsSortedCroppedImagesRecursively) {
  TempDir dir;
  const auto a = random_bytes({3, 4, 6}, 30);  // wide: cropped to the middle 4 columns
  const auto b = random_bytes({3, 7, 4}, 31);  // tall: rows 1..4
  const auto c = random_bytes({3, 4, 4}, 32);
  fs::create_directories(dir.path() / "b/nested");
  save_png(dir / "b/nested/one.PNG", b);
  save_png(dir / "a.png", a);
  save_png(dir / "c.Jpeg.png", c);
  write_bytes(dir / "notes.txt", "not an image");
  const auto ds = load_dataset("folder:" + dir.path().string(), "train", 4);
  ASSERT_EQ(ds.images.sizes(), (std::vector<int64_t>{3, 3, 4, 4}));
  EXPECT_FALSE(ds.labels.defined());
  EXPECT_TRUE(torch::equal(ds.images[0], a.narrow(2, 1, 4)));
  EXPECT_TRUE(torch::equal(ds.images[1], b.narrow(1, 1, 4)));
  EXPECT_TRUE(torch::equal(ds.images[2], c));
  const auto grey = load_dataset("folder:" + dir.path().string(), "test", 4, 1);
  ASSERT_EQ(grey.images.sizes(), (std::vector<int64_t>{3, 1, 4, 4}));
}

TEST(ImageFolder, ResizeAveragesInsteadOfAliasing) {
  // Shrunk 8x, noise must come out close to its 8x8 block means: an antialiased filter averages
  // every pixel, whereas point-sampled bilinear reads 4 of each 64 and stays as noisy as the input.
  const auto noise = random_bytes({3, 64, 64}, 34);
  const auto small = center_crop_resize(noise, 8);
  ASSERT_EQ(small.sizes(), (std::vector<int64_t>{3, 8, 8}));
  const auto block_means = torch::avg_pool2d(noise.to(torch::kFloat32).unsqueeze(0), 8).squeeze(0);
  EXPECT_LT((small.to(torch::kFloat32) - block_means).abs().mean().item<float>(), 8.0f);
  // A batch is resized image by image, including the crop of non-square images.
  const auto batch = random_bytes({2, 3, 20, 30}, 35);
  const auto resized = center_crop_resize(batch, 12);
  ASSERT_EQ(resized.sizes(), (std::vector<int64_t>{2, 3, 12, 12}));
  for (int64_t i = 0; i < 2; ++i)
    EXPECT_TRUE(torch::equal(resized[i], center_crop_resize(batch[i], 12)));
  // Constant images stay constant, in both directions.
  auto flat = torch::full({3, 10, 14}, 77, torch::kUInt8);
  EXPECT_TRUE(torch::equal(center_crop_resize(flat, 5), torch::full({3, 5, 5}, 77, torch::kUInt8)));
  EXPECT_TRUE(
      torch::equal(center_crop_resize(flat, 23), torch::full({3, 23, 23}, 77, torch::kUInt8)));
}

TEST(ImageFolder, ChannelConversion) {
  auto red = torch::zeros({1, 3, 2, 2}, torch::kUInt8);
  red.select(1, 0).fill_(255);
  const auto grey = convert_channels(red, 1);
  ASSERT_EQ(grey.sizes(), (std::vector<int64_t>{1, 1, 2, 2}));
  EXPECT_EQ(grey[0][0][0][0].item<uint8_t>(), std::lround(0.299 * 255));
  const auto back = convert_channels(grey, 3);
  EXPECT_TRUE(torch::equal(back.select(1, 0), grey.select(1, 0)));
  EXPECT_TRUE(torch::equal(back.select(1, 2), grey.select(1, 0)));
}

TEST(ImageFolder, BadImagesAndEmptyFoldersAreErrors) {
  TempDir dir;
  // Enough images that the decoding runs on several threads: the error must still surface.
  save_png(dir / "good0.png", random_bytes({3, 5, 5}, 33));
  const std::string png = read_bytes(dir / "good0.png");
  for (int i = 1; i < 40; ++i) write_bytes(dir / ("good" + std::to_string(i) + ".png"), png);
  write_bytes(dir / "sub/broken.jpg", "this is not a JPEG");
  expect_error([&] { read_image_folder(dir.path().string(), 4); }, {dir / "sub/broken.jpg"});
  TempDir empty;
  write_bytes(empty / "readme.md", "no images here");
  expect_error([&] { load_dataset("folder:" + empty.path().string(), "train", 8); },
               {empty.path().string(), "no PNG or JPEG"});
  expect_error([&] { load_dataset("folder:" + (dir / "nope"), "train", 8); },
               {dir / "nope", "not a directory"});
  expect_error([&] { load_dataset("folder:" + dir.path().string(), "train", 0); },
               {dir.path().string(), "image size"});
}
