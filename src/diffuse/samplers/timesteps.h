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

// By name: "leading", "linspace", "trailing" or "quadratic". Throws diffuse::Error naming --spacing
// for an unknown name, --steps for S outside [1, T] or a spacing that repeats a timestep at this S
// (the message gives the largest S that does not). Repeats are rejected, not removed, so that
// --steps is always the number of model evaluations.
std::vector<int64_t> make_timesteps(const std::string& spacing, int64_t T, int64_t S);

// Throws diffuse::Error unless ts is non-empty, strictly descending and within [0, T-1].
void validate_timesteps(const std::vector<int64_t>& ts, int64_t T);

}  // namespace diffuse
