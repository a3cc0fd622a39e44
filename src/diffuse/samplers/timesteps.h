// Which of the T training timesteps a sampler with S steps evaluates the model at. Every function
// returns S distinct timesteps in [0, T-1], descending (the order they are visited).
// The step from timesteps[i] always lands on timesteps[i + 1], or on "none" (abar = 1, the data)
// after the last one; never on t - T/S, which is wrong whenever the spacing is not a fixed stride.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

// 0, k, 2k, ..., (S-1) k with k = floor(T / S) (DDIM paper; diffusers "leading").
std::vector<int64_t> leading_timesteps(int64_t T, int64_t S);
// round(linspace(0, T-1, S+1)) without its 0 (diffusers "linspace" as DPM-Solver uses it), so the
// first step starts at T-1. Duplicates once S >= T.
std::vector<int64_t> linspace_timesteps(int64_t T, int64_t S);
// round(T - i T / S) - 1 for i = 0..S-1 (diffusers "trailing"): starts at T-1.
std::vector<int64_t> trailing_timesteps(int64_t T, int64_t S);
// floor(linspace(0, sqrt(0.8 T), S)^2) (DDIM paper, "quadratic" skip). Duplicates near t = 0 once
// S is more than about sqrt(0.8 T).
std::vector<int64_t> quadratic_timesteps(int64_t T, int64_t S);
// round(linspace(0, T-1, S)) with ties to even, both ends kept; T-1 alone for S = 1. The evenly
// spaced steps of Improved DDPM's shortened sampling (Nichol & Dhariwal 2021 sec. 4;
// improved-diffusion's space_timesteps with one section).
std::vector<int64_t> even_timesteps(int64_t T, int64_t S);

// Karras et al. 2022 eq. 5: S noise levels from sigma_max down to sigma_min,
//   sigma_i = (sigma_max^(1/rho) + i / (S-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
// descending, without the final 0 (sigma_max alone for S = 1).
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t S, double rho = 7.0);
// The fractional timestep of a noise level sigma (variance-exploding, sigma_t = sqrt((1 - abar_t) /
// abar_t)): log sigma interpolated linearly between the two neighbouring timesteps, clamped to
// [0, T-1] (as diffusers' Euler scheduler maps sigmas to timesteps). alphas_cumprod: abar_t, t =
// 0..T-1, strictly decreasing.
double timestep_of_sigma(const std::vector<double>& alphas_cumprod, double sigma);
// The Karras levels between the schedule's own sigma_min (t = 0) and sigma_max (t = T-1), each
// mapped by timestep_of_sigma and rounded to the nearest timestep, so that a sampler evaluates the
// network at a timestep it was trained on and steps between that timestep's exact sigmas. Where
// rounding repeats a timestep (the levels crowd at either end once S is large, or at T-1 for a
// cosine schedule's huge sigma_max), the later one moves to the next free timestep below, and near
// t = 0 the earlier ones move up: S distinct timesteps for every S in [1, T].
std::vector<int64_t> karras_timesteps(const std::vector<double>& alphas_cumprod, int64_t S,
                                      double rho = 7.0);

// The spacing names make_timesteps accepts, for messages and --help: "leading | linspace | ...".
std::string spacing_names(const std::string& separator = " | ");

// By name: "leading", "linspace", "trailing", "quadratic" or "even". Throws diffuse::Error naming
// --spacing for an unknown name, --steps for S outside [1, T] or a spacing that repeats a timestep
// at this S (the message gives the largest S that does not). Repeats are rejected, not removed, so
// that --steps is always the number of noise levels visited.
std::vector<int64_t> make_timesteps(const std::string& spacing, int64_t T, int64_t S);
// The same, plus "karras", which needs the schedule: alphas_cumprod is abar_t for t = 0..T-1.
std::vector<int64_t> make_timesteps(const std::string& spacing,
                                    const std::vector<double>& alphas_cumprod, int64_t S);

// Throws diffuse::Error unless ts is non-empty, strictly descending and within [0, T-1].
void validate_timesteps(const std::vector<int64_t>& ts, int64_t T);

}  // namespace diffuse
