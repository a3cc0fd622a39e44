#include "diffuse/data/dataset.h"

#include <filesystem>

#include "diffuse/core/error.h"

namespace diffuse {

namespace fs = std::filesystem;

namespace {

const char* const kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

const char* const kSpecHelp =
    "accepted datasets: fashion-mnist, mnist:DIR, idx:IMAGES_FILE, cifar10:DIR, folder:DIR";

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// DIR/name or DIR/name.gz, whichever exists.
std::string find_idx_file(const std::string& dir, const std::string& name) {
  const fs::path plain = fs::path(dir) / name;
  if (is_file(plain)) return plain.string();
  const fs::path gz = fs::path(dir) / (name + ".gz");
  if (is_file(gz)) return gz.string();
  fail(dir, ": missing ", name, " (looked for ", plain.string(), " and ", gz.string(), ")");
}

Dataset read_mnist_dir(const std::string& dir, const std::string& split) {
  std::error_code ec;
  check(fs::is_directory(dir, ec), dir, ": not a directory");
  const std::string prefix = split == "train" ? "train" : "t10k";
  return read_idx(find_idx_file(dir, prefix + "-images-idx3-ubyte"),
                  find_idx_file(dir, prefix + "-labels-idx1-ubyte"));
}

Dataset read_idx_spec(const std::string& images_path) {
  const std::string key = "images-idx3";
  const std::string name = fs::path(images_path).filename().string();
  std::string labels;
  if (const auto at = name.find(key); at != std::string::npos) {
    const fs::path sibling = fs::path(images_path).parent_path() /
                             (name.substr(0, at) + "labels-idx1" + name.substr(at + key.size()));
    if (is_file(sibling)) labels = sibling.string();
  }
  return read_idx(images_path, labels);
}

Dataset read_cifar10_dir(const std::string& dir, const std::string& split) {
  std::error_code ec;
  check(fs::is_directory(dir, ec), dir, ": not a directory");
  fs::path root(dir);
  // The official archive unpacks into cifar-10-batches-bin/; accept its parent too.
  if (!is_file(root / "test_batch.bin") &&
      is_file(root / "cifar-10-batches-bin" / "test_batch.bin"))
    root /= "cifar-10-batches-bin";
  std::vector<std::string> files;
  if (split == "train") {
    for (int i = 1; i <= 5; ++i)
      files.push_back((root / ("data_batch_" + std::to_string(i) + ".bin")).string());
  } else {
    files.push_back((root / "test_batch.bin").string());
  }
  for (const auto& f : files)
    check(is_file(f), f,
          ": missing CIFAR-10 batch file (expected the binary version: "
          "data_batch_1.bin .. data_batch_5.bin, test_batch.bin)");
  return read_cifar10_files(files);
}

}  // namespace

Dataset load_dataset(const std::string& spec, const std::string& split, int64_t image_size,
                     int64_t channels) {
  check(split == "train" || split == "test", "dataset split must be 'train' or 'test', got '",
        split, "'");
  check(image_size >= 0, "image size must be positive (or 0 for the dataset's own), got ",
        image_size);
  check(channels == 0 || channels == 1 || channels == 3, "channels must be 1 or 3, got ", channels);
  const auto colon = spec.find(':');
  const std::string scheme = spec.substr(0, colon);
  const std::string arg = colon == std::string::npos ? "" : spec.substr(colon + 1);
  const bool needs_arg = scheme != "fashion-mnist";
  if (scheme == "fashion-mnist" || scheme == "mnist" || scheme == "idx" || scheme == "cifar10" ||
      scheme == "folder") {
    check(needs_arg == (colon != std::string::npos), "dataset '", spec,
          "': ", needs_arg ? "missing the path after '" + scheme + ":'" : "takes no path", "; ",
          kSpecHelp);
    check(!needs_arg || !arg.empty(), "dataset '", spec, "': empty path; ", kSpecHelp);
  }

  Dataset ds;
  if (scheme == "fashion-mnist") {
    std::error_code ec;
    check(fs::is_directory(kFashionMnistDir, ec), kFashionMnistDir,
          ": not found; install Fashion-MNIST with `apt install dataset-fashion-mnist`");
    ds = read_mnist_dir(kFashionMnistDir, split);
  } else if (scheme == "mnist") {
    ds = read_mnist_dir(arg, split);
  } else if (scheme == "idx") {
    ds = read_idx_spec(arg);
  } else if (scheme == "cifar10") {
    ds = read_cifar10_dir(arg, split);
  } else if (scheme == "folder") {
    ds = read_image_folder(arg, image_size, channels == 0 ? 3 : channels);
  } else {
    fail("unknown dataset '", spec, "'; ", kSpecHelp);
  }
  if (image_size > 0) ds.images = center_crop_resize(ds.images, image_size);
  if (channels != 0) ds.images = convert_channels(ds.images, channels);
  ds.name = spec;
  return ds;
}

}  // namespace diffuse
