#!/usr/bin/env python3
"""samplers.json for tests/test_samplers.cpp (Samplers.ReproduceDiffusersTrajectories): trajectories
of diffusers' DDIM (eta = 0, clip_sample off) and DPM-Solver++ 2M schedulers on the linear schedule
at T = 1000, driven by the exact noise predictor of Gaussian data instead of a network.

The data: x_0 ~ N(mu, s^2) elementwise, mu = 0.5 N(0, 1) draws, s = 0.3. With x_t = a x_0 + sigma eps,
a^2 = abar_t, sigma^2 = 1 - abar_t, the MMSE noise prediction is
    E[eps | x_t] = sigma (x_t - a mu) / (abar_t s^2 + 1 - abar_t),
evaluated in float64 with diffusers' (float32) alphas_cumprod. mu and x_T come from
torch.manual_seed(1234), in that order.

The committed file predates this script: mu, s, x_T, the timesteps and every key match what it
writes exactly; the x_0 differ by at most 2.3e-7 (diffusers 0.42.1, torch 2.11), the precision path
of the original run not being recorded. The test allows 1e-5.

Usage (an environment with diffusers; see README.md): python3 tests/data/make_samplers.py [OUT]
OUT defaults to samplers.json beside this script.
"""

import json
import os
import sys

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPE = (2, 3, 8, 8)
S = 0.3
RUNS = [
    dict(sampler="ddim", eta=0.0, steps=10, timestep_spacing="leading", set_alpha_to_one=True),
    dict(sampler="ddim", eta=0.0, steps=50, timestep_spacing="leading", set_alpha_to_one=True),
    dict(sampler="dpmsolver++2m", steps=10, timestep_spacing="linspace", lower_order_final=True,
         final_sigmas_type="zero"),
    dict(sampler="dpmsolver++2m", steps=20, timestep_spacing="linspace", lower_order_final=True,
         final_sigmas_type="zero"),
]


def scheduler(run):
    common = dict(num_train_timesteps=1000, beta_schedule="linear",
                  timestep_spacing=run["timestep_spacing"])
    if run["sampler"] == "ddim":
        return DDIMScheduler(set_alpha_to_one=run["set_alpha_to_one"], clip_sample=False, **common)
    return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
                                       lower_order_final=run["lower_order_final"],
                                       final_sigmas_type=run["final_sigmas_type"], **common)


def exact_eps(abar, x, mu):
    return (1 - abar) ** 0.5 * (x - abar ** 0.5 * mu) / (abar * S * S + 1 - abar)


def trajectory(run, mu, x_T):
    sch = scheduler(run)
    sch.set_timesteps(run["steps"])
    x = x_T.clone()
    for t in sch.timesteps:
        eps = exact_eps(sch.alphas_cumprod[int(t)].double(), x, mu)
        kwargs = dict(eta=run["eta"]) if run["sampler"] == "ddim" else {}
        x = sch.step(eps, t, x, **kwargs).prev_sample
    return [int(t) for t in sch.timesteps], x


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "samplers.json")
    torch.manual_seed(1234)
    mu = 0.5 * torch.randn(SHAPE, dtype=torch.float64)
    x_T = torch.randn(SHAPE, dtype=torch.float64)
    runs = []
    for run in RUNS:
        timesteps, x_0 = trajectory(run, mu, x_T)
        runs.append(dict(run, timesteps=timesteps, x_0=x_0.flatten().tolist()))
    data = dict(shape=list(SHAPE), mu=mu.flatten().tolist(), s=S, x_T=x_T.flatten().tolist(),
                schedule="linear", runs=runs)
    with open(out, "w") as f:
        json.dump(data, f)
    print(f"{out}: {len(runs)} runs")


if __name__ == "__main__":
    main()
