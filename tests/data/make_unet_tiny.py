#!/usr/bin/env python3
"""unet_tiny.json and unet_tiny.safetensors for tests/test_models.cpp (UNetGolden.*) and
tests/test_cli.cpp: a random diffusers UNet2DModel (about 1.6M parameters, the DDPM block layout at
16x16), its weights as float32 safetensors, and diffusers' float64 output for one input.

    python3 tests/data/make_unet_tiny.py [OUT_DIR]   write both files (OUT_DIR: beside this script)
    python3 tests/data/make_unet_tiny.py --verify    recompute output_from_f32_weights from the
                                                     committed weights and input, compare

The committed files predate this script and their random seed was not recorded, so a regenerated
pair has other weights, input and outputs (same config, shapes, keys and parameter count); --verify
is what ties the committed reference to diffusers. The tests read config, param_count, x, x_shape,
timesteps and output_from_f32_weights; `output` (the float64 weights before rounding to float32) is
kept for information.
"""

import json
import os
import sys

import diffusers
import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    block_out_channels=[32, 64, 64],
    layers_per_block=2,
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    attention_head_dim=None,
    norm_num_groups=8,
    norm_eps=1e-06,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    dropout=0.0,
)
TIMESTEPS = [10, 700]


def forward64(model, x, t):
    with torch.no_grad():
        return model.double().eval()(x, torch.tensor(t, dtype=torch.int64)).sample


def write(out_dir):
    torch.manual_seed(1234)
    model = UNet2DModel(**CONFIG).double()
    # Non-trivial norm affines, so a swapped weight/bias would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.02 * torch.randn_like(p))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    out = forward64(model, x, TIMESTEPS)
    weights = {k: v.float().contiguous() for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.double() for k, v in weights.items()})
    out_f32 = forward64(model, x, TIMESTEPS)
    save_file(weights, os.path.join(out_dir, "unet_tiny.safetensors"))
    data = dict(
        diffusers_class="UNet2DModel",
        config=CONFIG,
        x=x.flatten().tolist(),
        x_shape=list(x.shape),
        timesteps=TIMESTEPS,
        output=out.flatten().tolist(),
        note="weights stored float32; output computed in float64 from the float64 weights before rounding",
        output_from_f32_weights=out_f32.flatten().tolist(),
        param_count=sum(p.numel() for p in model.parameters()),
    )
    with open(os.path.join(out_dir, "unet_tiny.json"), "w") as f:
        json.dump(data, f)
    print(f"{out_dir}: unet_tiny.json, unet_tiny.safetensors (diffusers {diffusers.__version__})")


def verify():
    with open(os.path.join(HERE, "unet_tiny.json")) as f:
        data = json.load(f)
    model = UNet2DModel(**data["config"])
    model.load_state_dict(load_file(os.path.join(HERE, "unet_tiny.safetensors")), strict=True)
    assert sum(p.numel() for p in model.parameters()) == data["param_count"]
    x = torch.tensor(data["x"], dtype=torch.float64).reshape(data["x_shape"])
    out = forward64(model, x, data["timesteps"]).flatten()
    ref = torch.tensor(data["output_from_f32_weights"], dtype=torch.float64)
    rel = ((out - ref).abs().max() / ref.abs().max()).item()
    rounding = ((ref - torch.tensor(data["output"])).abs().max() / ref.abs().max()).item()
    print(f"output_from_f32_weights: max error relative to max |output| {rel:.2e}")
    print(f"output vs output_from_f32_weights (the float32 rounding of the weights): {rounding:.2e}")
    return rel < 1e-9


if __name__ == "__main__":
    if sys.argv[1:] == ["--verify"]:
        sys.exit(0 if verify() else 1)
    write(sys.argv[1] if len(sys.argv) > 1 else HERE)
