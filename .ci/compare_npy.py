"""Compare edge-sample outputs (.npy, model range) from several platforms.

Same seed, same model: the noise stream is bit-identical everywhere, so the only differences
are floating-point rounding in the engine's kernels (FMA, SIMD widths, summation order).
CROSS_PLATFORM_TOL bounds them after 20 sampler steps; the pixels (8-bit) may differ by 1.
"""
import sys

import numpy as np

CROSS_PLATFORM_TOL = 1e-4  # measured 5.4e-6 (x86 vs qemu A72 and A76, 4 digits, 20 steps)

ref = np.load(sys.argv[1])
worst = 0.0
for path in sys.argv[2:]:
    other = np.load(path)
    assert other.shape == ref.shape, f"{path}: shape {other.shape} vs {ref.shape}"
    diff = float(np.max(np.abs(other - ref)))
    worst = max(worst, diff)
    print(f"{path}: max |diff| vs {sys.argv[1]} = {diff:.3e}")
    assert diff <= CROSS_PLATFORM_TOL, f"{path} differs by {diff} > {CROSS_PLATFORM_TOL}"
print(f"cross-platform: {len(sys.argv) - 2} comparisons, worst {worst:.3e} <= {CROSS_PLATFORM_TOL}")
