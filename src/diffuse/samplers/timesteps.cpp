#include "diffuse/samplers/timesteps.h"

#include <algorithm>
#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/samplers/score.h"

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

std::vector<int64_t> even_timesteps(int64_t T, int64_t S) {
  check_counts(T, S);
  if (S == 1) return {T - 1};
  // Point i of linspace(0, T-1, S) is i (T-1) / (S-1); a stride >= 1 never rounds two to one.
  std::vector<int64_t> ts(S);
  for (int64_t i = 0; i < S; ++i) ts[S - 1 - i] = round_ratio(i * (T - 1), S - 1);
  return ts;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t S, double rho) {
  check(S >= 1, "karras sigmas: need at least one level, got ", S);
  check(sigma_min > 0 && sigma_min <= sigma_max && rho > 0, "karras sigmas: need 0 < sigma_min (",
        sigma_min, ") <= sigma_max (", sigma_max, ") and rho > 0 (", rho, ")");
  const double lo = std::pow(sigma_min, 1.0 / rho), hi = std::pow(sigma_max, 1.0 / rho);
  std::vector<double> sigmas(S);
  for (int64_t i = 0; i < S; ++i) {
    const double u = S == 1 ? 0.0 : static_cast<double>(i) / static_cast<double>(S - 1);
    sigmas[i] = std::pow(hi + u * (lo - hi), rho);
  }
  return sigmas;
}

double timestep_of_sigma(const std::vector<double>& alphas_cumprod, double sigma) {
  check(!alphas_cumprod.empty(), "timestep of sigma: empty schedule");
  check(sigma > 0 && std::isfinite(sigma), "timestep of sigma: sigma must be positive, got ",
        sigma);
  const auto log_sigma = [&](size_t t) {
    const double ab = alphas_cumprod[t];
    return 0.5 * std::log((1.0 - ab) / ab);
  };
  const double l = std::log(sigma);
  const size_t T = alphas_cumprod.size();
  if (T == 1 || l <= log_sigma(0)) return 0.0;
  if (l >= log_sigma(T - 1)) return static_cast<double>(T - 1);
  // log sigma_t increases with t: bisect for log_sigma(lo) <= l < log_sigma(lo + 1).
  size_t lo = 0, hi = T - 1;
  while (hi - lo > 1) {
    const size_t mid = (lo + hi) / 2;
    (log_sigma(mid) <= l ? lo : hi) = mid;
  }
  const double a = log_sigma(lo), b = log_sigma(hi);
  return static_cast<double>(lo) + (l - a) / (b - a);
}

std::vector<int64_t> karras_timesteps(const std::vector<double>& alphas_cumprod, int64_t S,
                                      double rho) {
  const auto T = static_cast<int64_t>(alphas_cumprod.size());
  check_counts(T, S);
  const auto sigmas = karras_sigmas(sigma_of_alpha_bar(alphas_cumprod[0]),
                                    sigma_of_alpha_bar(alphas_cumprod[T - 1]), S, rho);
  std::vector<int64_t> ts(S);
  for (int64_t i = 0; i < S; ++i)
    ts[i] = std::llround(timestep_of_sigma(alphas_cumprod, sigmas[i]));
  // Repeats move down from the top, then up from t = 0 where the first pass ran below it.
  for (int64_t i = 1; i < S; ++i) ts[i] = std::min(ts[i], ts[i - 1] - 1);
  ts[S - 1] = std::max<int64_t>(ts[S - 1], 0);
  for (int64_t i = S - 2; i >= 0; --i) ts[i] = std::max(ts[i], ts[i + 1] + 1);
  validate_timesteps(ts, T);
  return ts;
}

namespace {

using SpacingFn = std::vector<int64_t> (*)(int64_t, int64_t);
// The spacings that need only T and S, in the order --help lists them; "karras" follows them.
const std::vector<std::pair<std::string, SpacingFn>> kSpacings = {
    {"leading", leading_timesteps},
    {"linspace", linspace_timesteps},
    {"trailing", trailing_timesteps},
    {"quadratic", quadratic_timesteps},
    {"even", even_timesteps}};
const char* kKarras = "karras";

}  // namespace

std::string spacing_names(const std::string& separator) {
  std::string out;
  for (const auto& [name, fn] : kSpacings) out += name + separator;
  return out + kKarras;
}

std::vector<int64_t> make_timesteps(const std::string& spacing,
                                    const std::vector<double>& alphas_cumprod, int64_t S) {
  if (spacing != kKarras)
    return make_timesteps(spacing, static_cast<int64_t>(alphas_cumprod.size()), S);
  return karras_timesteps(alphas_cumprod, S);
}

std::vector<int64_t> make_timesteps(const std::string& spacing, int64_t T, int64_t S) {
  check(spacing != kKarras, "--spacing karras needs the noise schedule");
  SpacingFn make = nullptr;
  for (const auto& [name, fn] : kSpacings)
    if (name == spacing) make = fn;
  check(make != nullptr, "--spacing: unknown '", spacing, "' (expected ", spacing_names(", "), ")");
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
