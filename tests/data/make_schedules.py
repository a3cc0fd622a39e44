#!/usr/bin/env python3
"""schedules.json for tests/test_diffusion.cpp (Schedule.MatchesDiffusers): the betas and alphas_cumprod
of diffusers' DDPMScheduler at T = 1000 for the linear schedule ("linear", Ho et al.) and the cosine
one ("squaredcos_cap_v2", Nichol & Dhariwal), as diffusers stores them (float32), written as float64.

Usage (an environment with diffusers; see README.md): python3 tests/data/make_schedules.py [OUT]
OUT defaults to schedules.json beside this script.
"""

import json
import os
import sys

from diffusers import DDPMScheduler

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "schedules.json")
    data = {}
    for name, beta_schedule in SCHEDULES.items():
        s = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule)
        data[name] = {
            "diffusers_beta_schedule": beta_schedule,
            "betas": s.betas.double().tolist(),
            "alphas_cumprod": s.alphas_cumprod.double().tolist(),
        }
    with open(out, "w") as f:
        json.dump(data, f)
    print(f"{out}: {', '.join(SCHEDULES)}")


if __name__ == "__main__":
    main()
