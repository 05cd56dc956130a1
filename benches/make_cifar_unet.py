#!/usr/bin/env python3
"""Makes the memory benchmark's models (random weights, not committed):

    python3 benches/make_cifar_unet.py
    # -> target/bench-models/cifar-unet.onnx           fp32, 143 MB
    #    target/bench-models/cifar-unet-int8-qdq.onnx  int8 QDQ (Conv, MatMul), 45 MB

diffusers' UNet2DModel in the configuration of the published DDPM CIFAR-10 model
(google/ddpm-cifar10-32: 3×32×32, block widths 128/256/256/256, two ResNet layers per block,
self-attention at 16×16, GroupNorm 32 groups, SiLU; 35.7 M parameters), exported with a free
batch dimension (inputs `sample` [N,3,32,32] float32, `timestep` [N] int64), and its int8 file
from onnxruntime's `quantize_static` (QDQ, Conv and MatMul, MinMax over four noise images at
t = 50, 300, 600, 900). docs/PERFORMANCE.md (Memory) measures the peak memory of both.
"""
import argparse
import os
import sys

import numpy as np
import torch
from diffusers import UNet2DModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_attention_unet import Eps  # noqa: E402  (the UNet's eps as one output)


class Calibration:
    def __init__(self):
        g = np.random.RandomState(0)
        self.batches = [{"sample": g.randn(1, 3, 32, 32).astype(np.float32),
                         "timestep": np.array([t], np.int64)} for t in (50, 300, 600, 900)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "target/bench-models"))
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    fp32 = os.path.join(args.out_dir, "cifar-unet.onnx")
    int8 = os.path.join(args.out_dir, "cifar-unet-int8-qdq.onnx")
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
    ).eval()
    params = sum(p.numel() for p in unet.parameters())
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([10])
    with torch.no_grad():
        torch.onnx.export(Eps(unet), (x, t), fp32, input_names=["sample", "timestep"],
                          output_names=["eps"],
                          dynamic_axes={"sample": {0: "N"}, "timestep": {0: "N"}, "eps": {0: "N"}},
                          opset_version=17, do_constant_folding=True, dynamo=False)
    from onnxruntime.quantization import QuantFormat, quantize_static
    quantize_static(fp32, int8, Calibration(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv", "MatMul"])
    for p in (fp32, int8):
        print(f"{p}: {os.path.getsize(p) / 1e6:.1f} MB ({params / 1e6:.2f} M parameters)")


if __name__ == "__main__":
    main()
