#!/usr/bin/env python3
"""Side by side: one denoiser call in onnxruntime vs edge-sample (tract), same model file,
same batch, same thread count, same machine. Prints a table with the ratio edge/ort.

    pip install -r benches/requirements.txt
    cargo build --release
    python3 benches/ort_baseline.py [--model models/digits/digits.onnx] [--batch 1 16] [--threads 1 2]

edge-sample runs a step over B images two ways, and the table gives both and the better:
- "one plan": one batch-B plan on one worker whose kernels use --threads threads (the median
  denoiser call of `edge-sample bench --batch B --num B`);
- "workers": B batch-1 plans spread over --threads workers, as the main job runs (the median
  run of `edge-sample bench --batch 1 --num B` divided by its steps). For B = 1 the two are
  the same thing and only "one plan" is run.
No timing is asserted anywhere: the numbers go to the README and the issue notes.
"""
import argparse
import os
import re
import subprocess
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ort_median_ms(path, batch, threads, calls):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        shape = [batch if not isinstance(d, int) else d for d in i.shape]
        if len(shape) == 4:
            dt = np.float16 if "float16" in i.type else np.float32
            feeds[i.name] = np.random.default_rng(0).standard_normal(shape).astype(dt)
        else:
            shape = [batch if (not isinstance(d, int) or d == batch) else d for d in shape]
            dt = {"tensor(int64)": np.int64, "tensor(int32)": np.int32,
                  "tensor(float16)": np.float16}.get(i.type, np.float32)
            feeds[i.name] = np.full(shape, 500, dtype=dt)
    for _ in range(5):
        sess.run(None, feeds)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def edge_bench(binary, path, batch, num, threads, steps, runs):
    return subprocess.run(
        [binary, "bench", "--model", path, "--batch", str(batch), "--num", str(num),
         "--threads", str(threads), "--steps", str(steps), "--runs", str(runs)],
        check=True, capture_output=True, text=True).stdout


def edge_median_ms(binary, path, batch, threads, steps, runs):
    out = edge_bench(binary, path, batch, batch, threads, steps, runs)
    return float(re.search(r"denoiser call: median ([0-9.]+) ms", out).group(1))


def edge_workers_ms(binary, path, batch, threads, steps, runs):
    out = edge_bench(binary, path, 1, batch, threads, steps, runs)
    return float(re.search(r"run: median ([0-9.]+) ms", out).group(1)) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", nargs="+", default=[os.path.join(ROOT, "models/digits/digits.onnx")])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/edge-sample"))
    args = ap.parse_args()
    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs")
    print("| model | batch | threads | edge-sample one plan ms | edge-sample workers ms "
          "| onnxruntime ms | ratio (best edge / ort) |")
    print("|---|---|---|---|---|---|---|")
    for m in args.model:
        for b in args.batch:
            for t in args.threads:
                o = ort_median_ms(m, b, t, args.calls)
                steps = max(5, args.calls // 3)
                e = edge_median_ms(args.binary, m, b, t, steps, 3)
                w = edge_workers_ms(args.binary, m, b, t, steps, 3) if b > 1 else None
                best = min(e, w) if w is not None else e
                ws = f"{w:.3f}" if w is not None else "–"
                print(f"| {os.path.basename(m)} | {b} | {t} | {e:.3f} | {ws} | {o:.3f} "
                      f"| {best / o:.2f} |", flush=True)


if __name__ == "__main__":
    main()
