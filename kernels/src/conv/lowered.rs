//! Convolutions the direct kernel runs after rearranging their data: the ones tract would
//! otherwise hand to its matrix multiplier.
//!
//! - A strided convolution (a UNet's downsampler, 2×2 or 3×3 with stride 2) gathers the
//!   patches of its output pixels (`ci·kh·kw` rows of `out_h·out_w` values, "im2col") and runs
//!   them through a 1×1 [`PackedConv`] whose weights are the original ones read as
//!   `co × (ci·kh·kw)`: no repacking, the OIHW layout is already that matrix.
//! - A transposed convolution whose kernel equals its stride and has no padding (a UNet's
//!   2×2 stride-2 upsampler) gives each input pixel its own `kh × kw` block of outputs: a 1×1
//!   [`PackedConv`] with `co·kh·kw` output channels, then each value moved to its place
//!   ("depth to space") with the bias added.
//!
//! Sums run in the same order as in [`PackedConv`], so every kernel set gives the same bits.

use std::cell::RefCell;

use crate::conv::direct::PackedConv;
use crate::conv::shape::{BlockShape, ConvShape};
use crate::isa::Isa;
use crate::scratch::aligned;
use crate::team::{share, Team};
use crate::view::DisjointMut;

/// A strided convolution: im2col, then a 1×1 [`PackedConv`].
#[derive(Debug, Clone, PartialEq)]
pub struct StridedConv {
    pub shape: ConvShape,
    inner: PackedConv,
}

impl StridedConv {
    /// `weights` in OIHW order, `bias` per output channel (or empty).
    pub fn new(shape: ConvShape, weights: &[f32], bias: &[f32], kernels: Isa) -> Self {
        assert!(shape.is_valid(), "invalid convolution {shape:?}");
        let inner = ConvShape {
            ci: shape.ci * shape.kh * shape.kw,
            co: shape.co,
            h: shape.out_h(),
            w: shape.out_w(),
            kh: 1,
            kw: 1,
            stride: [1, 1],
            pad: [0; 4],
        };
        StridedConv {
            shape,
            inner: PackedConv::new(inner, weights, bias, kernels),
        }
    }

    pub fn tile(&self) -> (usize, usize) {
        self.inner.tile()
    }

    /// `x`: `n × ci × h × w`; `out`: `n × co × out_h × out_w`; `bias` as
    /// [`PackedConv::run_with_bias`].
    pub fn run_with_bias(&self, x: &[f32], out: &mut [f32], relu: bool, bias: Option<&[f32]>) {
        self.run_on(None, x, out, relu, bias)
    }

    /// As `run_with_bias`, the matrix product split between the threads of `team`.
    pub fn run_on(
        &self,
        team: Option<&Team>,
        x: &[f32],
        out: &mut [f32],
        relu: bool,
        bias: Option<&[f32]>,
    ) {
        let s = &self.shape;
        let image_in = s.ci * s.h * s.w;
        let n = x.len() / image_in;
        assert_eq!(x.len(), n * image_in, "input length for {s:?}");
        let rows_len = s.kh * s.kw * s.out_h() * s.out_w();
        GATHERED.with(|buf| {
            let mut buf = buf.borrow_mut();
            let patches = aligned(&mut buf, n * s.ci * rows_len);
            // Input planes (image · ci + c) spread over the team: each fills its own rows.
            let planes = n * s.ci;
            let dst = DisjointMut::new(&mut *patches);
            let part = |p: usize, parts: usize| {
                for plane in share(planes, p, parts) {
                    // SAFETY: plane `plane`'s rows, written by this part only.
                    let rows = unsafe { dst.slice_mut(plane * rows_len..(plane + 1) * rows_len) };
                    self.gather(&x[plane * s.h * s.w..][..s.h * s.w], rows);
                }
            };
            match team.filter(|t| t.threads() > 1 && planes > 1) {
                Some(team) => team.run(team.threads(), &|p| part(p, team.threads())),
                None => part(0, 1),
            }
            self.inner.run_on(team, patches, out, relu, bias);
        })
    }

