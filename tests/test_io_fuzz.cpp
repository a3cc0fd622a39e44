// Mutated safetensors and .npy files must either load or throw diffuse::Error: never crash, never
// throw anything else (an escaping c10::Error or json exception fails the test).
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <regex>

#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/npy.h"
#include "diffuse/io/safetensors.h"

using namespace diffuse;

namespace {

// 1 when parse(bytes) succeeded, 0 when it threw diffuse::Error naming the file.
template <typename Parse>
int outcome(Parse parse, const std::string& bytes) {
  try {
    parse(bytes);
    return 1;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fuzz.bin"), std::string::npos) << e.what();
    return 0;
  }
}

const auto parse_st = [](const std::string& b) { return parse_safetensors(b, "fuzz.bin"); };
const auto parse_np = [](const std::string& b) { return parse_npy(b, "fuzz.bin"); };

// The fuzz seeds are built by the writers, so they are exactly what the project produces.
template <typename Save>
std::string written_bytes(const std::string& name, Save save) {
  const std::string path = ::testing::TempDir() + name;
  save(path);
  std::string bytes = read_file(path);
  std::remove(path.c_str());
  return bytes;
}

std::string seed_safetensors() {
  return written_bytes("fuzz_seed.safetensors", [](const std::string& path) {
    save_safetensors(path,
                     {{"w", torch::arange(6, torch::kFloat32).view({2, 3})},
                      {"b", torch::ones({3}, torch::kBFloat16)},
                      {"n", torch::tensor({7}, torch::kInt64)},
                      {"e", torch::zeros({0}, torch::kUInt8)}},
                     {{"step", "10"}});
  });
}

std::string seed_npy() {
  return written_bytes("fuzz_seed.npy", [](const std::string& path) {
    save_npy(path, torch::arange(6, torch::kFloat64).view({3, 2}));
  });
}

uint64_t header_length(const std::string& st) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t{static_cast<unsigned char>(st[i])} << (8 * i);
  return n;
}

}  // namespace

TEST(SafetensorsFuzz, EveryTruncationIsAnError) {
  const std::string seed = seed_safetensors();
  ASSERT_EQ(outcome(parse_st, seed), 1);
  for (size_t len = 0; len < seed.size(); ++len)
    EXPECT_EQ(outcome(parse_st, seed.substr(0, len)), 0) << "truncated to " << len;
}

TEST(SafetensorsFuzz, RandomMutationsLoadOrThrowError) {
  const std::string seed = seed_safetensors();
  const size_t header_end = 8 + header_length(seed);
  std::mt19937_64 rng(1234);
  auto pick = [&](size_t lo, size_t hi) {  // uniform in [lo, hi)
    return lo + static_cast<size_t>(rng() % (hi - lo));
  };
  const char interesting[] = {'{', '}', '[', ']', '"',  ',',  ':',
                              '-', '0', '9', 'e', '\\', '\0', '\xff'};
  int loaded = 0, rejected = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string b = seed;
    const int kind = iter % 5;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      if (kind == 0) {  // flip bits in the header
        b[pick(8, header_end)] ^= static_cast<char>(1 << (rng() % 8));
      } else if (kind == 1) {  // JSON punctuation in the header
        b[pick(8, header_end)] = interesting[rng() % sizeof interesting];
      } else if (kind == 2) {  // any byte anywhere, including the length and the data
        b[pick(0, b.size())] = static_cast<char>(rng());
      } else if (kind == 3) {  // insert or delete a byte
        const size_t at = pick(0, b.size());
        if (rng() % 2)
          b.insert(b.begin() + at, static_cast<char>(rng()));
        else
          b.erase(at, 1);
      } else {  // a huge or random header length
        const uint64_t n = rng() % 2 ? rng() : header_length(seed) + (rng() % 64) - 32;
        for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((n >> (8 * i)) & 255);
      }
    }
    (outcome(parse_st, b) ? loaded : rejected)++;
  }
  // Both outcomes occur: the loop exercises the accepting paths as well as the error paths.
  EXPECT_GT(loaded, 0);
  EXPECT_GT(rejected, 1000);
}

TEST(SafetensorsFuzz, HugeNumbersInTheHeaderAreErrors) {
  const std::string seed = seed_safetensors();
  const std::string header = seed.substr(8, header_length(seed));
  const std::string data = seed.substr(8 + header.size());
  const std::vector<std::string> numbers{"18446744073709551615",
                                         "18446744073709551616",
                                         "9223372036854775807",
                                         "9223372036854775808",
                                         "-9223372036854775808",
                                         "-1",
                                         "1e300",
                                         "4294967296",
                                         "0.5",
                                         "null",
                                         "\"3\""};
  const std::regex number("[0-9]+");
  // The metadata value "10" is the one number whose replacement may still load.
  const size_t metadata_value = header.find("\"10\"") + 1;
  int cases = 0;
  for (const auto& huge : numbers) {
    // Replace each digit run in turn: shape dimensions, data offsets, dtype names.
    auto begin = std::sregex_iterator(header.begin(), header.end(), number);
    for (auto it = begin; it != std::sregex_iterator(); ++it) {
      const auto at = static_cast<size_t>(it->position());
      const std::string h = header.substr(0, at) + huge + header.substr(at + it->length());
      std::string file(8, '\0');
      for (int i = 0; i < 8; ++i)
        file[i] = static_cast<char>((uint64_t{h.size()} >> (8 * i)) & 255);
      file += h + data;
      const int ok = outcome(parse_st, file);
      if (at != metadata_value) {
        EXPECT_EQ(ok, 0) << h;
      }
      ++cases;
    }
  }
  EXPECT_GT(cases, 50);
}

TEST(NpyFuzz, TruncationsAndMutationsLoadOrThrowError) {
  const std::string seed = seed_npy();
  ASSERT_EQ(outcome(parse_np, seed), 1);
  for (size_t len = 0; len < seed.size(); ++len)
    EXPECT_EQ(outcome(parse_np, seed.substr(0, len)), 0) << "truncated to " << len;
  std::mt19937_64 rng(99);
  const size_t header_end = 10 + (static_cast<unsigned char>(seed[8]) | seed[9] << 8);
  int loaded = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = seed;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % 2 ? rng() % header_end : rng() % b.size();
      if (iter % 3 == 0)
        b[at] ^= static_cast<char>(1 << (rng() % 8));
      else if (iter % 3 == 1)
        b[at] = "0123456789(),' :{}TFL<>|"[rng() % 24];
      else
        b.erase(at, 1);
    }
    loaded += outcome(parse_np, b);
  }
  EXPECT_GT(loaded, 0);
}
