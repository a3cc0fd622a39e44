#!/usr/bin/env python3
"""Reference data for tests/test_models.cpp, made with Hugging Face diffusers.

Run by hand (never by the build or the tests), in an environment with diffusers, outside the
project's own venv, e.g.:

    python3 -m venv /work/refenv
    echo /work/main/.venv/lib/python3.11/site-packages \
        > /work/refenv/lib/python3.11/site-packages/main_torch.pth
    /work/refenv/bin/pip install diffusers numpy
    /work/refenv/bin/python tests/data/make_reference_data.py

Writes
  tests/data/ddpm_cifar10_keys.txt   state-dict names and shapes of diffusers' UNet2DModel with the
                                     DDPM CIFAR-10 config (the `ddpm-cifar10` preset)
  tests/data/diffusers_tiny/         save_pretrained of a small random UNet2DModel (float16 weights)
                                     that uses what the golden tiny model does not: several heads,
                                     flip_sin_to_cos, freq_shift 0, downsample_padding 1, a class
                                     embedding, mid_block_scale_factor != 1, center_input_sample;
                                     plus reference.json: an input and diffusers' float64 output.
"""

import json
import os
import shutil

import diffusers
import torch
from diffusers import UNet2DModel

ROOT = os.path.dirname(os.path.abspath(__file__))

DDPM_CIFAR10 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    attention_head_dim=None,
    norm_num_groups=32,
    norm_eps=1e-6,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    dropout=0.1,
)

TINY = dict(
    sample_size=16,
    in_channels=2,
    out_channels=2,
    center_input_sample=True,
    block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    attention_head_dim=8,
    norm_num_groups=4,
    norm_eps=1e-5,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=2.0,
    num_class_embeds=5,
)


def write_keys():
    model = UNet2DModel(**DDPM_CIFAR10)
    n = sum(p.numel() for p in model.parameters())
    path = os.path.join(ROOT, "ddpm_cifar10_keys.txt")
    with open(path, "w") as f:
        f.write(f"# diffusers {diffusers.__version__} UNet2DModel, DDPM CIFAR-10 config: {n} parameters\n")
        f.write("# name dim0 dim1 ...\n")
        for name, t in model.state_dict().items():
            f.write(" ".join([name] + [str(s) for s in t.shape]) + "\n")
    print(f"{path}: {len(model.state_dict())} tensors, {n} parameters")


def write_tiny():
    torch.manual_seed(1234)
    model = UNet2DModel(**TINY)
    # Non-trivial norm affines, so a swapped weight/bias would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    out_dir = os.path.join(ROOT, "diffusers_tiny")
    shutil.rmtree(out_dir, ignore_errors=True)
    model.half().save_pretrained(out_dir)

    ref = UNet2DModel.from_pretrained(out_dir).double().eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, TINY["in_channels"], 16, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 17, 999], dtype=torch.int64)
    labels = torch.tensor([4, 0, 2], dtype=torch.int64)
    with torch.no_grad():
        out = ref(x, t, class_labels=labels).sample
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(
            {
                "diffusers_version": diffusers.__version__,
                "note": "weights stored float16; output computed by diffusers in float64",
                "param_count": sum(p.numel() for p in ref.parameters()),
                "x_shape": list(x.shape),
                "x": x.flatten().tolist(),
                "timesteps": t.tolist(),
                "class_labels": labels.tolist(),
                "output": out.flatten().tolist(),
            },
            f,
        )
    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print(f"{out_dir}: {size} bytes")


if __name__ == "__main__":
    write_keys()
    write_tiny()
