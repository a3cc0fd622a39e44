#include "diffuse/diffusion/gaussian_diffusion.h"

#include <algorithm>
#include <cmath>

#include "diffuse/core/error.h"
#include "diffuse/diffusion/losses.h"

namespace diffuse {

VarianceType parse_variance_type(const std::string& name) {
  if (name == "fixed-small" || name == "fixed_small") return VarianceType::FixedSmall;
  if (name == "fixed-large" || name == "fixed_large") return VarianceType::FixedLarge;
  if (name == "learned-range" || name == "learned_range") return VarianceType::LearnedRange;
  fail("variance type: unknown '", name, "' (expected fixed-small, fixed-large or learned-range)");
}

std::string to_string(VarianceType v) {
  switch (v) {
    case VarianceType::FixedSmall:
      return "fixed-small";
    case VarianceType::FixedLarge:
      return "fixed-large";
    case VarianceType::LearnedRange:
      return "learned-range";
  }
  return "?";
}

LossType parse_loss_type(const std::string& name) {
  if (name == "simple" || name == "mse") return LossType::Simple;
  if (name == "hybrid") return LossType::Hybrid;
  if (name == "vlb" || name == "kl") return LossType::Vlb;
  fail("--loss: unknown '", name, "' (expected simple, hybrid or vlb)");
}

std::string to_string(LossType l) {
  switch (l) {
    case LossType::Simple:
      return "simple";
    case LossType::Hybrid:
      return "hybrid";
    case LossType::Vlb:
      return "vlb";
  }
  return "?";
}

GaussianDiffusion::GaussianDiffusion(Schedule schedule, PredictionType prediction,
                                     VarianceType variance)
    : schedule_(std::move(schedule)), prediction_(prediction), variance_(variance) {
  const int64_t T = schedule_.num_timesteps();
  log_betas_.resize(T);
  large_variance_.resize(T);
  large_log_variance_.resize(T);
  for (int64_t t = 0; t < T; ++t) {
    log_betas_[t] = std::log(schedule_.betas[t]);
    large_variance_[t] = (t == 0 && T > 1) ? schedule_.posterior_variance[1] : schedule_.betas[t];
    large_log_variance_[t] = std::log(large_variance_[t]);
  }
  // sigma_t^2 of p(x_{t-1} | x_t) as p_mean_variance uses it, for the vlb weighting.
  std::vector<double> fixed_variance;
  if (variance_ == VarianceType::FixedLarge) fixed_variance = large_variance_;
  if (variance_ == VarianceType::FixedSmall)
    for (double lv : schedule_.posterior_log_variance_clipped)
      fixed_variance.push_back(std::exp(lv));
  for (auto w : {LossWeighting::Simple, LossWeighting::Snr, LossWeighting::MinSnr5})
    loss_weight_tables_[static_cast<size_t>(w)] = loss_weights(w, schedule_, prediction_);
  if (!fixed_variance.empty())
    loss_weight_tables_[static_cast<size_t>(LossWeighting::Vlb)] =
        loss_weights(LossWeighting::Vlb, schedule_, prediction_, fixed_variance);
}

const std::vector<double>& GaussianDiffusion::loss_weight_table(LossWeighting weighting) const {
  const auto& table = loss_weight_tables_.at(static_cast<size_t>(weighting));
  check(!table.empty(), "--loss-weighting ", to_string(weighting),
        " needs a fixed reverse variance (--variance fixed-small or fixed-large), not ",
        to_string(variance_));
  return table;
}

int64_t GaussianDiffusion::model_output_channels(int64_t data_channels) const {
  return variance_ == VarianceType::LearnedRange ? 2 * data_channels : data_channels;
}

GaussianDiffusion::TableSources GaussianDiffusion::device_table_sources() const {
  const auto& s = schedule_;
  const auto& w = loss_weight_tables_;
  return {&s.betas,
          &s.alphas,
          &s.alphas_cumprod,
          &s.alphas_cumprod_prev,
          &s.alphas_cumprod_next,
          &s.sqrt_alphas_cumprod,
          &s.sqrt_one_minus_alphas_cumprod,
          &s.log_one_minus_alphas_cumprod,
          &s.sqrt_recip_alphas_cumprod,
          &s.sqrt_recipm1_alphas_cumprod,
          &s.posterior_variance,
          &s.posterior_log_variance_clipped,
          &s.posterior_mean_coef1,
          &s.posterior_mean_coef2,
          &log_betas_,
          &large_variance_,
          &large_log_variance_,
          &w[0],
          &w[1],
          &w[2],
          &w[3]};
}

torch::Tensor GaussianDiffusion::on_device(const std::vector<double>& table,
                                           const torch::Device& device) const {
  const auto sources = device_table_sources();
  const auto it = std::find(sources.begin(), sources.end(), &table);
  if (it == sources.end()) return torch::tensor(table, torch::kFloat64).to(device);
  std::lock_guard<std::mutex> lock(device_tables_->mutex);
  auto& tables = device_tables_->by_device[{static_cast<int>(device.type()), device.index()}];
  if (tables.empty())
    for (const auto* source : sources)
      tables.push_back(torch::tensor(*source, torch::kFloat64).to(device));
  return tables[static_cast<size_t>(it - sources.begin())];
}

torch::Tensor GaussianDiffusion::extract(const std::vector<double>& table, const torch::Tensor& t,
                                         const torch::Tensor& x) const {
  std::vector<int64_t> shape(std::max<int64_t>(x.dim(), 1), 1);
  shape[0] = t.numel();
  return on_device(table, x.device())
      .index_select(0, t.to(x.device(), torch::kLong).reshape({-1}))
      .to(x.scalar_type())
      .view(shape);
}

MeanVariance GaussianDiffusion::q_mean_variance(const torch::Tensor& x0,
                                                const torch::Tensor& t) const {
  const auto& s = schedule_;
  auto one_minus = extract(s.sqrt_one_minus_alphas_cumprod, t, x0);
  return {extract(s.sqrt_alphas_cumprod, t, x0) * x0, one_minus * one_minus,
          extract(s.log_one_minus_alphas_cumprod, t, x0)};
}

torch::Tensor GaussianDiffusion::q_sample(const torch::Tensor& x0, const torch::Tensor& t,
                                          const torch::Tensor& noise) const {
  return extract(schedule_.sqrt_alphas_cumprod, t, x0) * x0 +
         extract(schedule_.sqrt_one_minus_alphas_cumprod, t, x0) * noise;
}

MeanVariance GaussianDiffusion::q_posterior_mean_variance(const torch::Tensor& x0,
                                                          const torch::Tensor& x_t,
                                                          const torch::Tensor& t) const {
  const auto& s = schedule_;
  auto mean =
      extract(s.posterior_mean_coef1, t, x_t) * x0 + extract(s.posterior_mean_coef2, t, x_t) * x_t;
  return {mean, extract(s.posterior_variance, t, x_t),
          extract(s.posterior_log_variance_clipped, t, x_t)};
}

PMeanVariance GaussianDiffusion::p_mean_variance(const torch::Tensor& model_output,
                                                 const torch::Tensor& x_t, const torch::Tensor& t,
                                                 bool clip_x0) const {
  const int64_t C = x_t.size(1);
  check(model_output.dim() == x_t.dim() && model_output.size(0) == x_t.size(0) &&
            model_output.size(1) == model_output_channels(C),
        "model output has shape ", model_output.sizes(), " but the process expects ",
        model_output_channels(C), " channels for x_t of shape ", x_t.sizes());
  torch::Tensor pred = model_output, log_variance;
  if (variance_ == VarianceType::LearnedRange) {
    pred = model_output.narrow(1, 0, C);
    const auto frac = (model_output.narrow(1, C, C) + 1.0) / 2.0;
    log_variance = frac * extract(log_betas_, t, x_t) +
                   (1.0 - frac) * extract(schedule_.posterior_log_variance_clipped, t, x_t);
  } else if (variance_ == VarianceType::FixedLarge) {
    log_variance = extract(large_log_variance_, t, x_t);  // [B,1,1,1] until the end
  } else {
    log_variance = extract(schedule_.posterior_log_variance_clipped, t, x_t);
  }
  const auto a = extract(schedule_.sqrt_alphas_cumprod, t, x_t);
  const auto s = extract(schedule_.sqrt_one_minus_alphas_cumprod, t, x_t);
  const auto x0_eps = clip_x0 ? split_prediction_clipped(prediction_, pred, x_t, a, s)
                              : split_prediction(prediction_, pred, x_t, a, s);
  auto post = q_posterior_mean_variance(x0_eps.x0, x_t, t);
  // exp before expanding, so fixed variances cost B exponentials, not B*C*H*W.
  return {post.mean, torch::exp(log_variance).expand_as(x_t), log_variance.expand_as(x_t),
          x0_eps.x0, x0_eps.eps};
}

torch::Tensor GaussianDiffusion::vb_terms_bpd(const torch::Tensor& model_output,
                                              const torch::Tensor& x0, const torch::Tensor& x_t,
                                              const torch::Tensor& t, bool clip_x0,
                                              torch::Tensor* pred_x0) const {
  const double ln2 = std::log(2.0);
  auto q = q_posterior_mean_variance(x0, x_t, t);
  auto p = p_mean_variance(model_output, x_t, t, clip_x0);
  auto kl = mean_flat(normal_kl(q.mean, q.log_variance, p.mean, p.log_variance)) / ln2;
  auto decoder_nll =
      -mean_flat(discretized_gaussian_log_likelihood(x0, p.mean, 0.5 * p.log_variance)) / ln2;
  if (pred_x0) *pred_x0 = p.pred_x0;
  return torch::where(t.to(kl.device()).reshape({-1}) == 0, decoder_nll, kl);
}

torch::Tensor GaussianDiffusion::prior_bpd(const torch::Tensor& x0) const {
  auto t = torch::full({x0.size(0)}, num_timesteps() - 1,
                       torch::TensorOptions().dtype(torch::kLong).device(x0.device()));
  auto q = q_mean_variance(x0, t);
  auto zero = torch::zeros_like(q.mean);
  return mean_flat(normal_kl(q.mean, q.log_variance.expand_as(q.mean), zero, zero)) / std::log(2.0);
}

TrainingLosses GaussianDiffusion::training_losses(const torch::Tensor& model_output,
                                                  const torch::Tensor& x0, const torch::Tensor& x_t,
                                                  const torch::Tensor& t,
                                                  const torch::Tensor& noise, LossType loss,
                                                  LossWeighting weighting) const {
  const int64_t C = x_t.size(1);
  check(model_output.size(1) == model_output_channels(C), "model output has ", model_output.size(1),
        " channels, the process expects ", model_output_channels(C));
  check(loss != LossType::Hybrid || variance_ == VarianceType::LearnedRange,
        "--loss hybrid needs --variance learned-range (the hybrid loss trains the variance)");
  check(loss != LossType::Vlb || weighting == LossWeighting::Simple, "--loss-weighting ",
        to_string(weighting), " weights the MSE of --loss simple or hybrid; --loss vlb trains ",
        "on the bound itself and takes --loss-weighting simple");
  const auto pred = model_output.narrow(1, 0, C);
  const auto a = extract(schedule_.sqrt_alphas_cumprod, t, x0);
  const auto s = extract(schedule_.sqrt_one_minus_alphas_cumprod, t, x0);
  const auto target = prediction_target(prediction_, x0, noise, a, s);
  TrainingLosses out;
  out.mse = mean_flat((target - pred.to(target.scalar_type())).pow(2));
  out.loss = weighting == LossWeighting::Simple
                 ? out.mse
                 : out.mse * extract(loss_weight_table(weighting), t, out.mse);
  if (loss == LossType::Vlb) {
    // Every output channel trains through the bound: the mean and, if learned, the variance.
    out.vb = vb_terms_bpd(model_output.to(x0.scalar_type()), x0, x_t, t);
    out.loss = out.vb;
  } else if (loss == LossType::Hybrid) {
    // L_vlb trains only the variance: the mean's gradient comes from L_simple alone.
    auto frozen = torch::cat({pred.detach(), model_output.narrow(1, C, C)}, 1);
    out.vb = vb_terms_bpd(frozen.to(x0.scalar_type()), x0, x_t, t);
    // lambda = 0.001 on L_vlb = T E_t[L_t]: the per-sample term is scaled by T / 1000.
    out.loss = out.loss + out.vb * (static_cast<double>(num_timesteps()) / 1000.0);
  }
  return out;
}

}  // namespace diffuse
