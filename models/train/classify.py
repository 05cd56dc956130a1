"""Recognisability check: a small CNN classifier trained on the data set's training
split, applied to generated samples (.npy from sample.py --save-npy).

  python classify.py --dataset digits --samples runs/digits/samples.npy

Prints held-out accuracy of the classifier, and for the samples the share
classified with confidence >= 0.9, the mean max-probability and the class
histogram (a collapsed or unrecognisable model shows low confidence or a
lopsided histogram).  The classifier is cached in runs/classifier-<dataset>.pt.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import data  # noqa: E402


def make_net():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def get_classifier(dataset, epochs=4):
    path = HERE / "runs" / f"classifier-{dataset}.pt"
    net = make_net()
    if path.exists():
        net.load_state_dict(torch.load(path))
        return net.eval(), None
    torch.manual_seed(0)
    x, y = data.load(dataset, "train")
    xe, ye = data.load(dataset, "eval")
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(torch.from_numpy(xe)).argmax(1).numpy() == ye).mean()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net, float(acc)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="digits")
    p.add_argument("--samples", required=True, nargs="+")
    a = p.parse_args()
    torch.set_num_threads(1)
    net, acc = get_classifier(a.dataset)
    if acc is not None:
        print(f"classifier held-out accuracy {acc:.3f}")
    with torch.no_grad():
        xe, _ = data.load(a.dataset, "eval")
        pr = F.softmax(net(torch.from_numpy(xe[:512])), 1).max(1).values.numpy()
        print(f"{'real held-out images':40s} conf>=0.9 {np.mean(pr >= 0.9):.2f}  mean conf {pr.mean():.3f}")
        for f in a.samples:
            s = torch.from_numpy(np.load(f)).float().clamp(-1, 1)
            prob = F.softmax(net(s), 1)
            conf, cls = prob.max(1)
            print(f"{Path(f).name:40s} conf>=0.9 {np.mean(conf.numpy() >= 0.9):.2f}  mean conf "
                  f"{conf.mean():.3f}  classes {np.bincount(cls.numpy(), minlength=10).tolist()}")


if __name__ == "__main__":
    main()
