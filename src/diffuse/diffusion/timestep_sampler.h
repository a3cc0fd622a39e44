// How training draws t: uniformly (Ho et al. Algorithm 1); by importance with p(t) proportional
// to sqrt(E[L_t^2]) over a history of recent losses (Nichol & Dhariwal sec. 3.3, for L_vlb); or
// from a fixed density concentrated on the middle noise levels, where the loss is learnable:
// logit-normal in t/T (Esser et al. 2024, sec. 3.1) or EDM's log-normal noise levels (Karras et
// al. 2022, Table 1, p_train) mapped to the nearest t. The fixed densities return weights 1, as
// SD3 and diffusers do: they change the objective's weighting over t (w_t p(t) instead of w_t / T)
// on purpose, where the importance sampler keeps the uniform objective unbiased.
#pragma once
#include <torch/torch.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace diffuse {

struct TimestepDraw {
  torch::Tensor t;        // (B) int64
  torch::Tensor weights;  // (B) float32, 1/(T p(t)) so the weighted loss stays unbiased
};

class TimestepSampler {
 public:
  virtual ~TimestepSampler() = default;
  // Draws on gen's device (CPU generator -> moved to `device`).
  virtual TimestepDraw sample(int64_t batch, const torch::Device& device, at::Generator& gen) = 0;
  // Feeds back per-sample losses; reads them on the host, so call it only where a sync is fine.
  virtual void update(const torch::Tensor& t, const torch::Tensor& losses) {}
  // What a checkpoint keeps so that a resumed run draws as the uninterrupted one would; empty when
  // the sampler has no state. load_state throws diffuse::Error naming source on a mismatch.
  virtual std::map<std::string, torch::Tensor> state() const { return {}; }
  virtual void load_state(const std::map<std::string, torch::Tensor>& state,
                          const std::string& source) {}
};

class UniformTimestepSampler : public TimestepSampler {
 public:
  explicit UniformTimestepSampler(int64_t T) : T_(T) {}
  TimestepDraw sample(int64_t batch, const torch::Device& device, at::Generator& gen) override;

 private:
  int64_t T_;
};

class LossAwareTimestepSampler : public TimestepSampler {
 public:
  explicit LossAwareTimestepSampler(int64_t T, int64_t history = 10, double uniform_prob = 0.001);
  TimestepDraw sample(int64_t batch, const torch::Device& device, at::Generator& gen) override;
  void update(const torch::Tensor& t, const torch::Tensor& losses) override;
  // "losses": (T, history) float64, each row oldest first, NaN where the history is not full yet.
  std::map<std::string, torch::Tensor> state() const override;
  void load_state(const std::map<std::string, torch::Tensor>& state,
                  const std::string& source) override;
  std::vector<double> probabilities() const;  // uniform until every t has a full history

 private:
  int64_t T_, history_;
  double uniform_prob_;
  std::vector<std::deque<double>> losses_;
};

// clang-format off
// u = sigmoid(m + s n), n ~ N(0, 1), t = min(floor(T u), T - 1); so
//   P(t = k) = Phi((logit((k + 1) / T) - m) / s) - Phi((logit(k / T) - m) / s),  logit(0) = -inf, logit(1) = +inf.
// clang-format on
class LogitNormalTimestepSampler : public TimestepSampler {
 public:
  LogitNormalTimestepSampler(int64_t T, double mean, double std);
  TimestepDraw sample(int64_t batch, const torch::Device& device, at::Generator& gen) override;

 private:
  int64_t T_;
  double mean_, std_;
};

// ln sigma = P_mean + P_std n, n ~ N(0, 1), then the t whose sigma_t = sqrt((1 - abar_t) / abar_t)
// is nearest in ln sigma (the cells' edges at the midpoints of ln sigma_t, the outer ones open).
class EdmLogNormalTimestepSampler : public TimestepSampler {
 public:
  EdmLogNormalTimestepSampler(const std::vector<double>& alphas_cumprod, double p_mean,
                              double p_std);
  TimestepDraw sample(int64_t batch, const torch::Device& device, at::Generator& gen) override;

 private:
  std::vector<double> edges_;  // T - 1 midpoints of ln sigma_t, increasing
  double mean_, std_;
};

// The fixed densities' parameters: logit-normal's m and s of logit(t/T), EDM's P_mean and P_std
// of ln sigma; alphas_cumprod is needed by edm-log-normal only.
struct TimestepSamplerOptions {
  double mean = 0.0, std = 1.0;
  std::vector<double> alphas_cumprod;
};

// "uniform", "loss-second-moment", "logit-normal" or "edm-log-normal".
std::unique_ptr<TimestepSampler> make_timestep_sampler(const std::string& name, int64_t T,
                                                       const TimestepSamplerOptions& options = {});

}  // namespace diffuse