    /// One input plane's rows of the patches: row (ky, kx), column (oy, ox) holds
    /// x[oy·sh + ky − top][ox·sw + kx − left], zero outside the image. The plane is first
    /// copied into a zero border, so that every output row is one strided copy without
    /// bounds tests (finding each row's columns in the image cost more than the copies
    /// at these sizes: 16-wide output rows).
    fn gather(&self, plane: &[f32], rows: &mut [f32]) {
        let s = &self.shape;
        let (ho, wo) = (s.out_h(), s.out_w());
        let [sh, sw] = s.stride;
        let hp = (s.pad[0] + s.h + s.pad[2]).max((ho - 1) * sh + s.kh);
        // Wide enough for each tap's wo · sw values from its column.
        let wp = (s.pad[1] + s.w + s.pad[3]).max(wo * sw + s.kw);
        BORDERED.with(|b| {
            let mut b = b.borrow_mut();
            b.clear();
            b.resize(hp * wp, 0.0);
            for (y, src) in plane.chunks_exact(s.w).enumerate() {
                b[(s.pad[0] + y) * wp + s.pad[1]..][..s.w].copy_from_slice(src);
            }
            let span = wo * sw;
            let mut rows = rows.chunks_exact_mut(ho * wo);
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let row = rows.next().expect("one row per tap");
                    for (oy, dst) in row.chunks_exact_mut(wo).enumerate() {
                        let src = &b[(oy * sh + ky) * wp + kx..][..span];
                        match sw {
                            1 => dst.copy_from_slice(src),
                            // Every other value through pairs, which vectorises (a strided
                            // iterator compiled to one checked scalar load per value).
                            2 => {
                                for (d, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
                                    *d = pair[0];
                                }
                            }
                            _ => {
                                for (k, d) in dst.iter_mut().enumerate() {
                                    *d = src[k * sw];
                                }
                            }
                        }
                    }
                }
            }
        })
    }
}

/// A transposed convolution with kernel = stride: a 1×1 [`PackedConv`] to `co·kh·kw`
/// channels, then depth to space.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDeconv {
    pub shape: BlockShape,
    inner: PackedConv,
    bias: Vec<f32>,
}

impl BlockDeconv {
    /// `weights` as ONNX ConvTranspose has them, `ci × co × kh × kw`; `bias` per output
    /// channel (or empty).
    pub fn new(shape: BlockShape, weights: &[f32], bias: &[f32], kernels: Isa) -> Self {
        let BlockShape {
            ci,
            co,
            h,
            w,
            kh,
            kw,
            ..
        } = shape;
        assert!(
            ci > 0 && co > 0 && h > 0 && w > 0 && kh > 0 && kw > 0,
            "{shape:?}"
        );
        assert_eq!(weights.len(), ci * co * kh * kw, "weights for {shape:?}");
        assert!(bias.is_empty() || bias.len() == co, "bias for {shape:?}");
        let taps = kh * kw;
        // Row (o, t) of the 1×1 weights is column (o, t) of the ConvTranspose kernel.
        let mut rows = vec![0.0f32; co * taps * ci];
        for c in 0..ci {
            for o in 0..co {
                for t in 0..taps {
                    rows[(o * taps + t) * ci + c] = weights[(c * co + o) * taps + t];
                }
            }
        }
        let inner = ConvShape {
            ci,
            co: co * taps,
            h,
            w,
            kh: 1,
            kw: 1,
            stride: [1, 1],
            pad: [0; 4],
        };
        let mut b = vec![0.0; co];
        b[..bias.len()].copy_from_slice(bias);
        BlockDeconv {
            shape,
            inner: PackedConv::new(inner, &rows, &[], kernels),
            bias: b,
        }
    }

    pub fn tile(&self) -> (usize, usize) {
        self.inner.tile()
    }

