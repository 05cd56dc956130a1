//! Convolutions on NCHW `f32` data: their shapes, the f64 references the tests compare
//! against, and the one interface ([`Convolution`]) of the four ways we compute them:
//!
//! - [`direct`]: stride 1, register tiles over a zero-bordered copy ([`PackedConv`]);
//! - [`winograd`]: 3×3 stride 1 by Winograd's minimal filtering ([`WinogradConv`]), with the
//!   column shuffles of [`shuffle`];
//! - [`lowered`]: strided convolutions by im2col and transposed ones (kernel = stride) by
//!   depth to space, both around a 1×1 [`PackedConv`] ([`StridedConv`], [`BlockDeconv`]).
//!
//! The shapes and references live here, so that the algorithms depend on this module and
//! never on each other's tests or references.

pub mod direct;
pub mod lowered;
pub mod shuffle;
pub mod winograd;

pub use direct::PackedConv;
pub use lowered::{BlockDeconv, StridedConv};
pub use winograd::{ConvAlgorithm, OutputBlock, WinogradConv};

use crate::team::Team;

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
    /// Images in a call's `x` (`n × ci × h × w`), checking `out` (`n × co × out_h × out_w`)
    /// and a run-time `bias` (`co` or `n × co` values) against it.
    pub(crate) fn images(&self, x: &[f32], out: &[f32], bias: Option<&[f32]>) -> usize {
        let image_in = self.ci * self.h * self.w;
        let n = x.len() / image_in;
        assert_eq!(x.len(), n * image_in, "input length for {self:?}");
        assert_eq!(
            out.len(),
            n * self.co * self.out_h() * self.out_w(),
            "output length for {self:?}"
        );
        if let Some(b) = bias {
            assert!(
                b.len() == self.co || b.len() == n * self.co,
                "bias length for {self:?}"
            );
        }
        n
    }
    fn padded_h(&self) -> usize {
        self.h + self.pad[0] + self.pad[2]
    }
    fn padded_w(&self) -> usize {
        self.w + self.pad[1] + self.pad[3]
    }
}

/// Geometry of a strided (or stride-1) convolution on NCHW data, single group, no dilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StridedShape {
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// Zero padding: top, left, bottom, right.
    pub pad: [usize; 4],
}

impl StridedShape {
    pub fn out_h(&self) -> usize {
        (self.h + self.pad[0] + self.pad[2] - self.kh) / self.stride[0] + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + self.pad[1] + self.pad[3] - self.kw) / self.stride[1] + 1
    }
    pub fn is_valid(&self) -> bool {
        self.ci > 0
            && self.co > 0
            && self.kh > 0
            && self.kw > 0
            && self.stride.iter().all(|&s| s > 0)
            && self.h + self.pad[0] + self.pad[2] >= self.kh
            && self.w + self.pad[1] + self.pad[3] >= self.kw
    }
}

/// Geometry of a transposed convolution whose kernel equals its stride, without padding,
/// output padding or groups: output `co × h·kh × w·kw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockShape {
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
}

impl BlockShape {
    pub fn out_h(&self) -> usize {
        self.h * self.kh
    }
    pub fn out_w(&self) -> usize {
        self.w * self.kw
    }
}

/// Reference convolution: plain loops, f64 sums, bounds checks instead of padding (the
/// strided reference at stride 1).
pub fn conv_reference(shape: &ConvShape, x: &[f32], weights: &[f32], bias: &[f32]) -> Vec<f32> {
    let s = shape;
    let strided = StridedShape {
        ci: s.ci,
        co: s.co,
        h: s.h,
        w: s.w,
        kh: s.kh,
        kw: s.kw,
        stride: [1, 1],
        pad: s.pad,
    };
    strided_reference(&strided, x, weights, bias)
}

