//! Hand-written CPU kernels for the two operations that dominate the small UNets' time in
//! tract 0.23.9 (see `edge-sample bench --profile`):
//!
//! - **direct convolution**, stride 1, NCHW, f32: tract lowers a 3×3 conv to lazy im2col + a
//!   matrix product whose row tile (16 on AVX2) is mostly padding when a layer has 10–40 output
//!   channels, plus an explicit `Pad` node. Here each output tile is `CB` channels × `XT`
//!   pixels of one row, accumulated in registers over (input channel, ky, kx) from a
//!   zero-bordered copy of the input, so no tile is wasted on channels and padding costs one
//!   copy.
//! - **layer normalisation** over the trailing axes: tract expands ONNX `LayerNormalization`
//!   into ~9 nodes (two reductions, a broadcast chain); here it is two passes over the data.
//!
//! Each kernel has a portable reference (plain loops, f64 accumulation) that the tests compare
//! against. The fast paths are the same Rust code compiled for the CPU's vector unit: AVX2+FMA
//! on x86-64 (detected at run time), NEON with FMA on aarch64 (always present). Summation order
//! inside a pixel does not depend on the vector width, so x86-64 with FMA and aarch64 give
//! bit-identical results.
//!
//! `EDGE_SAMPLE_KERNELS` overrides the choice: `auto` (default), `portable` (no SIMD target
//! features, plain multiply + add), or `tract` (leave tract's own lowering).

use std::cell::RefCell;
use std::sync::OnceLock;

/// Which implementation the model loader wires in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// tract's own lowering (no rewrite).
    Tract,
    /// Our kernels without SIMD target features (separate multiply and add).
    Portable,
    /// Our kernels for the CPU's vector unit with fused multiply-add.
    Native,
}

impl Kernels {
    /// The choice for this process: `EDGE_SAMPLE_KERNELS`, else the best this CPU runs.
    /// An unknown value is reported once and treated as `auto`.
    pub fn selected() -> Kernels {
        static CHOICE: OnceLock<Kernels> = OnceLock::new();
        *CHOICE.get_or_init(|| {
            let var = std::env::var("EDGE_SAMPLE_KERNELS").unwrap_or_default();
            match var.as_str() {
                "tract" => Kernels::Tract,
                "portable" => Kernels::Portable,
                "" | "auto" => Kernels::best(),
                other => {
                    eprintln!(
                        "warning: EDGE_SAMPLE_KERNELS={other:?} is not one of auto, portable, tract; using auto"
                    );
                    Kernels::best()
                }
            }
        })
    }

    /// The fastest implementation this CPU can run.
    pub fn best() -> Kernels {
        if has_native_fma() {
            Kernels::Native
        } else {
            Kernels::Portable
        }
    }

    /// A short name for logs and `bench`.
    pub fn describe(self) -> &'static str {
        match self {
            Kernels::Tract => "tract",
            Kernels::Portable => "edge-sample portable",
            Kernels::Native if cfg!(target_arch = "aarch64") => "edge-sample neon+fma",
            Kernels::Native => "edge-sample avx2+fma",
        }
    }
}

/// Whether the native (SIMD + FMA) build of the kernels can run here.
pub fn has_native_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Geometry of a stride-1, dilation-1, single-group 2-D convolution on NCHW data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    /// Zero padding: top, left, bottom, right.
    pub pad: [usize; 4],
}

impl ConvShape {
    pub fn out_h(&self) -> usize {
        self.h + self.pad[0] + self.pad[2] + 1 - self.kh
    }
    pub fn out_w(&self) -> usize {
        self.w + self.pad[1] + self.pad[3] + 1 - self.kw
    }
    /// Whether the padded input is at least as large as the kernel.
    pub fn is_valid(&self) -> bool {
        self.ci > 0
            && self.co > 0
            && self.kh > 0
            && self.kw > 0
            && self.h + self.pad[0] + self.pad[2] >= self.kh
            && self.w + self.pad[1] + self.pad[3] >= self.kw
    }
}

/// Output pixels per register tile: 8 for narrow rows, 16 otherwise.
fn tile_width(out_w: usize) -> usize {
    if out_w <= 8 {
        8
    } else {
        16
    }
}

/// Output channels per register tile, so that a tile holds 64 accumulators.
fn channel_block(xt: usize) -> usize {
    64 / xt
}