    /// `x`: `n × ci × h × w`; `out`: `n × co × h·kh × w·kw`; `bias`: `co` values for every
    /// image or `n × co` (replacing the packed bias).
    pub fn run_with_bias(&self, x: &[f32], out: &mut [f32], relu: bool, bias: Option<&[f32]>) {
        self.run_on(None, x, out, relu, bias)
    }

    /// As `run_with_bias`, the matrix product split between the threads of `team`.
    pub fn run_on(
        &self,
        team: Option<&Team>,
        x: &[f32],
        out: &mut [f32],
        relu: bool,
        bias: Option<&[f32]>,
    ) {
        let s = &self.shape;
        let image_in = s.ci * s.h * s.w;
        let n = x.len() / image_in;
        assert_eq!(x.len(), n * image_in, "input length for {s:?}");
        let image_out = s.co * s.out_h() * s.out_w();
        assert_eq!(out.len(), n * image_out, "output length for {s:?}");
        if let Some(b) = bias {
            assert!(
                b.len() == s.co || b.len() == n * s.co,
                "bias length for {s:?}"
            );
        }
        GATHERED.with(|buf| {
            let mut buf = buf.borrow_mut();
            let blocks = aligned(&mut buf, out.len());
            self.inner.run_on(team, x, blocks, false, None);
            let (taps, hw) = (s.kh * s.kw, s.h * s.w);
            let wo = s.out_w();
            for (i, (bi, oi)) in blocks
                .chunks_exact(image_out)
                .zip(out.chunks_exact_mut(image_out))
                .enumerate()
            {
                let bias = match bias {
                    None => &self.bias[..],
                    Some(b) if b.len() == s.co => b,
                    Some(b) => &b[i * s.co..][..s.co],
                };
                for (o, plane) in oi.chunks_exact_mut(s.out_h() * wo).enumerate() {
                    for t in 0..taps {
                        let (ky, kx) = (t / s.kw, t % s.kw);
                        let src = &bi[(o * taps + t) * hw..][..hw];
                        for y in 0..s.h {
                            let row = &mut plane[(y * s.kh + ky) * wo..][..wo];
                            for (x, v) in src[y * s.w..][..s.w].iter().enumerate() {
                                let v = v + bias[o];
                                row[x * s.kw + kx] = if relu { v.max(0.0) } else { v };
                            }
                        }
                    }
                }
            }
        })
    }
}

