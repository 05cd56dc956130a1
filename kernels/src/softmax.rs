//! Softmax over rows, with a polynomial e^x ([`exp_approx`]) that gives the same bits on
//! every CPU.

use crate::isa::{dispatch, Isa};

/// Softmax in place over rows of `inner` values: `exp(x − max) / Σ exp(x − max)`, with
/// [`exp_approx`] (fused multiply-adds, exactly rounded wherever they run: the same bits on
/// every CPU; the portable set on x86 calls libm's `fmaf`, slowly).
pub fn softmax(x: &mut [f32], inner: usize, kernels: Isa) {
    assert!(inner > 0 && x.len().is_multiple_of(inner), "softmax rows");
    dispatch!(kernels, [Avx512, Avx2], (x: &mut [f32], inner: usize) {
        softmax_impl(x, inner)
    })
}

#[inline(always)]
fn softmax_impl(x: &mut [f32], inner: usize) {
    const L: usize = 16;
    for row in x.chunks_exact_mut(inner) {
        let mut lanes = [f32::NEG_INFINITY; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        let mut sums = [0.0f32; L];
        let mut chunks = row.chunks_exact_mut(L);
        for c in &mut chunks {
            for i in 0..L {
                c[i] = exp_approx(c[i] - max);
                sums[i] += c[i];
            }
        }
        let mut sum = 0.0f32;
        for v in chunks.into_remainder() {
            *v = exp_approx(*v - max);
            sum += *v;
        }
        let inv = 1.0 / (sums.iter().sum::<f32>() + sum);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// e^x for x ≤ 0 (softmax after subtracting the row maximum), within [`EXP_REL_TOL`] of the
/// exact value down to e^-87 (inputs below are taken as −87: negligible next to the row
/// maximum's 1): 2^n · p(r) with n = round(x·log₂e), r = x − n·ln 2 in two parts
/// (Cody–Waite) and a degree-6 polynomial for e^r on |r| ≤ ln2/2 (Cephes' `expf`).
/// Relative error bound of [`exp_approx`] on [−87, 0]: measured 8.33e-8 on a 10⁶-point grid
/// (one scalar function with fused multiply-adds, exactly rounded everywhere: the same on
/// x86-64 and on aarch64 under qemu Cortex-A72), the bound ≈ 2.9× that (2 ulp).
pub const EXP_REL_TOL: f64 = 2.4e-7;

#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = if x < -87.0 { -87.0 } else { x };
    let n = x.mul_add(LOG2E, 0.5).floor();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_2e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let e = (p * r).mul_add(r, r) + 1.0;
    // 2^n built in the exponent field, without a float-to-int conversion (which does not
    // vectorise with Rust's saturating `as`): n + 127 ∈ [1, 255] lands in the low mantissa
    // bits of n + 127 + 1.5·2^23, and shifting by 23 moves it into the exponent.
    e * f32::from_bits((n + (127.0 + 12_582_912.0)).to_bits() << 23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{isas, values, Errors};

    /// Largest |fast − reference| of a softmax output y = e^(x − max)/Σ over its error scale
    /// y·(1 + |x − max|): the f32 subtraction x − max is off by up to half an ulp of |x − max|,
    /// which e^· turns into a relative error of |x − max|·2⁻²⁴; exp's own relative error, the
    /// f32 sum's (all terms positive: ≤ γ_n relative, n ≤ 256) and the final scaling's are
    /// relative to y. Relative, so that the smallest outputs (down to e^-24 here) are held as
    /// tightly as the largest. Measured worst (x86-64 AVX-512, AVX2, portable; aarch64 NEON,
    /// portable under qemu Cortex-A72; the same bits on every set): 2.04e-7.
    const SOFTMAX_MAX_TOL: f64 = 6e-7;
    /// The same ratio's mean over a row set's outputs. Measured worst (as above): 2.30e-8.
    const SOFTMAX_MEAN_TOL: f64 = 7e-8;

    #[test]
    fn exp_approx_is_within_its_bound() {
        let mut worst = 0.0f64;
        for i in 0..=1_000_000 {
            let x = -87.0 * i as f32 / 1e6;
            let want = (x as f64).exp();
            let rel = ((exp_approx(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
            assert!(rel <= EXP_REL_TOL, "exp({x}): {} vs {want}", exp_approx(x));
        }
        assert_eq!(exp_approx(0.0), 1.0);
        eprintln!("exp_approx: max relative error {worst:.2e}");
    }

    #[test]
    fn exp_below_its_range_is_clamped_to_e_to_the_minus_87() {
        // Softmax feeds x − max, which is below −87 wherever a row spans more than that; the
        // clamp keeps 2^n a normal float (n + 127 ≥ 1) instead of garbage bits.
        let floor = exp_approx(-87.0);
        let want = (-87.0f64).exp();
        assert!(
            ((floor as f64 - want) / want).abs() <= EXP_REL_TOL,
            "{floor} vs {want}"
        );
        for x in [-87.5f32, -88.0, -100.0, -1e4, f32::MIN, f32::NEG_INFINITY] {
            assert_eq!(exp_approx(x).to_bits(), floor.to_bits(), "exp({x})");
        }
    }

    #[test]
    fn softmax_matches_reference_and_is_the_same_on_every_kernel_set() {
        let mut worst = vec![Errors::default(); isas().len()];
        for inner in [1, 7, 16, 33, 256] {
            let x: Vec<f32> = values(3 * inner, inner as u64)
                .iter()
                .map(|v| v * 12.0)
                .collect();
            let (mut want, mut scale) = (vec![0.0f64; x.len()], vec![0.0f64; x.len()]);
            for (i, row) in x.chunks(inner).enumerate() {
                let max = row.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
                let total: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                for (j, &v) in row.iter().enumerate() {
                    let y = (v as f64 - max).exp() / total;
                    want[i * inner + j] = y;
                    scale[i * inner + j] = y * (1.0 + (v as f64 - max).abs());
                }
            }
            let mut first: Option<Vec<f32>> = None;
            for (j, k) in isas().into_iter().enumerate() {
                let mut got = x.clone();
                softmax(&mut got, inner, k);
                let e = Errors::of(&got, &want, &scale);
                assert!(
                    e.max <= SOFTMAX_MAX_TOL && e.mean <= SOFTMAX_MEAN_TOL,
                    "inner {inner} {k:?}: max |error|/scale {:.2e} ([{}]: {} vs {}), mean {:.2e}",
                    e.max,
                    e.at,
                    got[e.at],
                    want[e.at],
                    e.mean
                );
                worst[j] = worst[j].worst(e);
                match &first {
                    None => first = Some(got),
                    Some(f) => assert!(f == &got, "inner {inner}: {k:?} differs"),
                }
            }
        }
        for (k, w) in isas().into_iter().zip(worst) {
            eprintln!(
                "softmax {k:?}: measured |error|/(y·(1 + |x − max|)) max {:.2e} mean {:.2e}",
                w.max, w.mean
            );
        }
    }
}
