#include "diffuse/samplers/timesteps.h"

#include <algorithm>
#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {
namespace {

// round(n / d) with ties to even (numpy's round), exact for integers.
int64_t round_ratio(int64_t n, int64_t d) {
  const int64_t q = n / d, r = n % d;
  if (2 * r > d || (2 * r == d && q % 2 != 0)) return q + 1;
  return q;
}

void check_counts(int64_t T, int64_t S) {
  check(T >= 1, "timesteps: T must be >= 1, got ", T);
  check(S >= 1 && S <= T, "--steps must be in [1, ", T, "] (the training timesteps), got ", S);
}

bool has_repeats(const std::vector<int64_t>& ts) {
  return std::adjacent_find(ts.begin(), ts.end()) != ts.end();
}

}  // namespace

std::vector<int64_t> leading_timesteps(int64_t T, int64_t S) {
  check_counts(T, S);
  const int64_t k = T / S;
  std::vector<int64_t> ts(S);
  for (int64_t i = 0; i < S; ++i) ts[i] = (S - 1 - i) * k;
  return ts;
}

std::vector<int64_t> linspace_timesteps(int64_t T, int64_t S) {
  check_counts(T, S);
  // Point j of linspace(0, T-1, S+1) is j (T-1) / S; we keep j = S..1.
  std::vector<int64_t> ts(S);
  for (int64_t i = 0; i < S; ++i) ts[i] = round_ratio((S - i) * (T - 1), S);
  return ts;
}

std::vector<int64_t> trailing_timesteps(int64_t T, int64_t S) {
  check_counts(T, S);
  std::vector<int64_t> ts(S);
  for (int64_t i = 0; i < S; ++i) ts[i] = round_ratio((S - i) * T, S) - 1;
  return ts;
}

std::vector<int64_t> quadratic_timesteps(int64_t T, int64_t S) {
  check_counts(T, S);
  const double top = std::sqrt(0.8 * static_cast<double>(T));
  std::vector<int64_t> ts(S);
  for (int64_t i = 0; i < S; ++i) {
    const double u = S == 1 ? 0.0 : top * static_cast<double>(i) / static_cast<double>(S - 1);
    ts[S - 1 - i] = std::min<int64_t>(static_cast<int64_t>(u * u), T - 1);
  }
  return ts;
}

std::vector<int64_t> make_timesteps(const std::string& spacing, int64_t T, int64_t S) {
  std::vector<int64_t> (*make)(int64_t, int64_t) = nullptr;
  if (spacing == "leading") make = leading_timesteps;
  if (spacing == "linspace") make = linspace_timesteps;
  if (spacing == "trailing") make = trailing_timesteps;
  if (spacing == "quadratic") make = quadratic_timesteps;
  check(make != nullptr, "--spacing: unknown '", spacing,
        "' (expected leading, linspace, trailing or quadratic)");
  auto ts = make(T, S);
  if (has_repeats(ts)) {
    int64_t most = S - 1;
    while (most > 1 && has_repeats(make(T, most))) --most;
    fail("--steps ", S, " with --spacing ", spacing, " repeats timestep(s) of the T = ", T,
         " schedule; use at most ", most, " steps or another spacing");
  }
  validate_timesteps(ts, T);
  return ts;
}

void validate_timesteps(const std::vector<int64_t>& ts, int64_t T) {
  check(!ts.empty(), "timesteps: the list is empty");
  for (size_t i = 0; i < ts.size(); ++i) {
    check(ts[i] >= 0 && ts[i] < T, "timesteps: ", ts[i], " at position ", i, " is outside [0, ",
          T - 1, "]");
    if (i > 0)
      check(ts[i] < ts[i - 1], "timesteps: must be strictly descending, got ", ts[i - 1], " then ",
            ts[i]);
  }
}

}  // namespace diffuse
