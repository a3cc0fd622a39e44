// The readers a user's file reaches beyond safetensors and .npy (test_io_fuzz): idx and idx.gz,
// CIFAR-10 batches, PNG, a model's config.json, scheduler_config.json, and the CLI's numeric
// options. Each gets a fixed budget of seeded cases; each case must load or throw
// diffuse::Error naming the file (anything else escaping, or a crash, fails), and what loads is
// never larger than the file could hold.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli_support.h"
#include "diffuse/core/error.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/data/dataset.h"
#include "diffuse/diffusion/process_config.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/image.h"
#include "diffuse/models/unet_config.h"

namespace fs = std::filesystem;
using namespace diffuse;

namespace {

constexpr int kCases = 300;  // per reader

class Fuzz : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::temp_directory_path() / ("diffuse_fuzz_" + std::to_string(::getpid()))).string();
    remove_tree(root_);
    fs::create_directories(root_);
    path_ = root_ + "/fuzz.bin";
  }
  void TearDown() override { remove_tree(root_); }

  // Writes the case to fuzz.bin and reads it: 1 loaded (at most max_values values per file byte),
  // 0 refused with diffuse::Error naming the file.
  template <typename Read>
  int outcome(const std::string& bytes, Read read) {
    {  // no fsync: a case is thrown away at once
      std::ofstream f(path_, std::ios::binary | std::ios::trunc);
      f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    try {
      const torch::Tensor t = read(path_);
      EXPECT_LE(t.numel(), static_cast<int64_t>(bytes.size()) * 4) << "from " << bytes.size();
      return 1;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path_), std::string::npos) << e.what();
      return 0;
    }
  }

  // Every truncation, then kCases random mutations (1-4 bytes replaced, or a cut and a splice).
  template <typename Read>
  std::pair<int, int> fuzz(const std::string& seed, Read read, uint64_t rng_seed,
                           size_t protect = 0) {
    EXPECT_EQ(outcome(seed, read), 1) << "the seed itself must load";
    int loaded = 0, refused = 0;
    for (size_t n = 0; n < seed.size(); n += std::max<size_t>(1, seed.size() / 64))
      (outcome(seed.substr(0, n), read) ? loaded : refused)++;
    std::mt19937_64 rng(rng_seed);
    for (int c = 0; c < kCases; ++c) {
      std::string b = seed;
      const size_t span = b.size() - protect;
      if (c % 5 == 4) {
        b.erase(protect + rng() % span, 1 + rng() % 8);
      } else {
        for (int k = 0, m = 1 + static_cast<int>(rng() % 4); k < m; ++k)
          b[protect + rng() % span] = static_cast<char>(rng() % 256);
      }
      (outcome(b, read) ? loaded : refused)++;
    }
    return {loaded, refused};
  }
  std::string root_, path_;
};

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string idx_images(uint32_t n, uint32_t h, uint32_t w) {
  std::string b = std::string{0, 0, 8, 3} + be32(n) + be32(h) + be32(w);
  for (uint32_t i = 0; i < n * h * w; ++i) b.push_back(static_cast<char>(i * 7));
  return b;
}

std::string gzipped(const std::string& bytes, const std::string& dir) {
  write_file_atomic(dir + "/plain", bytes);
  EXPECT_EQ(std::system(("gzip -n -c " + dir + "/plain > " + dir + "/plain.gz").c_str()), 0);
  return read_file(dir + "/plain.gz");
}

}  // namespace

TEST_F(Fuzz, IdxImagesAndLabels) {
  auto read = [](const std::string& p) { return read_idx_images(p); };
  const auto [loaded, refused] = fuzz(idx_images(3, 5, 4), read, 1);
  EXPECT_GT(refused, 0);
  // Dimensions that promise far more than the file holds are refused before any allocation.
  for (uint32_t huge : {0xffffffffu, 0x80000000u, 0x10000u})
    EXPECT_EQ(outcome(std::string{0, 0, 8, 3} + be32(huge) + be32(huge) + be32(huge) + "xyz", read),
              0);
  std::string labels = std::string{0, 0, 8, 1} + be32(6) + std::string{1, 2, 3, 4, 5, 6};
  fuzz(
      labels, [](const std::string& p) { return read_idx_labels(p); }, 2);
  std::cout << "idx images: " << loaded << " loaded, " << refused << " refused\n";
}

TEST_F(Fuzz, GzippedIdx) {
  // The 10-byte gzip header is mutated too; the deflate stream and its CRC catch the rest.
  auto read = [](const std::string& p) { return read_idx_images(p); };
  const auto [loaded, refused] = fuzz(gzipped(idx_images(4, 6, 6), root_), read, 3);
  EXPECT_GT(refused, kCases / 2);
  std::cout << "idx.gz: " << loaded << " loaded, " << refused << " refused\n";
}

