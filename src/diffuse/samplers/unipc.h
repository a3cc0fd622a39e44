// UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
// Diffusion Models"): the B(h) = e^{h} - 1 variant ("bh2") in data prediction, order 2, as
// diffusers' UniPCMultistepScheduler defaults. With lambda, h, alpha, sigma as DPM-Solver++'s
// (dpm_solver_pp.h), hh = -h, phi_1 = e^{hh} - 1 and B = e^{hh} - 1:
// clang-format off
//   UniP-2 (Algorithm 2):  x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} phi_1 m_i
//                                   - alpha_{i+1} B (1/2) (m_{i-1} - m_i) / r,   r = (lambda_{i-1} - lambda_i) / h
//   UniC-p (Algorithm 1):  once the model has been evaluated at x_{i+1} (giving m_{i+1}), x_{i+1} is
//                          replaced by the same step from x_i plus
//                          - alpha_{i+1} B (sum_k rho_k D_k + rho_p (m_{i+1} - m_i)),
//                          rho solving R rho = b (eq. 8 with the B(h) of sec. 3.3; rho = 1/2 at p = 1)
// clang-format on
// The model is never re-evaluated at the corrected point (the corrector is free); the first and
// last steps are first order, the last one (onto sigma = 0) gives m itself and is not corrected.
#pragma once
#include "diffuse/samplers/sampler.h"

namespace diffuse {

torch::Tensor sample_unipc(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run);

}  // namespace diffuse
