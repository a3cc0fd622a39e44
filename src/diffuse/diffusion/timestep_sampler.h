// How training draws t: uniformly (Ho et al. Algorithm 1), or by importance with p(t) proportional
// to sqrt(E[L_t^2]) over a history of recent losses (Nichol & Dhariwal sec. 3.3, for L_vlb).
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

// "uniform" or "loss-second-moment".
std::unique_ptr<TimestepSampler> make_timestep_sampler(const std::string& name, int64_t T);

}  // namespace diffuse
