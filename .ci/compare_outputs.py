"""Compare one seed's edge-sample outputs from several platforms: .npy (model range) and PNG.

usage: compare_outputs.py REF.npy OTHER.npy... (each X.npy has its X.png beside it)

Same seed, same model: the noise stream is bit-identical everywhere and so are our
convolutions (every SIMD set does the same fused multiply-adds in the same order); what
differs is the summation order of tract's matrix products (the time MLP) and of the norms'
SIMD reductions, ~1e-6 per network call, which 20 sampler steps carry to ~1e-5. Quantized to
8 bits, a value that lands within that distance of a rounding boundary can move one level.
"""
import sys

import numpy as np
from PIL import Image

# Measured (x86-64 AVX-512 vs qemu Cortex-A72 and A76, 20 DPM-Solver++ steps, seed 1234):
# digits 1.335e-5, fashion 1.752e-5 (4 images each).
CROSS_PLATFORM_TOL = 5e-5
# Pixels one 8-bit level apart: measured 1 of 3 844 (digits grid), 0 (fashion grid); never
# more than one level.
MAX_PIXELS_OFF_BY_ONE = 3
MAX_LEVEL_DIFF = 1


def png(path):
    return np.asarray(Image.open(path)).astype(np.int32)


ref = np.load(sys.argv[1])
ref_png = png(sys.argv[1][:-4] + ".png")
worst = 0.0
for path in sys.argv[2:]:
    other = np.load(path)
    assert other.shape == ref.shape, f"{path}: shape {other.shape} vs {ref.shape}"
    diff = float(np.max(np.abs(other - ref)))
    worst = max(worst, diff)
    levels = np.abs(png(path[:-4] + ".png") - ref_png)
    off = int(np.count_nonzero(levels))
    print(f"{path}: max |diff| vs {sys.argv[1]} = {diff:.3e}; PNG: {off} of {levels.size} "
          f"pixels differ, by at most {int(levels.max())} level")
    assert diff <= CROSS_PLATFORM_TOL, f"{path} differs by {diff} > {CROSS_PLATFORM_TOL}"
    assert levels.max() <= MAX_LEVEL_DIFF, f"{path}.png: a pixel {levels.max()} levels apart"
    assert off <= MAX_PIXELS_OFF_BY_ONE, f"{path}.png: {off} pixels differ"
print(f"cross-platform: {len(sys.argv) - 2} comparisons, worst {worst:.3e} <= {CROSS_PLATFORM_TOL}")
