//! Layer and instance normalisation: tract expands ONNX `LayerNormalization` into ~9 nodes
//! (two reductions, a broadcast chain); here it is two passes over the data, with statistics
//! in f32 summed in 8 fixed lanes (the same bits whatever the vector unit), and an f64
//! reference.

use crate::isa::{dispatch, Isa};

/// Layer normalisation in place over rows of `inner` values: `(x − mean) / √(var + eps) ·
/// scale + bias`, statistics in f32 with 8 running sums per pass.
pub fn layer_norm(x: &mut [f32], scale: &[f32], bias: Option<&[f32]>, eps: f32, kernels: Isa) {
    dispatch!(
        build(kernels),
        [Avx2],
        (x: &mut [f32], scale: &[f32], bias: Option<&[f32]>, eps: f32) {
            layer_norm_impl(x, scale, bias, eps)
        }
    )
}

/// The build the norms run for `kernels`: their 8 running sums fill one 256-bit vector, so
/// AVX-512 runs the AVX2 build (as it always has: the same bits either way).
fn build(kernels: Isa) -> Isa {
    match kernels {
        Isa::Avx512 => Isa::Avx2,
        k => k,
    }
}

#[inline(always)]
fn layer_norm_impl(x: &mut [f32], scale: &[f32], bias: Option<&[f32]>, eps: f32) {
    let inner = scale.len();
    assert!(
        inner > 0 && x.len().is_multiple_of(inner),
        "layer norm rows"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), inner, "layer norm bias");
    }
    for row in x.chunks_exact_mut(inner) {
        let mean = lane_sum(row, |v| v) / inner as f32;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / inner as f32;
        let inv = 1.0 / (var + eps).sqrt();
        match bias {
            Some(b) => {
                for ((v, s), b) in row.iter_mut().zip(scale).zip(b) {
                    *v = (*v - mean) * inv * s + b;
                }
            }
            None => {
                for (v, s) in row.iter_mut().zip(scale) {
                    *v = (*v - mean) * inv * s;
                }
            }
        }
    }
}

/// Instance normalisation in place (GroupNorm as exported by PyTorch): `x` is rows of
/// `inner` values (one per batch item and channel, channels cycling); row r is normalised over
/// itself, then scaled by `scale[r % c]` and shifted by `bias[r % c]`. Statistics as in
/// [`layer_norm`].
pub fn instance_norm(
    x: &mut [f32],
    inner: usize,
    scale: &[f32],
    bias: &[f32],
    eps: f32,
    kernels: Isa,
) {
    assert!(
        inner > 0 && x.len().is_multiple_of(inner * scale.len().max(1)),
        "instance norm rows"
    );
    instance_norm_rows(x, 0, inner, scale, bias, eps, kernels)
}

/// [`instance_norm`] of whole rows `first_row`, `first_row + 1`, … of a larger tensor (row r
/// takes scale and bias of channel r mod c): a share of the rows for one thread.
pub fn instance_norm_rows(
    x: &mut [f32],
    first_row: usize,
    inner: usize,
    scale: &[f32],
    bias: &[f32],
    eps: f32,
    kernels: Isa,
) {
    group_norm_rows(x, first_row, inner, 1, scale, bias, eps, kernels)
}

/// Group normalisation in place, its per-channel affine included, over whole groups
/// `first_group`, `first_group + 1`, … of a larger tensor (a share for one thread): `x` is
/// groups of `channels_per_group` planes of `plane` values each (NCHW), groups cycling over
/// the `scale.len() / channels_per_group` groups of an image. Each group is normalised over
/// all of its values, then each plane (channel c) is scaled by `scale[c]` and shifted by
/// `bias[c]`. Statistics as in [`layer_norm`]; `channels_per_group` 1 is [`instance_norm`].
#[allow(clippy::too_many_arguments)]
pub fn group_norm_rows(
    x: &mut [f32],
    first_group: usize,
    plane: usize,
    channels_per_group: usize,
    scale: &[f32],
    bias: &[f32],
    eps: f32,
    kernels: Isa,
) {
    dispatch!(
        build(kernels),
        [Avx2],
        (
            x: &mut [f32],
            first_group: usize,
            plane: usize,
            channels_per_group: usize,
            scale: &[f32],
            bias: &[f32],
            eps: f32,
        ) {
            group_norm_impl(x, first_group, plane, channels_per_group, scale, bias, eps)
        }
    )
}

