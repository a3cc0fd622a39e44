#include <gtest/gtest.h>

#include "diffuse/core/compat.h"
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

TEST(Compat, AttentionMatchesSoftmaxFormula) {
  torch::manual_seed(0);
  auto q = torch::randn({2, 3, 5, 4}, torch::kFloat64);
  auto k = torch::randn({2, 3, 5, 4}, torch::kFloat64);
  auto v = torch::randn({2, 3, 5, 4}, torch::kFloat64);
  auto ref = torch::matmul(torch::softmax(torch::matmul(q, k.transpose(-1, -2)) / 2.0, -1), v);
  EXPECT_TRUE(torch::allclose(attention(q, k, v), ref, 1e-10, 1e-12));
}
