#include "diffuse/samplers/unipc.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace diffuse {
namespace {

double lambda_of(double abar) {
  return 0.5 * std::log(abar / (1.0 - abar));
}

// b_k = h phi_{k+1}(hh) k! / B for k = 1..p (UniPC eq. 8 with phi as defined in sec. 3.1).
std::vector<double> unipc_b(double hh, int p) {
  const double B = std::expm1(hh);
  double h_phi_k = std::expm1(hh) / hh - 1.0, factorial = 1.0;
  std::vector<double> b;
  for (int k = 1; k <= p; ++k) {
    b.push_back(h_phi_k * factorial / B);
    factorial *= k + 1;
    h_phi_k = h_phi_k / hh - 1.0 / factorial;
  }
  return b;
}

struct Level {
  double abar, lambda;
};

// The order-p corrector of the step from level s (x_s, its model m_s, the one before it m_prev at
// lambda_prev) to level t, whose model output is m_t.
torch::Tensor corrector(const Level& s, const Level& t, const torch::Tensor& x_s,
                        const torch::Tensor& m_s, const torch::Tensor& m_t,
                        const torch::Tensor& m_prev, double lambda_prev, int p) {
  const double h = t.lambda - s.lambda, hh = -h, B = std::expm1(hh);
  const double alpha = std::sqrt(t.abar);
  const auto base =
      (std::sqrt(1.0 - t.abar) / std::sqrt(1.0 - s.abar)) * x_s - (alpha * std::expm1(hh)) * m_s;
  if (p == 1) return base - (alpha * B * 0.5) * (m_t - m_s);
  // R = [[1, 1], [r, 1]], R rho = b.
  const double r = (lambda_prev - s.lambda) / h;
  const auto b = unipc_b(hh, 2);
  const double rho0 = (b[0] - b[1]) / (1.0 - r), rho1 = b[0] - rho0;
  return base - (alpha * B) * ((rho0 / r) * (m_prev - m_s) + rho1 * (m_t - m_s));
}

// The order-p predictor from level s (x_s, m_s; m_prev at lambda_prev for p = 2) to level t.
torch::Tensor predictor(const Level& s, const Level& t, const torch::Tensor& x_s,
                        const torch::Tensor& m_s, const torch::Tensor& m_prev, double lambda_prev,
                        int p) {
  const double h = t.lambda - s.lambda, hh = -h, B = std::expm1(hh);
  const double alpha = std::sqrt(t.abar);
  auto x =
      (std::sqrt(1.0 - t.abar) / std::sqrt(1.0 - s.abar)) * x_s - (alpha * std::expm1(hh)) * m_s;
  if (p == 2) {
    const double r = (lambda_prev - s.lambda) / h;
    x = x - (alpha * B * 0.5 / r) * (m_prev - m_s);
  }
  return x;
}

}  // namespace

torch::Tensor sample_unipc(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  const auto S = run.timesteps.size();
  std::vector<Level> lv;
  for (size_t i = 0; i < S; ++i) {
    const double ab = run.alpha_bar(denoiser, i);
    lv.push_back({ab, lambda_of(ab)});
  }
  torch::Tensor m1, m2, x_last;  // the models at levels i-1, i-2; the predictor's input at i-1
  int order_last = 0;
  for (size_t i = 0; i < S; ++i) {
    const auto d = denoiser(x, run.timesteps[i]);
    if (i > 0) {
      const double lambda_prev = i >= 2 ? lv[i - 2].lambda : 0.0;
      x = corrector(lv[i - 1], lv[i], x_last, m1, d.x0, m2, lambda_prev, order_last);
    }
    const int order = static_cast<int>(std::min<size_t>({2, S - i, i + 1}));
    x_last = x;
    torch::Tensor next = d.x0;
    if (i + 1 < S)
      next = predictor(lv[i], lv[i + 1], x, d.x0, m1, i >= 1 ? lv[i - 1].lambda : 0.0, order);
    run.step_done(i, x, d.x0);
    order_last = order;
    m2 = m1;
    m1 = d.x0;
    x = std::move(next);
  }
  return x;
}

}  // namespace diffuse
