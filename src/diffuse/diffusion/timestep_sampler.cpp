#include "diffuse/diffusion/timestep_sampler.h"

#include <algorithm>
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

LogitNormalTimestepSampler::LogitNormalTimestepSampler(int64_t T, double mean, double std)
    : T_(T), mean_(mean), std_(std) {
  check(std > 0, "--ts-std must be > 0, got ", std);
}

TimestepDraw LogitNormalTimestepSampler::sample(int64_t batch, const torch::Device& device,
                                                at::Generator& gen) {
  auto n = at::randn({batch}, gen, torch::TensorOptions().dtype(torch::kFloat64));
  auto u = torch::sigmoid(mean_ + std_ * n);
  auto t = (u * static_cast<double>(T_)).floor().clamp(0, T_ - 1).to(torch::kLong);
  return {t.to(device), torch::ones({batch}, torch::TensorOptions().device(device))};
}

EdmLogNormalTimestepSampler::EdmLogNormalTimestepSampler(const std::vector<double>& alphas_cumprod,
                                                         double p_mean, double p_std)
    : mean_(p_mean), std_(p_std) {
  check(alphas_cumprod.size() >= 2, "edm-log-normal: needs the schedule's alphas_cumprod");
  check(p_std > 0, "--ts-std must be > 0, got ", p_std);
  std::vector<double> log_sigma;
  for (double abar : alphas_cumprod) log_sigma.push_back(0.5 * std::log((1.0 - abar) / abar));
  for (size_t k = 1; k < log_sigma.size(); ++k) {
    check(log_sigma[k] > log_sigma[k - 1],
          "edm-log-normal: the schedule's noise levels must increase with t");
    edges_.push_back(0.5 * (log_sigma[k - 1] + log_sigma[k]));
  }
}

TimestepDraw EdmLogNormalTimestepSampler::sample(int64_t batch, const torch::Device& device,
                                                 at::Generator& gen) {
  auto n = at::randn({batch}, gen, torch::TensorOptions().dtype(torch::kFloat64)).contiguous();
  auto t = torch::empty({batch}, torch::kLong);
  const auto* np = n.data_ptr<double>();
  auto* tp = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < batch; ++i)
    tp[i] = std::upper_bound(edges_.begin(), edges_.end(), mean_ + std_ * np[i]) - edges_.begin();
  return {t.to(device), torch::ones({batch}, torch::TensorOptions().device(device))};
}

std::unique_ptr<TimestepSampler> make_timestep_sampler(const std::string& name, int64_t T,
                                                       const TimestepSamplerOptions& options) {
  if (name == "uniform") return std::make_unique<UniformTimestepSampler>(T);
  if (name == "loss-second-moment") return std::make_unique<LossAwareTimestepSampler>(T);
  if (name == "logit-normal")
    return std::make_unique<LogitNormalTimestepSampler>(T, options.mean, options.std);
  if (name == "edm-log-normal") {
    check(static_cast<int64_t>(options.alphas_cumprod.size()) == T,
          "edm-log-normal: needs the schedule's ", T, " alphas_cumprod");
    return std::make_unique<EdmLogNormalTimestepSampler>(options.alphas_cumprod, options.mean,
                                                         options.std);
  }
  fail("--timestep-sampler: unknown '", name,
       "' (expected uniform, loss-second-moment, logit-normal or edm-log-normal)");
}

}  // namespace diffuse
