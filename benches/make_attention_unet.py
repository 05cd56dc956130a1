#!/usr/bin/env python3
"""Makes the benchmark-only diffusers-style UNet with attention at 32x32 (random weights).

    python3 benches/make_attention_unet.py            # -> target/bench-models/attn-unet-32.onnx

diffusers' UNet2DModel, the layout of its DDPM CIFAR-10 pipelines scaled to a small board:
3x32x32 images, block widths 32/64/64, one ResNet layer per block, single-head
self-attention in the 16x16 and 8x8 blocks, GroupNorm with 8 groups, SiLU. Weights are random (seeded): the file exists only to time one denoiser
call in edge-sample and onnxruntime, so it is not committed. Inputs `sample` [N,3,32,32]
float32 and `timestep` [N] int64; output [N,3,32,32]; batch dimension free.
"""
import argparse
import os

import torch
from diffusers import UNet2DModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Eps(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep):
        return self.unet(sample, timestep).sample


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench-models/attn-unet-32.onnx"))
    args = ap.parse_args()
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=32,
    ).eval()
    params = sum(p.numel() for p in unet.parameters())
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([10, 500], dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(Eps(unet), (x, t), args.out, input_names=["sample", "timestep"],
                          output_names=["eps"],
                          dynamic_axes={"sample": {0: "N"}, "timestep": {0: "N"}, "eps": {0: "N"}},
                          opset_version=17, do_constant_folding=True, dynamo=False)
    print(f"{args.out}: diffusers UNet2DModel, {params / 1e6:.2f} M parameters, random weights")


if __name__ == "__main__":
    main()
