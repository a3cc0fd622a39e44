#!/usr/bin/env python3
"""PyTorch + diffusers reference for `diffuse bench`: the same U-Net (from a diffusers config.json,
e.g. `diffuse info --config fmnist-small > cfg.json`), the same workloads, the same JSON fields, so
ratios can be measured in one run on one machine. Not part of the build or the tests.

usage: pytorch_reference.py train|forward CONFIG_JSON --batch B [--device cpu|cuda] [--threads N]
                            [--bf16] [--compile] [--repeats R] [--warmup W]
"""
import argparse
import json
import statistics
import time

import torch
from diffusers import UNet2DModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["train", "forward"])
    p.add_argument("config")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    cfg = json.load(open(a.config))
    model = UNet2DModel.from_config(cfg).to(a.device)
    fn = torch.compile(model) if a.compile else model
    C, S, B = cfg["in_channels"], cfg["sample_size"], a.batch
    x0 = torch.rand(B, C, S, S, device=a.device) * 2 - 1
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float().to(a.device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)

    def step():
        t = torch.randint(0, 1000, (B,), device=a.device)
        noise = torch.randn_like(x0)
        ab = abar[t].view(B, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        with torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16, enabled=a.bf16):
            out = fn(xt, t).sample
        if a.what == "forward":
            return
        loss = (out.float() - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    cuda = a.device.startswith("cuda")
    ctx = torch.inference_mode() if a.what == "forward" else torch.enable_grad()
    if a.what == "train":
        model.train()
    else:
        model.eval()
    times = []
    with ctx:
        for _ in range(a.warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(a.repeats):
            if cuda:
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                step()
                e.record()
                e.synchronize()
                times.append(s.elapsed_time(e))
            else:
                t0 = time.perf_counter()
                step()
                times.append((time.perf_counter() - t0) * 1000)
    ms = statistics.median(times)
    print(json.dumps({"bench": a.what, "impl": "pytorch", "batch": B, "device": a.device,
                      "threads": torch.get_num_threads(), "autocast": "bf16" if a.bf16 else "off",
                      "compile": a.compile, "median_ms": ms, "images_per_s": B / (ms / 1000),
                      "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
