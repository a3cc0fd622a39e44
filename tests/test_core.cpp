#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "diffuse/core/compat.h"
#include "diffuse/core/device.h"
#include "diffuse/core/error.h"
#include "diffuse/core/progress.h"

using namespace diffuse;

TEST(Error, MessageIsBuiltFromParts) {
  try {
    fail("file.npy", ": shape ", 3, " is wrong");
    FAIL() << "fail() returned";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "file.npy: shape 3 is wrong");
  }
  EXPECT_NO_THROW(check(true, "never"));
  EXPECT_THROW(check(false, "always"), Error);
}

TEST(Progress, DurationFormat) {
  EXPECT_EQ(format_duration(0), "00:00");
  EXPECT_EQ(format_duration(61), "01:01");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "--:--");
}

namespace {
int count_lines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}
}  // namespace

// Under ctest stderr is not a terminal, so the bar writes whole log lines: the final state once.
TEST(Progress, LogModeWritesTheFinalLineOnce) {
  testing::internal::CaptureStderr();
  {
    ProgressBar bar(3, "work", "it");
    for (int i = 0; i < 3; ++i) bar.update(1);
    bar.finish();
  }
  const auto out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_lines(out), 1) << out;
  EXPECT_NE(out.find("work [########################] 3/3 100.0%"), std::string::npos) << out;
}

TEST(Progress, ResumedBarCountsFromTheResumePointAndHonoursTheTimeLimit) {
  testing::internal::CaptureStderr();
  {
    ProgressBar bar(1000000, "train", "step");
    bar.resume_from(999000);
    bar.set_time_limit(30);
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    bar.update(1);
    bar.finish();  // the destructor must not draw again
  }
  const auto out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_lines(out), 1) << out;
  EXPECT_NE(out.find("999001/1000000"), std::string::npos) << out;
  // One step in >= 60 ms: at most ~17 step/s. Counting the 999,000 resumed steps would print
  // millions.
  const auto rate_end = out.find(" step/s");
  ASSERT_NE(rate_end, std::string::npos) << out;
  const auto rate_begin = out.rfind(' ', rate_end - 1) + 1;
  EXPECT_LT(std::stod(out.substr(rate_begin, rate_end - rate_begin)), 20.0) << out;
  // The 999 steps left would take about a minute; the run stops at 30 s, which the ETA shows.
  const auto eta = out.substr(out.find("eta ") + 4, 5);
  EXPECT_TRUE(eta == "00:30" || eta == "00:29") << out;
}

TEST(Compat, AttentionMatchesSoftmaxFormula) {
  torch::manual_seed(0);
  auto q = torch::randn({2, 3, 5, 4}, torch::kFloat64);
  auto k = torch::randn({2, 3, 5, 4}, torch::kFloat64);
  auto v = torch::randn({2, 3, 5, 4}, torch::kFloat64);
  auto ref = torch::matmul(torch::softmax(torch::matmul(q, k.transpose(-1, -2)) / 2.0, -1), v);
  EXPECT_TRUE(torch::allclose(attention(q, k, v), ref, 1e-10, 1e-12));
}

TEST(Precision, ResolvesPerDeviceAndNamesTheOption) {
  using diffuse::Precision;
  const torch::Device cpu("cpu");
  EXPECT_EQ(diffuse::parse_precision("auto", cpu), Precision::FP32);
  EXPECT_EQ(diffuse::parse_precision("fp32", cpu), Precision::FP32);
  EXPECT_EQ(diffuse::parse_precision("tf32", cpu), Precision::FP32);  // no TF32 on a CPU
  EXPECT_EQ(std::string(diffuse::precision_name(Precision::BF16)), "bf16");
  for (const char* bad : {"bf16", "fp16", ""}) {
    try {
      diffuse::parse_precision(bad, cpu);
      FAIL() << "'" << bad << "' accepted on the CPU";
    } catch (const diffuse::Error& e) {
      EXPECT_NE(std::string(e.what()).find("--precision"), std::string::npos) << e.what();
    }
  }
  if (torch::cuda::is_available()) {
    const torch::Device cuda("cuda");
    EXPECT_EQ(diffuse::parse_precision("auto", cuda), Precision::BF16);
    EXPECT_EQ(diffuse::parse_precision("tf32", cuda), Precision::TF32);
    diffuse::configure_runtime(cuda, Precision::FP32);
    EXPECT_FALSE(at::globalContext().allowTF32CuBLAS());
    diffuse::configure_runtime(cuda, Precision::TF32);
    EXPECT_TRUE(at::globalContext().allowTF32CuBLAS());
    diffuse::configure_runtime(cuda, Precision::FP32);
  }
}
