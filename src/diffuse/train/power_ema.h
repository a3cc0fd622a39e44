// EDM2's power-function EMA and its post-hoc reconstruction (Karras et al. 2024, "Analyzing and
// Improving the Training Dynamics of Diffusion Models", sec. 3 and appendix C).
// clang-format off
//   update t = 1, 2, ...:  theta^_t = beta_t theta^_{t-1} + (1 - beta_t) theta_t,  beta_t = (1 - 1/t)^(gamma + 1)
//   so theta^_t averages the iterates with weights w_tau = (tau^(gamma+1) - (tau-1)^(gamma+1)) / t^(gamma+1),
//   the integral over (tau - 1, tau] of the profile p(u; t, gamma) = (gamma + 1) u^gamma / t^(gamma+1) on [0, t].
//   Its relative standard deviation: sigma_rel = sqrt(gamma + 1) / ((gamma + 2) sqrt(gamma + 3))  (eq. 3).
// Post hoc: given snapshots theta^ of profiles p_i = p(.; t_i, gamma_i), the profile p(.; t, gamma)
// is approximated by sum_i x_i p_i with x the least-squares solution of A x = b,
//   A_ij = <p_i, p_j>,  b_i = <p_i, p>,  <p_a, p_b> = (g_a + 1)(g_b + 1) m^(g_a+g_b+1) / ((g_a + g_b + 1) t_a^(g_a+1) t_b^(g_b+1)),
//   m = min(t_a, t_b), and the weights sum_i x_i theta^_i.
// clang-format on
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace diffuse {

double power_ema_beta(int64_t t, double gamma);
double gamma_to_sigma_rel(double gamma);
// The gamma (> -1) whose sigma_rel this is: the largest root of
// gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + (12 - sigma_rel^-2). sigma_rel in (0, 0.28].
double sigma_rel_to_gamma(double sigma_rel);

struct PowerEmaProfile {
  double t;      // updates averaged (any unit, the same for all)
  double gamma;  // > -1
};

double power_ema_inner_product(const PowerEmaProfile& a, const PowerEmaProfile& b);

// x of the least-squares fit of `target` by the snapshots' profiles.
std::vector<double> power_ema_coefficients(const std::vector<PowerEmaProfile>& snapshots,
                                           const PowerEmaProfile& target);

// "0.05,0.10" -> {0.05, 0.10}; each in (0, 0.28]. Errors name --ema-power.
std::vector<double> parse_sigma_rels(const std::string& list);

// The snapshots a run writes with --ema-power: RUN/ema_snapshots/step_XXXXXXXX-I.safetensors, the
// state dict of profile I after the step, with its t and gamma in the file's metadata.
std::string power_ema_snapshot_path(const std::string& run_dir, int64_t step, size_t index);
void save_power_ema_snapshot(const std::string& path, const std::map<std::string, torch::Tensor>& w,
                             const PowerEmaProfile& profile);

struct PosthocEma {
  std::map<std::string, torch::Tensor> weights;
  PowerEmaProfile target;
  std::vector<PowerEmaProfile> snapshots;  // those used
  std::vector<double> x;                   // their coefficients
};
// The weights of the power-function EMA of sigma_rel after t updates, reconstructed from the run's
// snapshots taken at t or before (t <= 0: at the newest snapshot).
PosthocEma posthoc_ema(const std::string& run_dir, double sigma_rel, int64_t t = 0);

}  // namespace diffuse