TEST_F(Fuzz, Cifar10Batches) {
  std::string seed;
  for (int r = 0; r < 2; ++r) {
    seed.push_back(static_cast<char>(r + 3));
    for (int i = 0; i < 3072; ++i) seed.push_back(static_cast<char>(i + r));
  }
  auto read = [](const std::string& p) { return read_cifar10_files({p}).images; };
  const auto [loaded, refused] = fuzz(seed, read, 4);
  EXPECT_GT(refused, 0);  // cuts leave a partial record; a label byte above 9 is refused
  std::cout << "CIFAR-10: " << loaded << " loaded, " << refused << " refused\n";
}

TEST_F(Fuzz, PngImages) {
  auto img = (torch::arange(3 * 8 * 8) % 251).to(torch::kUInt8).view({3, 8, 8});
  auto read = [](const std::string& p) { return load_image(p, 3); };
  const auto [loaded, refused] = fuzz(encode_png(img), read, 5);
  EXPECT_GT(refused, kCases / 2);
  std::cout << "PNG: " << loaded << " loaded, " << refused << " refused\n";
}

namespace {

// A value of another kind or an extreme one, for a key of a JSON config.
nlohmann::json odd_value(std::mt19937_64& rng) {
  switch (rng() % 10) {
    case 0:
      return nullptr;
    case 1:
      return -1;
    case 2:
      return 0;
    case 3:
      return 1e300;
    case 4:
      return "not a number";
    case 5:
      return nlohmann::json::array({1, -2, "x"});
    case 6:
      return nlohmann::json::object();
    case 7:
      return static_cast<int64_t>(1) << 62;
    case 8:
      return true;
    default:
      return 3.5;
  }
}

// kCases configs with 1-3 keys replaced, removed or added: each parses or throws diffuse::Error
// naming the source; a json or c10 exception escaping fails the test.
template <typename Parse>
std::pair<int, int> fuzz_json(const nlohmann::json& seed, Parse parse, uint64_t rng_seed) {
  std::vector<std::string> keys;
  for (auto it = seed.begin(); it != seed.end(); ++it) keys.push_back(it.key());
  std::mt19937_64 rng(rng_seed);
  int loaded = 0, refused = 0;
  for (int c = 0; c < kCases; ++c) {
    auto j = seed;
    for (int k = 0, m = 1 + static_cast<int>(rng() % 3); k < m; ++k) {
      const auto& key = keys[rng() % keys.size()];
      if (rng() % 6 == 0)
        j.erase(key);
      else
        j[key] = odd_value(rng);
    }
    if (c % 50 == 49) j = odd_value(rng);  // not an object at all
    try {
      parse(j);
      ++loaded;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("fuzz.json"), std::string::npos) << e.what();
      ++refused;
    }
  }
  return {loaded, refused};
}

}  // namespace

TEST_F(Fuzz, ModelConfigJson) {
  const std::string data = DIFFUSE_TEST_DATA;
  const auto seed = nlohmann::json::parse(read_file(data + "/unet_tiny.json"))["config"];
  auto parse = [](const nlohmann::json& j) { UNetConfig::from_json(j, "fuzz.json"); };
  ASSERT_NO_THROW(parse(seed));
  const auto [loaded, refused] = fuzz_json(seed, parse, 6);
  EXPECT_GT(refused, kCases / 2);
  std::cout << "config.json: " << loaded << " loaded, " << refused << " refused\n";
}

TEST_F(Fuzz, SchedulerConfigJson) {
  const auto seed = ProcessConfig{}.to_scheduler_json();
  auto parse = [](const nlohmann::json& j) { ProcessConfig::from_scheduler_json(j, "fuzz.json"); };
  ASSERT_NO_THROW(parse(seed));
  const auto [loaded, refused] = fuzz_json(seed, parse, 7);
  EXPECT_GT(refused, 0);
  std::cout << "scheduler_config.json: " << loaded << " loaded, " << refused << " refused\n";
}

TEST_F(Fuzz, CliNumericOptions) {
  // Each is refused with the option named, before any training (exit 2, not a crash's 3 or 134).
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"batch", "1e999"}, {"steps", "99999999999999999999"},
      {"lr", "nan"},      {"batch", "-4"},
      {"lr", "abc"},      {"ema-decay", "inf"},
      {"steps", "0x10"},  {"seed", "1.5"}};
  for (const auto& [option, value] : cases) {
    // --steps 2 bounds the case should a value be accepted after all.
    auto r =
        run_cli("train --data synthetic --model tiny-test --device cpu --threads 1 --out " + root_ +
                    "/run" + (option == "steps" ? "" : " --steps 2") + " --" + option + " " + value,
                "fuzz");
    EXPECT_EQ(r.status, 2) << option << " " << value << "\n" << r.output;
    EXPECT_NE(r.output.find("--" + option), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(root_ + "/run/checkpoints")) << option << " " << value;
  }
}
