#!/usr/bin/env python3
"""The diffusers side of bench/quality_vs_diffusers.sh: trains diffusers' UNet2DModel on
Fashion-MNIST with the recipe `diffuse train` uses, the way diffusers' train_unconditional example
does it (DDPMScheduler.add_noise, EMAModel, get_scheduler, clip_grad_norm_), saves the EMA weights as
a pipeline folder (unet/ + scheduler/) that `diffuse eval fd --model` reads, and optionally samples
with diffusers' own DDIMScheduler for a cross-check of diffuse's sampler. Not part of the build or
the tests; needs `pip install diffusers numpy` (the bench script does it).

usage: train_diffusers.py --config UNET_CONFIG_JSON --out DIR [--steps 2000] [--batch 32] ...
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel


def load_idx_images(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, h, w = np.frombuffer(raw[:16], dtype=">i4")
    if magic != 2051:
        raise SystemExit(f"{path}: not an idx3 image file (magic {magic})")
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, h, w)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True, help="UNet2DModel config.json (diffuse info --config)")
    p.add_argument("--out", required=True)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast there, as diffuse)")
    p.add_argument("--sample-n", type=int, default=0, help="DDIM-50 samples with diffusers' scheduler")
    p.add_argument("--sample-out", default="", help=".npy for those samples, (N, 1, 32, 32) in [-1, 1]")
    a = p.parse_args()
    torch.set_num_threads(a.threads or os.cpu_count())
    torch.manual_seed(a.seed)

    with open(a.config) as f:
        config = json.load(f)
    model = UNet2DModel.from_config(config).to(a.device)
    bf16 = a.device.startswith("cuda")
    size = model.config.sample_size
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")

    # Pixels to [-1, 1], 28x28 padded to the model's size with -1 (as diffuse and DDPM pad).
    images = torch.from_numpy(load_idx_images(a.data).copy()).float().div_(127.5).sub_(1.0)
    pad = (size - images.shape[-1]) // 2
    if pad > 0:
        images = F.pad(images, (pad, pad, pad, pad), value=-1.0)

    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
                                  weight_decay=0.0)
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer=optimizer,
                                 num_warmup_steps=a.warmup, num_training_steps=a.steps)
    ema = EMAModel(model.parameters(), decay=a.ema_decay, use_ema_warmup=False,
                   model_cls=UNet2DModel, model_config=model.config)

    gen = torch.Generator().manual_seed(a.seed)
    order, pos = torch.randperm(len(images), generator=gen), 0
    model.train()
    start = time.time()
    for step in range(1, a.steps + 1):
        if pos + a.batch > len(images):
            order, pos = torch.randperm(len(images), generator=gen), 0
        x0 = images[order[pos:pos + a.batch]].to(a.device)
        pos += a.batch
        noise = torch.randn(x0.shape, generator=gen).to(a.device)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],),
                          generator=gen).to(a.device)
        x_t = noise_scheduler.add_noise(x0, noise, t)
        with torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            pred = model(x_t, t).sample
        loss = F.mse_loss(pred.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        optimizer.step()
        lr_scheduler.step()
        ema.step(model.parameters())
        if step % 100 == 0 or step == a.steps:
            rate = step * a.batch / (time.time() - start)
            print(f"diffusers: step {step}/{a.steps} loss {loss.item():.4f} {rate:.0f} img/s",
                  flush=True)

    ema.copy_to(model.parameters())
    model.eval()
    model.save_pretrained(os.path.join(a.out, "unet"), safe_serialization=True)
    noise_scheduler.save_pretrained(os.path.join(a.out, "scheduler"))
    print(f"diffusers: {a.steps} steps in {time.time() - start:.0f} s; EMA weights in {a.out}/unet")

    if a.sample_n > 0:
        # diffusers' DDIMPipeline loop: DDIM from the training scheduler's config (clip_sample and
        # set_alpha_to_one as diffusers defaults them), eta 0, 50 steps.
        ddim = DDIMScheduler.from_config(noise_scheduler.config)
        ddim.set_timesteps(50)
        sample_gen = torch.Generator().manual_seed(a.seed + 1)
        out = []
        with torch.inference_mode():
            for i in range(0, a.sample_n, 250):
                b = min(250, a.sample_n - i)
                x = torch.randn((b, model.config.in_channels, size, size), generator=sample_gen)
                x = x.to(a.device)
                for t in ddim.timesteps:
                    with torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                        eps = model(x, t).sample.float()
                    x = ddim.step(eps, t, x, eta=0.0).prev_sample
                out.append(x.clamp(-1, 1).cpu())
                print(f"diffusers: sampled {i + b}/{a.sample_n}", flush=True)
        np.save(a.sample_out, torch.cat(out).numpy().astype(np.float32))


if __name__ == "__main__":
    main()
