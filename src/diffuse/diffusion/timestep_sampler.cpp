#include "diffuse/diffusion/timestep_sampler.h"

#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {

TimestepDraw UniformTimestepSampler::sample(int64_t batch, const torch::Device& device,
                                            at::Generator& gen) {
  auto t = at::randint(T_, {batch}, gen,
                       torch::TensorOptions().dtype(torch::kLong).device(gen.device()));
  return {t.to(device), torch::ones({batch}, torch::TensorOptions().device(device))};
}

LossAwareTimestepSampler::LossAwareTimestepSampler(int64_t T, int64_t history, double uniform_prob)
    : T_(T), history_(history), uniform_prob_(uniform_prob), losses_(T) {}

std::vector<double> LossAwareTimestepSampler::probabilities() const {
  std::vector<double> p(T_, 1.0 / T_);
  for (const auto& h : losses_)
    if (static_cast<int64_t>(h.size()) < history_) return p;
  double total = 0;
  for (int64_t t = 0; t < T_; ++t) {
    double sq = 0;
    for (double l : losses_[t]) sq += l * l;
    p[t] = std::sqrt(sq / history_);
    total += p[t];
  }
  for (auto& v : p) v = (1.0 - uniform_prob_) * v / total + uniform_prob_ / T_;
  return p;
}

TimestepDraw LossAwareTimestepSampler::sample(int64_t batch, const torch::Device& device,
                                              at::Generator& gen) {
  auto p = torch::tensor(probabilities(), torch::kFloat64);
  auto t = at::multinomial(p, batch, true, gen);
  auto w = (1.0 / (T_ * p.index_select(0, t))).to(torch::kFloat32);
  return {t.to(device), w.to(device)};
}

void LossAwareTimestepSampler::update(const torch::Tensor& t, const torch::Tensor& losses) {
  auto tc = t.to(torch::kCPU, torch::kLong).contiguous();
  auto lc = losses.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const auto* tp = tc.data_ptr<int64_t>();
  const auto* lp = lc.data_ptr<double>();
  for (int64_t i = 0; i < tc.numel(); ++i) {
    auto& h = losses_.at(tp[i]);
    h.push_back(lp[i]);
    if (static_cast<int64_t>(h.size()) > history_) h.pop_front();
  }
}

std::map<std::string, torch::Tensor> LossAwareTimestepSampler::state() const {
  auto h = torch::full({T_, history_}, std::nan(""), torch::kFloat64);
  auto* hp = h.data_ptr<double>();
  for (int64_t t = 0; t < T_; ++t)
    for (size_t i = 0; i < losses_[t].size(); ++i) hp[t * history_ + i] = losses_[t][i];
  return {{"losses", h}};
}

void LossAwareTimestepSampler::load_state(const std::map<std::string, torch::Tensor>& state,
                                          const std::string& source) {
  auto it = state.find("losses");
  check(it != state.end(), source, ": the loss-second-moment sampler's state lacks \"losses\"");
  check(it->second.sizes() == torch::IntArrayRef({T_, history_}), source, ": the loss history is ",
        it->second.sizes(), ", expected [", T_, ", ", history_, "]");
  auto h = it->second.to(torch::kFloat64).contiguous();
  const auto* hp = h.data_ptr<double>();
  for (int64_t t = 0; t < T_; ++t) {
    losses_[t].clear();
    for (int64_t i = 0; i < history_ && !std::isnan(hp[t * history_ + i]); ++i)
      losses_[t].push_back(hp[t * history_ + i]);
  }
}

std::unique_ptr<TimestepSampler> make_timestep_sampler(const std::string& name, int64_t T) {
  if (name == "uniform") return std::make_unique<UniformTimestepSampler>(T);
  if (name == "loss-second-moment") return std::make_unique<LossAwareTimestepSampler>(T);
  fail("--timestep-sampler: unknown '", name, "' (expected uniform or loss-second-moment)");
}

}  // namespace diffuse