thread_local! {
    /// Patches of a strided convolution, or the blocks of a transposed one, before they reach
    /// their places: grows to the largest layer once per thread, then reused.
    static GATHERED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One input plane of a strided convolution in its zero border.
    static BORDERED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::reference::{deconv_reference, strided_reference};
    use crate::testing::{abs, isas, values, Errors};

    /// Largest |fast − reference| of a strided conv's output over its own error scale
    /// Σ|x·w| + |b| (the sum of the absolute values of the terms it adds: an f32 sum's rounding
    /// is at most γ_n·Σ|terms|, γ_n ≈ n·2⁻²⁴). Measured worst (x86-64 AVX-512, AVX2,
    /// portable; aarch64 NEON, portable under qemu Cortex-A72): 2.17e-7 (AVX-512 = AVX2 =
    /// NEON), 2.07e-7 portable.
    const STRIDED_MAX_TOL: f64 = 6.5e-7;
    /// The same ratio's mean over a run's outputs. Measured worst (as above): 2.02e-8
    /// portable, 1.78e-8 SIMD.
    const STRIDED_MEAN_TOL: f64 = 6e-8;
    /// As [`STRIDED_MAX_TOL`], for the block deconvolutions (sums of ci + 1 terms). Measured
    /// worst (as above): 2.31e-7 portable, 1.93e-7 SIMD.
    const DECONV_MAX_TOL: f64 = 7e-7;
    /// The same ratio's mean over a run's outputs. Measured worst (as above): 1.76e-8
    /// portable, 1.69e-8 SIMD.
    const DECONV_MEAN_TOL: f64 = 5e-8;

    /// `got`'s errors against `want` relative to each output's `scale`, asserted within
    /// `limits` (max, mean).
    fn assert_close(
        got: &[f32],
        want: &[f32],
        scale: &[f32],
        limits: (f64, f64),
        what: &str,
    ) -> Errors {
        let e = Errors::of(got, want, scale);
        assert!(
            e.max <= limits.0 && e.mean <= limits.1,
            "{what}: max |error|/Σ|x·w| {:.2e} (output {}: {} vs reference {}), mean {:.2e}",
            e.max,
            e.at,
            got[e.at],
            want[e.at],
            e.mean
        );
        e
    }

    fn strided_shapes() -> Vec<ConvShape> {
        let s = |ci, co, h, w, k, stride, p| ConvShape {
            ci,
            co,
            h,
            w,
            kh: k,
            kw: k,
            stride: [stride; 2],
            pad: [p; 4],
        };
        vec![
            s(10, 10, 28, 28, 2, 2, 0), // the digit model's downsamplers
            s(20, 20, 14, 14, 2, 2, 0),
            s(40, 40, 7, 7, 2, 2, 0), // odd size: the last row and column are dropped
            s(32, 32, 32, 32, 3, 2, 1), // diffusers' Downsample2D
            s(3, 5, 9, 8, 3, 2, 1),
            s(4, 6, 10, 9, 1, 1, 0), // 1×1
            ConvShape {
                ci: 2,
                co: 7,
                h: 11,
                w: 9,
                kh: 3,
                kw: 2,
                stride: [3, 2],
                pad: [1, 0, 2, 1],
            },
            // A column stride of 3: the gather's general strided copy.
            ConvShape {
                ci: 3,
                co: 4,
                h: 10,
                w: 13,
                kh: 3,
                kw: 4,
                stride: [2, 3],
                pad: [0, 1, 1, 2],
            },
        ]
    }

    #[test]
    fn strided_convs_match_the_reference() {
        let team = Team::new(3).unwrap();
        for kernels in isas() {
            let mut worst = Errors::default();
            for s in strided_shapes() {
                for n in [1, 3] {
                    let x = values(n * s.ci * s.h * s.w, 1);
                    let w = values(s.co * s.ci * s.kh * s.kw, 2);
                    let b = values(s.co, 3);
                    let want = strided_reference(&s, &x, &w, &b);
                    let conv = StridedConv::new(s, &w, &b, kernels);
                    assert!(kernels.tiles().contains(&conv.tile()), "{:?}", conv.tile());
                    let mut got = vec![f32::NAN; want.len()];
                    conv.run_with_bias(&x, &mut got, false, None);
                    let scale = strided_reference(&s, &abs(&x), &abs(&w), &abs(&b));
                    let what = format!("{s:?} n={n} {kernels:?}");
                    let limits = (STRIDED_MAX_TOL, STRIDED_MEAN_TOL);
                    worst = worst.worst(assert_close(&got, &want, &scale, limits, &what));
                    // A team gathers the patches plane by plane: the same bits.
                    let mut split = vec![f32::NAN; want.len()];
                    conv.run_on(Some(&team), &x, &mut split, false, None);
                    assert!(
                        split
                            .iter()
                            .zip(&got)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "team of 3 vs one thread: {s:?} n={n} {kernels:?}"
                    );
                }
            }
            eprintln!(
                "strided conv {kernels:?}: measured |error|/Σ|x·w| max {:.2e} mean {:.2e}",
                worst.max, worst.mean
            );
        }
    }

    fn block_shapes() -> Vec<BlockShape> {
        let s = |ci, co, h, w, k| BlockShape {
            ci,
            co,
            h,
            w,
            kh: k,
            kw: k,
        };
        vec![
            s(80, 40, 3, 3, 2), // the digit model's upsamplers
            s(40, 20, 7, 7, 2),
            s(20, 10, 14, 14, 2),
            s(3, 5, 4, 6, 3),
            BlockShape {
                ci: 2,
                co: 3,
                h: 5,
                w: 4,
                kh: 1,
                kw: 3,
            },
        ]
    }

    #[test]
    fn block_deconvs_match_the_reference() {
        for kernels in isas() {
            let mut worst = Errors::default();
            let limits = (DECONV_MAX_TOL, DECONV_MEAN_TOL);
            for s in block_shapes() {
                for n in [1, 2] {
                    let x = values(n * s.ci * s.h * s.w, 4);
                    let w = values(s.ci * s.co * s.kh * s.kw, 5);
                    let b = values(s.co, 6);
                    let want = deconv_reference(&s, [s.kh, s.kw], &x, &w, &b);
                    let conv = BlockDeconv::new(s, &w, &b, kernels);
                    assert!(kernels.tiles().contains(&conv.tile()), "{:?}", conv.tile());
                    let mut got = vec![f32::NAN; want.len()];
                    conv.run_with_bias(&x, &mut got, false, None);
                    let scale = deconv_reference(&s, [s.kh, s.kw], &abs(&x), &abs(&w), &abs(&b));
                    let what = format!("{s:?} n={n} {kernels:?}");
                    worst = worst.worst(assert_close(&got, &want, &scale, limits, &what));
                    // ReLU and a per-image run-time bias on the way out.
                    let rb = values(n * s.co, 7);
                    let mut want = vec![0.0f32; got.len()];
                    let mut scale = vec![0.0f32; got.len()];
                    for i in 0..n {
                        let xi = &x[i * s.ci * s.h * s.w..][..s.ci * s.h * s.w];
                        let bi = &rb[i * s.co..][..s.co];
                        let wi = deconv_reference(&s, [s.kh, s.kw], xi, &w, bi);
                        want[i * wi.len()..][..wi.len()].copy_from_slice(&wi);
                        let si = deconv_reference(&s, [s.kh, s.kw], &abs(xi), &abs(&w), &abs(bi));
                        scale[i * si.len()..][..si.len()].copy_from_slice(&si);
                    }
                    // max(·, 0) moves no output further from the reference's max(·, 0).
                    want.iter_mut().for_each(|v| *v = v.max(0.0));
                    conv.run_with_bias(&x, &mut got, true, Some(&rb));
                    let what = format!("relu {s:?} n={n} {kernels:?}");
                    worst = worst.worst(assert_close(&got, &want, &scale, limits, &what));
                    // One run-time bias of co values for every image.
                    let shared = values(s.co, 8);
                    let want = deconv_reference(&s, [s.kh, s.kw], &x, &w, &shared);
                    let scale =
                        deconv_reference(&s, [s.kh, s.kw], &abs(&x), &abs(&w), &abs(&shared));
                    conv.run_with_bias(&x, &mut got, false, Some(&shared));
                    let what = format!("shared bias {s:?} n={n} {kernels:?}");
                    worst = worst.worst(assert_close(&got, &want, &scale, limits, &what));
                }
            }
            eprintln!(
                "block deconv {kernels:?}: measured |error|/Σ|x·w| max {:.2e} mean {:.2e}",
                worst.max, worst.mean
            );
        }
    }

    #[test]
    fn stride_one_matches_the_direct_kernel_bit_for_bit() {
        // The same sums in the same order: a 1×1 conv through im2col equals PackedConv's.
        let s = strided_shapes()[5];
        let x = values(s.ci * s.h * s.w, 8);
        let w = values(s.co * s.ci, 9);
        let b = values(s.co, 10);
        for kernels in isas() {
            let direct = PackedConv::new(
                ConvShape {
                    ci: s.ci,
                    co: s.co,
                    h: s.h,
                    w: s.w,
                    kh: 1,
                    kw: 1,
                    stride: [1, 1],
                    pad: [0; 4],
                },
                &w,
                &b,
                kernels,
            );
            let mut want = vec![0.0; s.co * s.h * s.w];
            direct.run(&x, &mut want, false);
            let mut got = vec![f32::NAN; want.len()];
            StridedConv::new(s, &w, &b, kernels).run_with_bias(&x, &mut got, false, None);
            assert_eq!(got, want, "{kernels:?}");
        }
    }
}
