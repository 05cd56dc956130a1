"""Train the small evaluation classifier for one data set and export it to ONNX.

    /opt/es-venv/bin/python models/eval/train_classifier.py digits
    /opt/es-venv/bin/python models/eval/train_classifier.py fashion

Writes, next to this file:
  classifier-<ds>.onnx   opset 17, input `x` float32 [N,1,28,28] in [-1,1] (the diffusion
                         model's range), outputs `logits` [N,10] and `features` [N,F]
                         (the penultimate layer, after its ReLU), batch dimension free.
  real-stats-<ds>.json   held-out accuracy, the real held-out images' mean top-class
                         confidence and normalised class-histogram entropy, and the mean
                         vector and covariance matrix of their features (Fréchet reference).

Splits (models/train/data.py): the denoiser trains on split "train"; split "eval" (a fixed
10 %) is held out from it. The eval split of the digits is only 1 000 images, too few to both
fit a classifier and leave honest held-out images for the reference statistics, so by default
the classifier fits on (a subsample of) split "train" and every reported real-data number
comes from split "eval", which neither the classifier nor the denoiser has seen.
`--fit-split eval` instead fits on the first part of "eval" and keeps the last
`--holdout` images of it for the statistics.

CPU only, one thread; each data set trains in well under 5 minutes.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "train"))
import data  # noqa: E402  (models/train/data.py)

FEATURES = 32
N_CLASSES = 10


class SmallCNN(nn.Module):
    """2 conv + 2 fc, ≈ 55 k parameters."""

    def __init__(self, feat=FEATURES):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.f1 = nn.Linear(32 * 7 * 7, feat)
        self.f2 = nn.Linear(feat, N_CLASSES)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        feats = F.relu(self.f1(torch.flatten(h, 1)))
        return self.f2(feats), feats


def shift(x, gen, max_px=2):
    """Random integer translation by up to max_px pixels, background (-1) filled in."""
    n = x.shape[0]
    p = max_px
    xp = F.pad(x, (p, p, p, p), value=-1.0)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = xp[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28]
    return out


@torch.no_grad()
def run(model, x, bs=500):
    logits, feats = [], []
    for i in range(0, len(x), bs):
        lo, fe = model(torch.from_numpy(x[i:i + bs]))
        logits.append(lo.numpy())
        feats.append(fe.numpy())
    return np.concatenate(logits), np.concatenate(feats)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def conf_entropy(logits):
    """Mean top-class probability; entropy of the argmax histogram divided by ln(10)."""
    p = softmax(logits.astype(np.float64))
    conf = float(p.max(axis=1).mean())
    hist = np.bincount(p.argmax(axis=1), minlength=N_CLASSES) / len(p)
    nz = hist[hist > 0]
    ent = max(0.0, float(-(nz * np.log(nz)).sum() / np.log(N_CLASSES)))
    return conf, ent, hist


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["digits", "fashion"])
    ap.add_argument("--fit-split", choices=["train", "eval"], default="train")
    ap.add_argument("--holdout", type=int, default=500, help="eval images kept back with --fit-split eval")
    ap.add_argument("--max-train", type=int, default=None,
                    help="subsample the fitting images (default: digits all, fashion 30000)")
    ap.add_argument("--epochs", type=int, default=None, help="default: digits 15, fashion 8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=HERE)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t0 = time.time()
    ds = args.dataset
    xe, ye = data.load(ds, "eval")
    if args.fit_split == "train":
        xt, yt = data.load(ds, "train")
    else:
        xt, yt = xe[:-args.holdout], ye[:-args.holdout]
        xe, ye = xe[-args.holdout:], ye[-args.holdout:]
    max_train = args.max_train or (30000 if ds == "fashion" else None)
    rng = np.random.RandomState(args.seed)
    if max_train and len(xt) > max_train:
        idx = rng.choice(len(xt), max_train, replace=False)
        xt, yt = xt[idx], yt[idx]
    epochs = args.epochs or (8 if ds == "fashion" else 15)
    print(f"{ds}: fit on {len(xt)} ({args.fit_split}), held-out {len(xe)}, {epochs} epochs", flush=True)

    model = SmallCNN()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    bs = 128
    steps = epochs * ((len(xt) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        tot, n = 0.0, 0
        for i in range(0, len(xt), bs):
            b = perm[i:i + bs]
            xb = shift(xt_t[b], gen)
            logits, _ = model(xb)
            loss = F.cross_entropy(logits, yt_t[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(b)
            n += len(b)
        model.eval()
        le, _ = run(model, xe)
        acc = float((le.argmax(1) == ye).mean())
        print(f"  epoch {ep + 1}: train loss {tot / n:.4f}, held-out acc {acc:.4f}, {time.time() - t0:.0f}s",
              flush=True)

    model.eval()
    le, fe = run(model, xe)
    acc = float((le.argmax(1) == ye).mean())
    conf, ent, hist = conf_entropy(le)
    mu = fe.astype(np.float64).mean(0)
    cov = np.cov(fe.astype(np.float64), rowvar=False)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / f"classifier-{ds}.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(onnx_path), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["logits", "features"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}})

    # The exported graph must give the same numbers as torch.
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    lo2, fe2 = sess.run(["logits", "features"], {"x": xe[:64]})
    dmax = float(max(np.abs(lo2 - le[:64]).max(), np.abs(fe2 - fe[:64]).max()))
    assert dmax < 1e-3, dmax

    stats = {
        "dataset": ds,
        "classifier": onnx_path.name,
        "input": "x float32 [N,1,28,28] in [-1,1]",
        "outputs": {"logits": [None, N_CLASSES], "features": [None, FEATURES]},
        "parameters": n_params,
        "fit_split": args.fit_split,
        "fit_images": int(len(xt)),
        "epochs": epochs,
        "heldout_split": "eval" if args.fit_split == "train" else f"eval[-{args.holdout}:]",
        "heldout_images": int(len(xe)),
        "heldout_accuracy": acc,
        "real_confidence": conf,
        "real_entropy": ent,
        "real_class_histogram": hist.tolist(),
        "onnx_vs_torch_max_abs": dmax,
        "feature_mean": mu.tolist(),
        "feature_cov": cov.tolist(),
        "train_seconds": round(time.time() - t0, 1),
    }
    (args.out_dir / f"real-stats-{ds}.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(f"{ds}: params {n_params}, held-out acc {acc:.4f}, real confidence {conf:.4f}, "
          f"entropy {ent:.4f}, {time.time() - t0:.0f}s -> {onnx_path.name}")


if __name__ == "__main__":
    main()
