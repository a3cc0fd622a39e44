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

samplers_multistep.json (Samplers.ReproduceDiffusersMultistepTrajectories) holds the same inputs
and the higher-order multistep schedulers at their diffusers defaults except where a run says:
DPM-Solver++ 3M (solver_order=3), SDE-DPM-Solver++ 2M (algorithm_type="sde-dpmsolver++"), UniPC
(bh2, order 2) and DEIS (solver_order=3). The SDE's noise is what diffuse's NoiseSource(seed) draws
(samplers/noise.h: image b's stream is a CPU generator seeded splitmix64(splitmix64(seed) ^ b),
one float32 randn of the image's shape per step), reproduced here and passed as variance_noise;
the file keeps the first step's draw so that the test can check the reproduction.

samplers_unet.json (Generate.NewSamplersMatchDiffusersOnTheGoldenUNet in test_pipeline) runs the
deterministic ones of these on the golden random U-Net of unet_tiny.safetensors in float64 instead
of the analytic model, from x_T = torch.randn((2, 3, 16, 16)) after torch.manual_seed(99).

Usage (an environment with diffusers; see README.md):
    python3 tests/data/make_samplers.py [OUT]                  samplers.json (default beside this)
    python3 tests/data/make_samplers.py --multistep [OUT]      samplers_multistep.json
    python3 tests/data/make_samplers.py --unet [OUT]           samplers_unet.json
"""

import json
import os
import sys

import torch
from diffusers import (DDIMScheduler, DEISMultistepScheduler, DPMSolverMultistepScheduler,
                       UniPCMultistepScheduler)

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
MULTISTEP_RUNS = [
    dict(sampler="dpm++3m", steps=10),
    dict(sampler="dpm++3m", steps=20),
    dict(sampler="dpm++2m-sde", steps=10, seed=7),
    dict(sampler="dpm++2m-sde", steps=20, seed=7),
    dict(sampler="unipc", steps=10),
    dict(sampler="unipc", steps=20),
    dict(sampler="deis", steps=10),
    dict(sampler="deis", steps=20),
]
MASK64 = (1 << 64) - 1


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


class NoiseSource:
    """diffuse's per-image noise streams (samplers/noise.cpp)."""

    def __init__(self, seed, batch):
        self.gens = [torch.Generator().manual_seed(splitmix64(splitmix64(seed) ^ b))
                     for b in range(batch)]

    def randn(self, shape):
        return torch.stack([torch.randn(shape[1:], generator=g, dtype=torch.float32)
                            for g in self.gens]).double()


def multistep_scheduler(run):
    common = dict(num_train_timesteps=1000, beta_schedule="linear")
    kind = run["sampler"]
    if kind == "dpm++3m":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=3, **common)
    if kind == "dpm++2m-sde":
        return DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=2, **common)
    if kind == "unipc":
        return UniPCMultistepScheduler(**common)
    return DEISMultistepScheduler(solver_order=3, **common)


def multistep_trajectory(run, mu, x_T):
    sch = multistep_scheduler(run)
    sch.set_timesteps(run["steps"])
    noise = NoiseSource(run["seed"], x_T.shape[0]) if "seed" in run else None
    x = x_T.clone()
    first_noise = None
    for i, t in enumerate(sch.timesteps):
        eps = exact_eps(sch.alphas_cumprod[int(t)].double(), x, mu)
        kwargs = {}
        if noise is not None:
            # diffuse draws no noise for the last step, which lands on sigma = 0 (its noise term is 0).
            last = i + 1 == len(sch.timesteps)
            z = torch.zeros_like(x) if last else noise.randn(x.shape)
            first_noise = z if first_noise is None else first_noise
            kwargs = dict(variance_noise=z)
        x = sch.step(eps, t, x, **kwargs).prev_sample
    extra = {} if first_noise is None else dict(first_noise=first_noise.flatten().tolist())
    return [int(t) for t in sch.timesteps], x, extra


def unet_trajectories(out):
    from diffusers import UNet2DModel
    from safetensors.torch import load_file
    cfg = json.load(open(os.path.join(HERE, "unet_tiny.json")))["config"]
    model = UNet2DModel(**cfg)
    model.load_state_dict(load_file(os.path.join(HERE, "unet_tiny.safetensors")))
    model = model.double().eval()
    torch.manual_seed(99)
    x_T = torch.randn((2, 3, 16, 16), dtype=torch.float64)
    runs = []
    for run in [r for r in MULTISTEP_RUNS if r["steps"] == 10 and "seed" not in r]:
        sch = multistep_scheduler(run)
        sch.set_timesteps(run["steps"])
        x = x_T.clone()
        with torch.no_grad():
            for t in sch.timesteps:
                eps = model(x, torch.full((2,), int(t), dtype=torch.int64)).sample
                x = sch.step(eps, t, x).prev_sample
        runs.append(dict(run, timesteps=[int(t) for t in sch.timesteps], x_0=x.flatten().tolist()))
    with open(out, "w") as f:
        json.dump(dict(shape=[2, 3, 16, 16], x_T=x_T.flatten().tolist(), runs=runs), f)
    print(f"{out}: {len(runs)} runs")


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
    args = sys.argv[1:]
    if args and args[0] == "--unet":
        unet_trajectories(args[1] if len(args) > 1 else os.path.join(HERE, "samplers_unet.json"))
        return
    multistep = bool(args) and args[0] == "--multistep"
    args = args[1:] if multistep else args
    name = "samplers_multistep.json" if multistep else "samplers.json"
    out = args[0] if args else os.path.join(HERE, name)
    torch.manual_seed(1234)
    mu = 0.5 * torch.randn(SHAPE, dtype=torch.float64)
    x_T = torch.randn(SHAPE, dtype=torch.float64)
    runs = []
    for run in MULTISTEP_RUNS if multistep else RUNS:
        if multistep:
            timesteps, x_0, extra = multistep_trajectory(run, mu, x_T)
        else:
            (timesteps, x_0), extra = trajectory(run, mu, x_T), {}
        runs.append(dict(run, timesteps=timesteps, x_0=x_0.flatten().tolist(), **extra))
    data = dict(shape=list(SHAPE), mu=mu.flatten().tolist(), s=S, x_T=x_T.flatten().tolist(),
                schedule="linear", runs=runs)
    with open(out, "w") as f:
        json.dump(data, f)
    print(f"{out}: {len(runs)} runs")


if __name__ == "__main__":
    main()
