// Helpers shared by the test programs.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "diffuse/core/error.h"

namespace diffuse::testing {

// A JSON file of tests/data, parsed.
inline nlohmann::json load_json(const std::string& name) {
  std::ifstream f(std::string(DIFFUSE_TEST_DATA) + "/" + name);
  EXPECT_TRUE(f.good()) << DIFFUSE_TEST_DATA << "/" << name << ": cannot open";
  return nlohmann::json::parse(f);
}

// The message of the diffuse::Error that f throws ("" when it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Runs fn, which must throw diffuse::Error whose message contains every part.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no diffuse::Error thrown (expected one mentioning '" << parts.front() << "')";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' missing from: " << msg;
  }
}

inline torch::Tensor random_bytes(std::vector<int64_t> shape, int64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, 256, shape, torch::kInt64).to(torch::kUInt8);
}

}  // namespace diffuse::testing
