"""Sample a grid of images from a checkpoint (torch) or an exported ONNX file.

  python sample.py --ckpt runs/digits/ckpt.pt --out runs/digits/samples.png
  python sample.py --onnx ../digits/digits-int8-qop.onnx --sampler ddim --steps 50 --out /tmp/q.png

Samplers: ddpm (the seed's 1000-step ancestral sampler, clip_x0, simple_var)
or ddim (eta 0, 'leading' spacing).  Pixels: (x+1)/2*255, clamped.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nets  # noqa: E402
from diffusion import Schedule, ddim_sample, ddpm_sample  # noqa: E402


class OrtNet:
    def __init__(self, path, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.f16 = "float16" in self.s.get_inputs()[0].type
        shp = self.s.get_inputs()[0].shape
        self.img_shape = [int(d) for d in shp[1:]]

    def __call__(self, x, t):
        xx = x.numpy().astype(np.float16 if self.f16 else np.float32)
        return torch.from_numpy(self.s.run(["eps"], {"x": xx, "t": t.numpy()})[0].astype(np.float32))


def to_grid(x: torch.Tensor, nrow: int) -> np.ndarray:
    img = ((x.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).numpy()  # [N,C,H,W]
    n, c, h, w = img.shape
    ncol = int(np.ceil(n / nrow))
    grid = np.full((c, ncol * (h + 2) + 2, nrow * (w + 2) + 2), 128, np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, 2 + r * (h + 2):2 + r * (h + 2) + h, 2 + q * (w + 2):2 + q * (w + 2) + w] = img[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt")
    p.add_argument("--onnx")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    p.add_argument("--steps", type=int, default=50, help="ddim steps")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scale", type=int, default=3, help="pixel upscaling of the PNG")
    p.add_argument("--out", required=True)
    p.add_argument("--save-npy", help="also save the raw samples [N,C,H,W] in [-1,1]")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.onnx:
        net = OrtNet(a.onnx, a.threads)
        shape = net.img_shape
    else:
        st = torch.load(a.ckpt, map_location="cpu", weights_only=False)
        net = nets.build(st["config"])
        net.load_state_dict(st[a.weights])
        net.eval()
        shape = st["config"]["img_shape"]
    g = torch.Generator().manual_seed(a.seed)
    sched = Schedule()
    if a.sampler == "ddpm":
        x = ddpm_sample(net, sched, (a.n, *shape), generator=g)
    else:
        x = ddim_sample(net, sched, (a.n, *shape), steps=a.steps, generator=g)
    if a.save_npy:
        np.save(a.save_npy, x.numpy())
    from PIL import Image
    grid = to_grid(x, int(np.ceil(np.sqrt(a.n))))
    im = Image.fromarray(grid)
    im = im.resize((im.width * a.scale, im.height * a.scale), Image.NEAREST)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    im.save(a.out)
    print(f"wrote {a.out} ({a.n} samples, {a.sampler})")


if __name__ == "__main__":
    main()
