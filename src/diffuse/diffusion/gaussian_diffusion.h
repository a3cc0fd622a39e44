// The DDPM process in one place (Ho et al. 2020; Nichol & Dhariwal 2021): the forward process
// q(x_t | x_0), its posterior q(x_{t-1} | x_t, x_0), the reverse step p(x_{t-1} | x_t) from a
// network's output, and the training losses. It takes model outputs, never the model.
// t is a (B) int64 tensor of 0-based timesteps, one per batch element.
#pragma once
#include <torch/torch.h>

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "diffuse/diffusion/losses.h"
#include "diffuse/diffusion/prediction.h"
#include "diffuse/diffusion/schedule.h"

namespace diffuse {

// The variance of p(x_{t-1} | x_t): beta~_t ("fixed-small"), beta_t ("fixed-large"), or learned as
// exp(v log beta_t + (1 - v) log beta~_t) with v = (out + 1) / 2 from the network (Nichol &
// Dhariwal eq. 15; "learned-range", the network then outputs 2C channels).
enum class VarianceType { FixedSmall, FixedLarge, LearnedRange };
VarianceType parse_variance_type(const std::string& name);
std::string to_string(VarianceType v);

// L_simple (MSE on the prediction target), the hybrid L_simple + 0.001 L_vlb with the gradient
// of L_vlb stopped at the mean (Nichol & Dhariwal sec. 3.1), or the bound's term L_t itself (KL
// for t > 0, the discretised decoder NLL at t = 0; improved-diffusion's loss type "kl"), in bits
// per dimension, so that T E_t[loss] is the variational bound minus L_T.
enum class LossType { Simple, Hybrid, Vlb };
LossType parse_loss_type(const std::string& name);
std::string to_string(LossType l);

struct MeanVariance {
  torch::Tensor mean, variance, log_variance;
};

struct PMeanVariance {
  torch::Tensor mean, variance, log_variance, pred_x0, pred_eps;
};

struct TrainingLosses {
  torch::Tensor loss;  // (B), the quantity to minimise
  torch::Tensor mse;   // (B)
  torch::Tensor vb;    // (B) L_t in bits/dim, defined for the hybrid and vlb losses only
};

class GaussianDiffusion {
 public:
  explicit GaussianDiffusion(Schedule schedule, PredictionType prediction = PredictionType::Epsilon,
                             VarianceType variance = VarianceType::FixedSmall);

  const Schedule& schedule() const { return schedule_; }
  int64_t num_timesteps() const { return schedule_.num_timesteps(); }
  PredictionType prediction() const { return prediction_; }
  VarianceType variance() const { return variance_; }
  // Channels the network must output for data with `data_channels` channels.
  int64_t model_output_channels(int64_t data_channels) const;

  // table[t] gathered for t: (B) -> (B, 1, ..., 1) matching x's rank, dtype and device, gathered
  // in float64 and then cast. The process's own tables (those of schedule() and
  // loss_weight_table()) are copied to each device once, on first use there; any other table is
  // copied on every call.
  torch::Tensor extract(const std::vector<double>& table, const torch::Tensor& t,
                        const torch::Tensor& x) const;

  // q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)   (Ho et al. eq. 4)
  MeanVariance q_mean_variance(const torch::Tensor& x0, const torch::Tensor& t) const;
  torch::Tensor q_sample(const torch::Tensor& x0, const torch::Tensor& t,
                         const torch::Tensor& noise) const;
  // q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)   (Ho et al. eq. 6-7)
  MeanVariance q_posterior_mean_variance(const torch::Tensor& x0, const torch::Tensor& x_t,
                                         const torch::Tensor& t) const;

  // p(x_{t-1} | x_t) from the network output at (x_t, t): mean through the predicted x_0 and the
  // posterior, variance by variance type. model_output: (B, C or 2C, H, W).
  PMeanVariance p_mean_variance(const torch::Tensor& model_output, const torch::Tensor& x_t,
                                const torch::Tensor& t, bool clip_x0 = false) const;

  // L_t in bits/dim per batch element: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the
  // discretised decoder NLL -log p(x_0|x_1) at t = 0.
  torch::Tensor vb_terms_bpd(const torch::Tensor& model_output, const torch::Tensor& x0,
                             const torch::Tensor& x_t, const torch::Tensor& t, bool clip_x0 = false,
                             torch::Tensor* pred_x0 = nullptr) const;
  // L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim per batch element.
  torch::Tensor prior_bpd(const torch::Tensor& x0) const;

  // Losses for the network output at x_t = q_sample(x0, t, noise). The MSE of the simple and
  // hybrid losses is weighted per timestep by `weighting` (losses.h); the vlb loss takes
  // `simple` only.
  TrainingLosses training_losses(const torch::Tensor& model_output, const torch::Tensor& x0,
                                 const torch::Tensor& x_t, const torch::Tensor& t,
                                 const torch::Tensor& noise, LossType loss,
                                 LossWeighting weighting = LossWeighting::Simple) const;
  // w_t of `weighting` for this process's prediction and variance types (losses.h).
  const std::vector<double>& loss_weight_table(LossWeighting weighting) const;

 private:
  Schedule schedule_;
  PredictionType prediction_;
  VarianceType variance_;
  std::vector<double> log_betas_;
  // Fixed-large variance: beta_t, with beta~_1 at t = 0 so that L_0 uses a sensible decoder
  // variance.
  std::vector<double> large_variance_, large_log_variance_;
  // loss_weights() of each LossWeighting, indexed by its value; vlb's is empty for learned-range.
  std::array<std::vector<double>, 4> loss_weight_tables_;
  // The tables that live on devices, in a fixed order; a table is one of them only if it is that
  // very vector (compared by address with this object's members, never by offset).
  using TableSources = std::array<const std::vector<double>*, 21>;
  TableSources device_table_sources() const;
  // `table` as a float64 tensor on `device`: one of device_table_sources() from the set made for
  // that device on its first use there, any other table copied now.
  torch::Tensor on_device(const std::vector<double>& table, const torch::Device& device) const;
  struct DeviceTables {
    std::mutex mutex;
    std::map<std::pair<int, int>, std::vector<torch::Tensor>> by_device;  // (type, index)
  };
  // Shared by copies of this object, whose tables hold the same values.
  std::shared_ptr<DeviceTables> device_tables_ = std::make_shared<DeviceTables>();
};

}  // namespace diffuse
