"""Multiply-accumulates per image of a net (Conv, ConvTranspose, Linear, attention matmuls)."""
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nets  # noqa: E402


def count_macs(m: nn.Module, img_shape=(1, 28, 28)) -> int:
    total = [0]

    def conv(mod, inp, out):
        k = mod.weight[0].numel() if isinstance(mod, nn.Conv2d) else mod.weight.shape[1] * mod.weight[0, 0].numel()
        if isinstance(mod, nn.Conv2d):
            total[0] += out.numel() * k
        else:  # ConvTranspose: every input pixel scatters in_c x out_c x kh x kw
            total[0] += inp[0].numel() * mod.weight[0].numel()

    def lin(mod, inp, out):
        total[0] += out.numel() * mod.in_features

    def attn(mod, inp, out):
        n, c, h, w = inp[0].shape
        total[0] += 2 * n * (h * w) ** 2 * c

    hs = []
    for mod in m.modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            hs.append(mod.register_forward_hook(conv))
        elif isinstance(mod, nn.Linear):
            hs.append(mod.register_forward_hook(lin))
        elif isinstance(mod, nets.AttnBlock):
            hs.append(mod.register_forward_hook(attn))
    with torch.no_grad():
        m.eval()(torch.zeros(1, *img_shape), torch.zeros(1, 1, dtype=torch.int64))
    for h in hs:
        h.remove()
    return total[0]


if __name__ == "__main__":
    torch.set_num_threads(1)
    for m in (nets.SeedUNet(), nets.SeedUNet(channels=(4, 8, 16, 32)), nets.FashionUNet(channels=(16, 32, 64), emb_dim=128, dropout=0.0),
              nets.FashionUNet()):
        print(m.config["arch"], m.config["channels"], f"params {nets.count_params(m, False)}",
              f"MACs/image {count_macs(m) / 1e6:.1f} M")