#[inline(always)]
fn group_norm_impl(
    x: &mut [f32],
    first_group: usize,
    plane: usize,
    channels_per_group: usize,
    scale: &[f32],
    bias: &[f32],
    eps: f32,
) {
    let c = scale.len();
    let cpg = channels_per_group;
    assert!(
        cpg > 0 && c > 0 && c.is_multiple_of(cpg) && bias.len() == c,
        "group norm scale and bias"
    );
    let inner = plane * cpg;
    assert!(
        plane > 0 && x.len().is_multiple_of(inner),
        "group norm rows"
    );
    let groups = c / cpg;
    for (r, row) in x.chunks_exact_mut(inner).enumerate() {
        let mean = lane_sum(row, |v| v) / inner as f32;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / inner as f32;
        let sigma = (var + eps).sqrt();
        let first_channel = (first_group + r) % groups * cpg;
        for (j, p) in row.chunks_exact_mut(plane).enumerate() {
            let k = scale[first_channel + j] / sigma;
            let b = bias[first_channel + j];
            for v in p.iter_mut() {
                *v = (*v - mean) * k + b;
            }
        }
    }
}

/// Sum of `f(v)` with 8 independent running sums (vectorisable; order fixed by the index).
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            lanes[i] += f(c[i]);
        }
    }
    for (i, &v) in chunks.remainder().iter().enumerate() {
        lanes[i] += f(v);
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

/// Reference layer normalisation: f64 statistics.
pub fn layer_norm_reference(x: &[f32], scale: &[f32], bias: Option<&[f32]>, eps: f32) -> Vec<f32> {
    let inner = scale.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(inner) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, &v) in row.iter().enumerate() {
            let b = bias.map_or(0.0, |b| b[i] as f64);
            out.push(((v as f64 - mean) * inv * scale[i] as f64 + b) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{isas, values, Errors};

    /// Largest |fast − reference| of an output over its own error scale
    /// |s|·(|x − μ| + mean|x|)/σ + |b|: the f32 sums' rounding moves the mean by up to
    /// γ_n·mean|x| and σ relatively, which (x − μ)/σ·s + b carries into each output at those
    /// weights (σ = √(var + eps), μ, mean|x| in f64). For layer norm; measured worst (x86-64
    /// AVX-512, AVX2, portable; aarch64 NEON, portable under qemu Cortex-A72; the same bits
    /// on every set): 1.57e-7.
    const NORM_MAX_TOL: f64 = 5e-7;
    /// The same ratio's mean over a run's outputs. Measured worst (as above): 3.16e-8.
    const NORM_MEAN_TOL: f64 = 1e-7;
    /// [`NORM_MAX_TOL`] for instance norm (35-value rows). Measured worst (as above): 1.25e-7.
    const INSTANCE_MAX_TOL: f64 = 4e-7;
    /// Its mean. Measured worst (as above): 1.78e-8.
    const INSTANCE_MEAN_TOL: f64 = 5.5e-8;
    /// [`NORM_MAX_TOL`] for the closed form (row [1, 2, 3, 4]). Measured worst (as above):
    /// 2.12e-8.
    const CLOSED_FORM_MAX_TOL: f64 = 6.5e-8;
    /// Its mean. Measured worst (as above): 1.16e-8.
    const CLOSED_FORM_MEAN_TOL: f64 = 3.5e-8;

    /// Each output's error scale (see [`NORM_MAX_TOL`]) for rows of `scale.len()` values.
    fn error_scale(x: &[f32], scale: &[f32], bias: Option<&[f32]>, eps: f32) -> Vec<f64> {
        let inner = scale.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(inner) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
            let mean_abs = row.iter().map(|&v| (v as f64).abs()).sum::<f64>() / inner as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner as f64;
            let sigma = (var + eps as f64).sqrt();
            for (i, &v) in row.iter().enumerate() {
                let b = bias.map_or(0.0, |b| (b[i] as f64).abs());
                out.push(
                    (scale[i] as f64).abs() * ((v as f64 - mean).abs() + mean_abs) / sigma + b,
                );
            }
        }
        out
    }

    /// `got`'s errors, asserted within `limits` (max, mean).
    fn assert_close(
        got: &[f32],
        want: &[f64],
        scale: &[f64],
        (max, mean): (f64, f64),
        what: &str,
    ) -> Errors {
        let e = Errors::of(got, want, scale);
        assert!(
            e.max <= max && e.mean <= mean,
            "{what}: max |error|/scale {:.2e} (output {}: {} vs reference {}), mean {:.2e}",
            e.max,
            e.at,
            got[e.at],
            want[e.at],
            e.mean
        );
        e
    }

    #[test]
    fn layer_norm_matches_reference() {
        for k in isas() {
            let mut worst = Errors::default();
            for (rows, inner) in [(1, 10 * 28 * 28), (3, 80 * 7 * 7), (2, 13), (1, 1)] {
                let x = values(rows * inner, 5);
                let scale = values(inner, 6);
                let bias = values(inner, 8);
                for bias in [Some(&bias[..]), None] {
                    let want: Vec<f64> = layer_norm_reference(&x, &scale, bias, 1e-5)
                        .into_iter()
                        .map(f64::from)
                        .collect();
                    let err_scale = error_scale(&x, &scale, bias, 1e-5);
                    let mut got = x.clone();
                    layer_norm(&mut got, &scale, bias, 1e-5, k);
                    let what = format!("rows={rows} inner={inner} bias {} {k:?}", bias.is_some());
                    let limits = (NORM_MAX_TOL, NORM_MEAN_TOL);
                    worst = worst.worst(assert_close(&got, &want, &err_scale, limits, &what));
                }
            }
            eprintln!(
                "layer norm {k:?}: measured |error|/scale max {:.2e} mean {:.2e}",
                worst.max, worst.mean
            );
        }
    }

    /// Rows offset by 1000 (below): the mean's rounding shifts every output of a row alike,
    /// so max ≈ mean. Measured 1.63e-7 / 1.63e-7 (x86: portable, AVX2, AVX-512; qemu A76: NEON). The
    /// Σv² − nμ² variance (a surviving mutant before this test) gives 8.5e-3.
    const OFFSET_MAX_TOL: f64 = 5e-7;
    const OFFSET_MEAN_TOL: f64 = 5e-7;

    #[test]
    fn rows_far_from_zero_keep_their_variance() {
        // Rows of 1000 + small values: the variance as Σ(v − μ)² stays accurate, while
        // Σv² − nμ² (equal in exact arithmetic) loses it to cancellation in f32.
        let inner = 10 * 28 * 28;
        let x: Vec<f32> = values(inner, 61).iter().map(|v| 1000.0 + v).collect();
        let scale = values(inner, 62);
        let one = vec![scale[0]; inner];
        let reference = |s: &[f32]| -> Vec<f64> {
            layer_norm_reference(&x, s, None, 1e-5)
                .into_iter()
                .map(f64::from)
                .collect()
        };
        let limits = (OFFSET_MAX_TOL, OFFSET_MEAN_TOL);
        for k in isas() {
            let mut got = x.clone();
            layer_norm(&mut got, &scale, None, 1e-5, k);
            let err = error_scale(&x, &scale, None, 1e-5);
            let e = assert_close(
                &got,
                &reference(&scale),
                &err,
                limits,
                &format!("layer {k:?}"),
            );
            let mut inst = x.clone();
            instance_norm(&mut inst, inner, &scale[..1], &[0.0], 1e-5, k);
            let err = error_scale(&x, &one, None, 1e-5);
            let i = assert_close(
                &inst,
                &reference(&one),
                &err,
                limits,
                &format!("instance {k:?}"),
            );
            eprintln!(
                "rows at 1000, {k:?}: layer norm max {:.2e} mean {:.2e}, instance norm max {:.2e} mean {:.2e}",
                e.max, e.mean, i.max, i.mean
            );
        }
    }

    #[test]
    fn instance_norm_matches_reference() {
        // n = 2, c = 3, 5×7 planes: each plane is a layer-norm row with a scalar affine.
        let (n, c, inner) = (2, 3, 35);
        let x = values(n * c * inner, 51);
        let scale = values(c, 52);
        let bias = values(c, 53);
        let (mut want, mut err_scale) = (Vec::new(), Vec::new());
        for (r, row) in x.chunks(inner).enumerate() {
            let s = vec![scale[r % c]; inner];
            let b = vec![bias[r % c]; inner];
            want.extend(
                layer_norm_reference(row, &s, Some(&b), 1e-5)
                    .into_iter()
                    .map(f64::from),
            );
            err_scale.extend(error_scale(row, &s, Some(&b), 1e-5));
        }
        for k in isas() {
            let mut got = x.clone();
            instance_norm(&mut got, inner, &scale, &bias, 1e-5, k);
            let limits = (INSTANCE_MAX_TOL, INSTANCE_MEAN_TOL);
            let e = assert_close(&got, &want, &err_scale, limits, &format!("{k:?}"));
            eprintln!(
                "instance norm {k:?}: measured |error|/scale max {:.2e} mean {:.2e}",
                e.max, e.mean
            );
            // A thread's share of rows (starting mid-image, at channel 1) gives the same bits.
            let mut parts = x.clone();
            let (head, tail) = parts.split_at_mut(4 * inner);
            instance_norm_rows(head, 0, inner, &scale, &bias, 1e-5, k);
            instance_norm_rows(tail, 4, inner, &scale, &bias, 1e-5, k);
            assert!(parts == got, "{k:?}: rows in two shares");
        }
    }

    /// [`NORM_MAX_TOL`] for group norm (groups of 2 and 4 channels of 5×7 planes, 70 and 140
    /// values). Measured worst 9.33e-8 (x86-64: portable, AVX2).
    const GROUP_MAX_TOL: f64 = 2.8e-7;
    /// Its mean. Measured worst 1.91e-8 (as above).
    const GROUP_MEAN_TOL: f64 = 5.7e-8;

    #[test]
    fn group_norm_matches_reference() {
        // n = 2, c = 8, 5×7 planes; a group of k channels is one layer-norm row of k planes,
        // then channel c's own scale and bias (GroupNorm's affine).
        let (n, c, plane) = (2, 8, 35);
        let x = values(n * c * plane, 71);
        let scale = values(c, 72);
        let bias = values(c, 73);
        for cpg in [2, 4] {
            let inner = cpg * plane;
            let (mut want, mut err_scale) = (Vec::new(), Vec::new());
            for (r, row) in x.chunks(inner).enumerate() {
                let first = (r % (c / cpg)) * cpg;
                let s: Vec<f32> = (0..inner).map(|i| scale[first + i / plane]).collect();
                let b: Vec<f32> = (0..inner).map(|i| bias[first + i / plane]).collect();
                want.extend(
                    layer_norm_reference(row, &s, Some(&b), 1e-5)
                        .into_iter()
                        .map(f64::from),
                );
                err_scale.extend(error_scale(row, &s, Some(&b), 1e-5));
            }
            for k in isas() {
                let mut got = x.clone();
                group_norm_rows(&mut got, 0, plane, cpg, &scale, &bias, 1e-5, k);
                let limits = (GROUP_MAX_TOL, GROUP_MEAN_TOL);
                let what = format!("{cpg} channels per group {k:?}");
                let e = assert_close(&got, &want, &err_scale, limits, &what);
                eprintln!(
                    "group norm, {cpg} channels per group, {k:?}: measured |error|/scale max {:.2e} mean {:.2e}",
                    e.max, e.mean
                );
                // A thread's share of groups (starting mid-image) gives the same bits.
                let mut parts = x.clone();
                let (head, tail) = parts.split_at_mut(3 * inner);
                group_norm_rows(head, 0, plane, cpg, &scale, &bias, 1e-5, k);
                group_norm_rows(tail, 3, plane, cpg, &scale, &bias, 1e-5, k);
                assert!(parts == got, "{what}: groups in two shares");
            }
        }
    }

    #[test]
    fn layer_norm_closed_form() {
        // Row [1, 2, 3, 4]: mean 2.5, variance 1.25; with eps 0 each value is (v − 2.5)/√1.25.
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let want: Vec<f64> = x
            .iter()
            .map(|&v| (v as f64 - 2.5) / 1.25f64.sqrt())
            .collect();
        let err_scale = error_scale(&x, &[1.0; 4], Some(&[0.0; 4]), 0.0);
        for k in isas() {
            let mut got = x;
            layer_norm(&mut got, &[1.0; 4], Some(&[0.0; 4]), 0.0, k);
            let limits = (CLOSED_FORM_MAX_TOL, CLOSED_FORM_MEAN_TOL);
            let e = assert_close(
                &got,
                &want,
                &err_scale,
                limits,
                &format!("closed form {k:?}"),
            );
            eprintln!(
                "layer norm closed form {k:?}: measured |error|/scale max {:.2e} mean {:.2e}",
                e.max, e.mean
            );
        }
    }
}
