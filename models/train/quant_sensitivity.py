"""Which convolutions can go to int8: per-node sensitivity of an fp32 denoiser to onnxruntime's
static quantization, and the cost of quantizing them one after another.

    python quant_sensitivity.py ../digits/digits.onnx --dataset digits
    python quant_sensitivity.py ../digits/digits.onnx --dataset digits --format qdq \\
        --per-channel --method Percentile --write-dir /tmp/greedy

Starting from the "fullres" exclusion set of export.py (every convolution at the image's full
H x W kept in float), it quantizes the model with each of those convolutions moved to int8 in
turn and prints the eps error against the fp32 file (onnxruntime, 256 held-out noised images
x_t, t stratified over 0..999) and the eps MSE against the true noise (the training loss).
Then it moves them to int8 cumulatively, least sensitive first, and prints the same for each
step (with --write-dir, each step's file is kept there, to count or to measure with
models/eval/measure.py).  Without torch: x_t is made with numpy from the linear schedule.
With --sweep it first compares the calibration choices (MinMax / Percentile 99.999 / Entropy,
per-tensor / per-channel weight scales) on export.py's exclusion sets.
"""
import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402
import export  # noqa: E402

T = 1000


def noised(x0, n, seed):
    """export.noised in numpy (same seeds, same draws; x_t computed in float32)."""
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float32)
    ab = np.cumprod(1 - betas, dtype=np.float32)
    g = np.random.RandomState(seed)
    idx = g.choice(len(x0), n, replace=len(x0) < n)
    t = ((np.arange(n) + g.rand(n)) * T / n).astype(np.int64).clip(0, T - 1)
    g.shuffle(t)
    eps = g.randn(n, *x0.shape[1:]).astype(np.float32)
    a = ab[t].reshape(-1, 1, 1, 1)
    return (np.sqrt(a) * x0[idx] + np.sqrt(1 - a) * eps).astype(np.float32), t.reshape(-1, 1), eps


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="fp32 ONNX denoiser")
    p.add_argument("--dataset", choices=["digits", "fashion"], required=True)
    p.add_argument("--format", choices=["qop", "qdq"], default="qop")
    p.add_argument("--per-channel", action="store_true")
    p.add_argument("--method", choices=["MinMax", "Percentile", "Entropy"], default="MinMax")
    p.add_argument("--percentile", type=float, default=99.999)
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--n-eval", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sweep", action="store_true", help="first compare the calibration choices")
    p.add_argument("--write-dir", type=Path, help="keep each cumulative step's file here")
    a = p.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    xtr, _ = data.load(a.dataset, "train")
    xev, _ = data.load(a.dataset, "eval")
    xe, te, epse = noised(xev, a.n_eval, 7)
    xc, tc, _ = noised(xtr, a.calib, 3)
    calib = export.Calib(xc, tc)
    ref = export.run_sess(export.session(a.model, a.threads), xe, te)
    print(f"fp32: eps MSE vs the true noise {np.mean((ref - epse) ** 2):.5f}")
    td = Path(tempfile.mkdtemp())
    pre = td / "pre.onnx"
    quant_pre_process(str(a.model), str(pre), skip_symbolic_shape=True)
    m = onnx.load(str(pre))
    fullres = sorted(set(export.fullres_convs(m)) | set(export.io_convs(m)))

    def trial(nodes, tag, fmt=a.format, per_channel=a.per_channel, method=a.method):
        out = td / f"{tag}.onnx"
        extra = {"CalibPercentile": a.percentile} if method == "Percentile" else {}
        export.quantize(pre, out, fmt, calib, [], "standard", per_channel=per_channel,
                        method=method, extra=extra, nodes=nodes)
        if fmt == "qdq":
            onnx.save(export.qdq_float_bypass(onnx.load(str(out)), export.QDQ_OPS), str(out))
        got = export.run_sess(export.session(out, a.threads), xe, te)
        return np.abs(got - ref).mean(), np.mean((got - epse) ** 2), out

    if a.sweep:
        sets = {"fullres": fullres, "io": export.io_convs(m), "none": []}
        print("| method | weight scales | kept in float | mean abs error vs fp32 | eps MSE |")
        print("|---|---|---|---:|---:|")
        for method in ["MinMax", "Percentile", "Entropy"]:
            for pc in [False, True]:
                for name, nodes in sets.items():
                    e, mse, _ = trial(nodes, f"sweep-{method}-{pc}-{name}", per_channel=pc, method=method)
                    print(f"| {method} | {'per-channel' if pc else 'per-tensor'} | {name} ({len(nodes)}) "
                          f"| {e:.5f} | {mse:.5f} |", flush=True)

    base, base_mse, _ = trial(fullres, "base")
    print(f"\n{a.format}, {'per-channel' if a.per_channel else 'per-tensor'}, {a.method}: "
          f"{len(fullres)} full-resolution convolutions in float: error {base:.5f}, eps MSE {base_mse:.5f}")
    print("| convolution moved to int8 alone | mean abs error vs fp32 | eps MSE |")
    print("|---|---:|---:|")
    alone = {}
    for n in fullres:
        e, mse, _ = trial([x for x in fullres if x != n], "alone")
        alone[n] = mse
        print(f"| {n} | {e:.5f} | {mse:.5f} |", flush=True)
    print("| cumulatively, least sensitive first | mean abs error vs fp32 | eps MSE |")
    print("|---|---:|---:|")
    moved = []
    for n in sorted(fullres, key=alone.get):
        moved.append(n)
        e, mse, out = trial([x for x in fullres if x not in moved], f"cum-{len(moved)}")
        if a.write_dir:
            a.write_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, a.write_dir / f"{a.model.stem}-int8-{a.format}-{len(moved)}.onnx")
        print(f"| + {n} | {e:.5f} | {mse:.5f} |", flush=True)
    shutil.rmtree(td)


if __name__ == "__main__":
    main()