/// Weights and bias laid out for the tile loop: `[co / CB][ci][kh][kw][CB]`, output channels
/// padded with zeros up to a multiple of CB.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedConv {
    pub shape: ConvShape,
    xt: usize,
    cb: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedConv {
    /// `weights` in OIHW order (`co × ci × kh × kw`), `bias` per output channel (or empty).
    pub fn new(shape: ConvShape, weights: &[f32], bias: &[f32]) -> PackedConv {
        assert!(shape.is_valid(), "invalid convolution {shape:?}");
        let ConvShape { ci, co, kh, kw, .. } = shape;
        assert_eq!(weights.len(), co * ci * kh * kw, "weights for {shape:?}");
        assert!(bias.is_empty() || bias.len() == co, "bias for {shape:?}");
        let xt = tile_width(shape.out_w());
        let cb = channel_block(xt);
        let blocks = co.div_ceil(cb);
        let taps = ci * kh * kw;
        let mut packed = vec![0.0f32; blocks * taps * cb];
        for o in 0..co {
            let (blk, j) = (o / cb, o % cb);
            for t in 0..taps {
                packed[(blk * taps + t) * cb + j] = weights[o * taps + t];
            }
        }
        let mut b = vec![0.0f32; blocks * cb];
        b[..bias.len()].copy_from_slice(bias);
        PackedConv {
            shape,
            xt,
            cb,
            weights: packed,
            bias: b,
        }
    }

    /// Width of the zero-bordered input rows: whole tiles plus the kernel's reach.
    fn padded_w(&self) -> usize {
        self.shape.out_w().div_ceil(self.xt) * self.xt + self.shape.kw - 1
    }
    fn padded_h(&self) -> usize {
        self.shape.h + self.shape.pad[0] + self.shape.pad[2]
    }

    /// `x`: `n × ci × h × w`; `out`: `n × co × out_h × out_w`.
    pub fn run(&self, kernels: Kernels, x: &[f32], out: &mut [f32]) {
        let s = &self.shape;
        let n = x.len() / (s.ci * s.h * s.w);
        assert_eq!(x.len(), n * s.ci * s.h * s.w, "input length for {s:?}");
        assert_eq!(
            out.len(),
            n * s.co * s.out_h() * s.out_w(),
            "output length for {s:?}"
        );
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let need = s.ci * self.padded_h() * self.padded_w();
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let pad = &mut scratch[..need];
            let image_in = s.ci * s.h * s.w;
            let image_out = s.co * s.out_h() * s.out_w();
            for (xi, oi) in x
                .chunks_exact(image_in)
                .zip(out.chunks_exact_mut(image_out))
            {
                self.fill_padded(xi, pad);
                match kernels {
                    #[cfg(target_arch = "x86_64")]
                    Kernels::Native => unsafe { self.image_avx2(pad, oi) },
                    #[cfg(target_arch = "aarch64")]
                    Kernels::Native => self.image::<true>(pad, oi),
                    _ => self.image::<false>(pad, oi),
                }
            }
        });
    }

    /// Copies one image into `pad` with zero borders: `ci × padded_h × padded_w`.
    fn fill_padded(&self, x: &[f32], pad: &mut [f32]) {
        let s = &self.shape;
        let (hp, wp) = (self.padded_h(), self.padded_w());
        for (c, plane) in pad.chunks_exact_mut(hp * wp).enumerate() {
            let src = &x[c * s.h * s.w..][..s.h * s.w];
            plane[..s.pad[0] * wp].fill(0.0);
            for (y, row) in plane[s.pad[0] * wp..][..s.h * wp]
                .chunks_exact_mut(wp)
                .enumerate()
            {
                row[..s.pad[1]].fill(0.0);
                row[s.pad[1]..s.pad[1] + s.w].copy_from_slice(&src[y * s.w..][..s.w]);
                row[s.pad[1] + s.w..].fill(0.0);
            }
            plane[(s.pad[0] + s.h) * wp..].fill(0.0);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn image_avx2(&self, pad: &[f32], out: &mut [f32]) {
        self.image::<true>(pad, out)
    }

    #[inline(always)]
    fn image<const FMA: bool>(&self, pad: &[f32], out: &mut [f32]) {
        match (self.cb, self.xt) {
            (4, 16) => self.image_tiles::<4, 16, FMA>(pad, out),
            (8, 8) => self.image_tiles::<8, 8, FMA>(pad, out),
            other => unreachable!("tile {other:?}"),
        }
    }

    #[inline(always)]
    fn image_tiles<const CB: usize, const XT: usize, const FMA: bool>(
        &self,
        pad: &[f32],
        out: &mut [f32],
    ) {
        let s = &self.shape;
        let (ho, wo) = (s.out_h(), s.out_w());
        let (hp, wp) = (self.padded_h(), self.padded_w());
        let taps = s.ci * s.kh * s.kw;
        for (blk, (wblk, bblk)) in self
            .weights
            .chunks_exact(taps * CB)
            .zip(self.bias.chunks_exact(CB))
            .enumerate()
        {
            let co0 = blk * CB;
            let valid_c = CB.min(s.co - co0);
            for y in 0..ho {
                for x0 in (0..wo).step_by(XT) {
                    let mut acc = [[0.0f32; XT]; CB];
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = [bblk[j]; XT];
                    }
                    for c in 0..s.ci {
                        for ky in 0..s.kh {
                            let row = &pad[c * hp * wp + (y + ky) * wp + x0..];
                            for kx in 0..s.kw {
                                let r: &[f32; XT] = row[kx..kx + XT].try_into().unwrap();
                                let wt: &[f32; CB] = wblk[((c * s.kh + ky) * s.kw + kx) * CB..]
                                    [..CB]
                                    .try_into()
                                    .unwrap();
                                for j in 0..CB {
                                    for i in 0..XT {
                                        acc[j][i] = if FMA {
                                            wt[j].mul_add(r[i], acc[j][i])
                                        } else {
                                            acc[j][i] + wt[j] * r[i]
                                        };
                                    }
                                }
                            }
                        }
                    }
                    let valid_x = XT.min(wo - x0);
                    for (j, a) in acc.iter().enumerate().take(valid_c) {
                        out[((co0 + j) * ho + y) * wo + x0..][..valid_x]
                            .copy_from_slice(&a[..valid_x]);
                    }
                }
            }
        }
    }
}