/// Reference strided convolution: plain loops, f64 sums.
pub fn strided_reference(s: &StridedShape, x: &[f32], weights: &[f32], bias: &[f32]) -> Vec<f32> {
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
                                let iy = (y * s.stride[0] + ky) as isize - s.pad[0] as isize;
                                let ix = (xo * s.stride[1] + kx) as isize - s.pad[1] as isize;
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

/// Reference transposed convolution (any stride, no padding), from its definition: every
/// input pixel scatters `x · w[c][o]` onto the outputs its kernel covers.
pub fn deconv_reference(
    s: &BlockShape,
    stride: [usize; 2],
    x: &[f32],
    weights: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let ho = (s.h - 1) * stride[0] + s.kh;
    let wo = (s.w - 1) * stride[1] + s.kw;
    let n = x.len() / (s.ci * s.h * s.w);
    let mut acc = vec![0.0f64; n * s.co * ho * wo];
    for b in 0..n {
        for o in 0..s.co {
            let plane = &mut acc[(b * s.co + o) * ho * wo..][..ho * wo];
            plane.fill(bias.get(o).copied().unwrap_or(0.0) as f64);
            for c in 0..s.ci {
                for y in 0..s.h {
                    for xi in 0..s.w {
                        let xv = x[((b * s.ci + c) * s.h + y) * s.w + xi] as f64;
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let wv = weights[((c * s.co + o) * s.kh + ky) * s.kw + kx] as f64;
                                plane[(y * stride[0] + ky) * wo + xi * stride[1] + kx] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// How a convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvKind {
    /// Register tiles over a zero-bordered copy ([`PackedConv`]).
    Direct,
    /// Winograd F(2×2, 3×3) or F(4×4, 3×3) ([`WinogradConv`]).
    Winograd,
    /// Strided: im2col, then 1×1 tiles ([`StridedConv`]).
    Strided,
    /// Transposed with stride = kernel: 1×1 tiles, then depth to space ([`BlockDeconv`]).
    Transposed,
}

/// A convolution with its weights packed, ready to run on NCHW `f32` data.
pub trait Convolution: std::fmt::Debug + Send + Sync {
    /// (ci, h, w) of one input image.
    fn in_chw(&self) -> [usize; 3];
    /// (co, out_h, out_w) of one output image.
    fn out_chw(&self) -> [usize; 3];
    fn kind(&self) -> ConvKind;
    /// Shape, algorithm and register tile, for profiles.
    fn describe(&self) -> String;
    /// `x`: `n` input images; `out`: `n` output images; `relu`: max(·, 0) on the way out;
    /// `bias`: a run-time bias (`co` values, or `n × co`) replacing the packed one. Split
    /// between the threads of `team` when given; the same bits either way.
    fn run_on(
        &self,
        team: Option<&Team>,
        x: &[f32],
        out: &mut [f32],
        relu: bool,
        bias: Option<&[f32]>,
    );
}

impl Convolution for PackedConv {
    fn in_chw(&self) -> [usize; 3] {
        [self.shape.ci, self.shape.h, self.shape.w]
    }
    fn out_chw(&self) -> [usize; 3] {
        [self.shape.co, self.shape.out_h(), self.shape.out_w()]
    }
    fn kind(&self) -> ConvKind {
        ConvKind::Direct
    }
    fn describe(&self) -> String {
        let s = &self.shape;
        format!(
            "{}→{} {}×{} on {}×{}, pad {:?}, tile {:?}",
            s.ci,
            s.co,
            s.kh,
            s.kw,
            s.h,
            s.w,
            s.pad,
            self.tile()
        )
    }
    fn run_on(
        &self,
        team: Option<&Team>,
        x: &[f32],
        out: &mut [f32],
        relu: bool,
        bias: Option<&[f32]>,
    ) {
        PackedConv::run_on(self, team, x, out, relu, bias)
    }
}

impl Convolution for WinogradConv {
    fn in_chw(&self) -> [usize; 3] {
        [self.shape.ci, self.shape.h, self.shape.w]
    }
    fn out_chw(&self) -> [usize; 3] {
        [self.shape.co, self.shape.out_h(), self.shape.out_w()]
    }
    fn kind(&self) -> ConvKind {
        ConvKind::Winograd
    }
    fn describe(&self) -> String {
        let s = &self.shape;
        format!(
            "{}→{} 3×3 on {}×{}, pad {:?}, Winograd {}, tile {:?}",
            s.ci,
            s.co,
            s.h,
            s.w,
            s.pad,
            self.block().describe(),
            self.tile()
        )
    }
    fn run_on(
        &self,
        team: Option<&Team>,
        x: &[f32],
        out: &mut [f32],
        relu: bool,
        bias: Option<&[f32]>,
    ) {
        WinogradConv::run_on(self, team, x, out, relu, bias)
    }
}

impl Convolution for StridedConv {
    fn in_chw(&self) -> [usize; 3] {
        [self.shape.ci, self.shape.h, self.shape.w]
    }
    fn out_chw(&self) -> [usize; 3] {
        [self.shape.co, self.shape.out_h(), self.shape.out_w()]
    }
    fn kind(&self) -> ConvKind {
        ConvKind::Strided
    }
    fn describe(&self) -> String {
        let s = &self.shape;
        format!(
            "{}→{} {}×{} stride {:?} on {}×{}, pad {:?}, im2col + tile {:?}",
            s.ci,
            s.co,
            s.kh,
            s.kw,
            s.stride,
            s.h,
            s.w,
            s.pad,
            self.tile()
        )
    }
    fn run_on(
        &self,
        team: Option<&Team>,
        x: &[f32],
        out: &mut [f32],
        relu: bool,
        bias: Option<&[f32]>,
    ) {
        StridedConv::run_on(self, team, x, out, relu, bias)
    }
}

impl Convolution for BlockDeconv {
    fn in_chw(&self) -> [usize; 3] {
        [self.shape.ci, self.shape.h, self.shape.w]
    }
    fn out_chw(&self) -> [usize; 3] {
        [self.shape.co, self.shape.out_h(), self.shape.out_w()]
    }
    fn kind(&self) -> ConvKind {
        ConvKind::Transposed
    }
    fn describe(&self) -> String {
        let s = &self.shape;
        format!(
            "transposed {}→{} {}×{} stride = kernel on {}×{}, tile {:?} + depth to space",
            s.ci,
            s.co,
            s.kh,
            s.kw,
            s.h,
            s.w,
            self.tile()
        )
    }
    fn run_on(
        &self,
        team: Option<&Team>,
        x: &[f32],
        out: &mut [f32],
        relu: bool,
        bias: Option<&[f32]>,
    ) {
        BlockDeconv::run_on(self, team, x, out, relu, bias)
    }
}
