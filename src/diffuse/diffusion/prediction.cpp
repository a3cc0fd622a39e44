#include "diffuse/diffusion/prediction.h"

#include "diffuse/core/error.h"

namespace diffuse {

PredictionType parse_prediction_type(const std::string& name) {
  if (name == "epsilon" || name == "eps") return PredictionType::Epsilon;
  if (name == "sample" || name == "x0") return PredictionType::Sample;
  if (name == "v_prediction" || name == "v") return PredictionType::V;
  fail("prediction type: unknown '", name, "' (expected epsilon, x0 or v)");
}

std::string to_string(PredictionType p) {
  switch (p) {
    case PredictionType::Epsilon:
      return "epsilon";
    case PredictionType::Sample:
      return "x0";
    case PredictionType::V:
      return "v";
  }
  return "?";
}

X0Eps split_prediction(PredictionType p, const torch::Tensor& out, const torch::Tensor& x_t,
                       const torch::Tensor& a, const torch::Tensor& s) {
  switch (p) {
    case PredictionType::Epsilon:
      return {(x_t - s * out) / a, out};
    case PredictionType::Sample:
      return {out, (x_t - a * out) / s};
    case PredictionType::V:
      return {a * x_t - s * out, s * x_t + a * out};
  }
  fail("prediction type: invalid value");
}

X0Eps split_prediction_clipped(PredictionType p, const torch::Tensor& out, const torch::Tensor& x_t,
                               const torch::Tensor& a, const torch::Tensor& s) {
  auto x0 = split_prediction(p, out, x_t, a, s).x0.clamp(-1.0, 1.0);
  return {x0, (x_t - a * x0) / s};
}

torch::Tensor prediction_target(PredictionType p, const torch::Tensor& x0, const torch::Tensor& eps,
                                const torch::Tensor& a, const torch::Tensor& s) {
  switch (p) {
    case PredictionType::Epsilon:
      return eps;
    case PredictionType::Sample:
      return x0;
    case PredictionType::V:
      return a * eps - s * x0;
  }
  fail("prediction type: invalid value");
}

}  // namespace diffuse