thread_local! {
    /// The zero-bordered input copy: grows to the largest layer once per thread, then reused.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Reference convolution: plain loops, f64 sums, bounds checks instead of padding.
pub fn conv_reference(shape: &ConvShape, x: &[f32], weights: &[f32], bias: &[f32]) -> Vec<f32> {
    let s = shape;
    let (ho, wo) = (s.out_h(), s.out_w());
    let n = x.len() / (s.ci * s.h * s.w);
    let mut out = vec![0.0f32; n * s.co * ho * wo];
    for b in 0..n {
        for o in 0..s.co {
            for y in 0..ho {
                for xo in 0..wo {
                    let mut sum = bias.get(o).copied().unwrap_or(0.0) as f64;
                    for c in 0..s.ci {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (y + ky) as isize - s.pad[0] as isize;
                                let ix = (xo + kx) as isize - s.pad[1] as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((b * s.ci + c) * s.h + iy as usize) * s.w + ix as usize];
                                let wv = weights[((o * s.ci + c) * s.kh + ky) * s.kw + kx];
                                sum += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((b * s.co + o) * ho + y) * wo + xo] = sum as f32;
                }
            }
        }
    }
    out
}

/// Layer normalisation in place over rows of `inner` values: `(x − mean) / √(var + eps) ·
/// scale + bias`, statistics in f32 with 8 running sums per pass.
pub fn layer_norm(x: &mut [f32], scale: &[f32], bias: Option<&[f32]>, eps: f32, kernels: Kernels) {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        Kernels::Native => unsafe { layer_norm_avx2(x, scale, bias, eps) },
        _ => layer_norm_impl(x, scale, bias, eps),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn layer_norm_avx2(x: &mut [f32], scale: &[f32], bias: Option<&[f32]>, eps: f32) {
    layer_norm_impl(x, scale, bias, eps)
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

    /// Max |fast − reference| allowed per output, relative to the sum of |x·w| terms of that
    /// output (f32 accumulation over ≤ 720 products: a few ulps of the magnitude).
    const CONV_REL_TOL: f64 = 1e-5;
    /// Max |fast − reference| for layer norm outputs of unit scale (f32 statistics).
    const LN_ABS_TOL: f32 = 2e-5;

    /// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn check_conv(shape: ConvShape, n: usize, kernels: Kernels) {
        let x = values(n * shape.ci * shape.h * shape.w, 1);
        let w = values(shape.co * shape.ci * shape.kh * shape.kw, 2);
        let b = values(shape.co, 3);
        let want = conv_reference(&shape, &x, &w, &b);
        let packed = PackedConv::new(shape, &w, &b);
        let mut got = vec![f32::NAN; want.len()];
        packed.run(kernels, &x, &mut got);
        // The magnitude bound of each output: Σ|x||w| + |b| ≤ ci·kh·kw + 1 for values in [-1, 1].
        let bound = (shape.ci * shape.kh * shape.kw + 1) as f64;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                ((*g - *w) as f64).abs() <= CONV_REL_TOL * bound,
                "{shape:?} n={n} {kernels:?}: output {i}: {g} vs reference {w}"
            );
        }
    }

    fn shapes() -> Vec<ConvShape> {
        let s = |ci, co, h, w, k, p| ConvShape {
            ci,
            co,
            h,
            w,
            kh: k,
            kw: k,
            pad: [p; 4],
        };
        vec![
            s(1, 10, 28, 28, 3, 1),  // first conv of the digit model
            s(10, 10, 28, 28, 3, 1), // 16-pixel tiles with a 12-pixel tail, 4-channel blocks + 2
            s(20, 40, 14, 14, 3, 1),
            s(40, 80, 7, 7, 3, 1), // 8-pixel tiles, 8-channel blocks
            s(80, 40, 4, 4, 3, 1),
            s(3, 5, 9, 17, 3, 0), // no padding
            s(2, 3, 6, 5, 5, 2),  // 5×5
            s(4, 7, 5, 33, 1, 0), // 1×1
            s(3, 3, 2, 2, 3, 1),  // output as small as the input
            ConvShape {
                ci: 2,
                co: 9,
                h: 7,
                w: 11,
                kh: 3,
                kw: 2,
                pad: [0, 1, 2, 0],
            }, // asymmetric
        ]
    }

    #[test]
    fn conv_matches_reference_portable() {
        for s in shapes() {
            check_conv(s, 1, Kernels::Portable);
            check_conv(s, 3, Kernels::Portable);
        }
    }

    #[test]
    fn conv_matches_reference_native() {
        if !has_native_fma() {
            eprintln!("no native FMA kernels on this CPU; nothing to compare");
            return;
        }
        for s in shapes() {
            check_conv(s, 1, Kernels::Native);
            check_conv(s, 2, Kernels::Native);
        }
    }

    #[test]
    fn conv_delta_input_gives_the_flipped_kernel() {
        // Closed form: a single 1 at (cy, cx) of channel c produces w[o][c][cy+p-y][cx+p-x] + b.
        let shape = ConvShape {
            ci: 2,
            co: 3,
            h: 6,
            w: 6,
            kh: 3,
            kw: 3,
            pad: [1; 4],
        };
        let w = values(3 * 2 * 9, 7);
        let b = [0.5, -0.25, 0.0];
        let mut x = vec![0.0f32; 2 * 36];
        x[36 + 2 * 6 + 3] = 1.0; // channel 1, row 2, column 3
        let mut out = vec![0.0f32; 3 * 36];
        PackedConv::new(shape, &w, &b).run(Kernels::best(), &x, &mut out);
        for o in 0..3 {
            for y in 0..6 {
                for xo in 0..6 {
                    let (ky, kx) = (2 + 1 - y as isize, 3 + 1 - xo as isize);
                    let expect = if (0..3).contains(&ky) && (0..3).contains(&kx) {
                        w[((o * 2 + 1) * 3 + ky as usize) * 3 + kx as usize] + b[o]
                    } else {
                        b[o]
                    };
                    assert_eq!(out[(o * 6 + y) * 6 + xo], expect, "o={o} y={y} x={xo}");
                }
            }
        }
    }

    #[test]
    fn native_and_portable_differ_only_by_rounding() {
        // The two differ only by fused vs separate multiply-add: within the named tolerance.
        if !has_native_fma() {
            return;
        }
        let s = shapes()[2];
        let x = values(s.ci * s.h * s.w, 11);
        let w = values(s.co * s.ci * 9, 12);
        let p = PackedConv::new(s, &w, &[]);
        let mut a = vec![0.0; s.co * s.out_h() * s.out_w()];
        let mut b = a.clone();
        p.run(Kernels::Native, &x, &mut a);
        p.run(Kernels::Portable, &x, &mut b);
        let bound = (s.ci * 9) as f64;
        for (u, v) in a.iter().zip(&b) {
            assert!(((u - v) as f64).abs() <= CONV_REL_TOL * bound);
        }
    }

    #[test]
    fn layer_norm_matches_reference() {
        for (rows, inner) in [(1, 10 * 28 * 28), (3, 80 * 7 * 7), (2, 13), (1, 1)] {
            let x = values(rows * inner, 5);
            let scale = values(inner, 6);
            let bias = values(inner, 8);
            for bias in [Some(&bias[..]), None] {
                let want = layer_norm_reference(&x, &scale, bias, 1e-5);
                for k in [Kernels::Portable, Kernels::best()] {
                    let mut got = x.clone();
                    layer_norm(&mut got, &scale, bias, 1e-5, k);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= LN_ABS_TOL,
                            "rows={rows} inner={inner} {k:?}: {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn layer_norm_closed_form() {
        // Row [1, 2, 3, 4]: mean 2.5, variance 1.25; with eps 0 each value is (v − 2.5)/√1.25.
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], Some(&[0.0; 4]), 0.0, Kernels::best());
        let s = 1.25f32.sqrt();
        for (v, want) in x.iter().zip([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]) {
            assert!((v - want).abs() <= LN_ABS_TOL, "{v} vs {want}");
        }
    }
}
