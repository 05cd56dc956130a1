//! The one interface of the four ways we compute convolutions.

use super::direct::PackedConv;
use super::lowered::{BlockDeconv, StridedConv};
use super::winograd::WinogradConv;
use crate::team::Team;

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

/// The parts every kind shares: the shapes read off `self.shape`, the kind, and `run_on`
/// forwarded to the type's own method; `describe` as given.
macro_rules! convolution {
    ($ty:ty, $kind:ident, |$s:ident, $this:ident| $describe:expr) => {
        impl Convolution for $ty {
            fn in_chw(&self) -> [usize; 3] {
                [self.shape.ci, self.shape.h, self.shape.w]
            }
            fn out_chw(&self) -> [usize; 3] {
                [self.shape.co, self.shape.out_h(), self.shape.out_w()]
            }
            fn kind(&self) -> ConvKind {
                ConvKind::$kind
            }
            fn describe(&self) -> String {
                let ($s, $this) = (&self.shape, self);
                $describe
            }
            fn run_on(
                &self,
                team: Option<&Team>,
                x: &[f32],
                out: &mut [f32],
                relu: bool,
                bias: Option<&[f32]>,
            ) {
                <$ty>::run_on(self, team, x, out, relu, bias)
            }
        }
    };
}

convolution!(PackedConv, Direct, |s, this| format!(
    "{}→{} {}×{} on {}×{}, pad {:?}, tile {:?}",
    s.ci,
    s.co,
    s.kh,
    s.kw,
    s.h,
    s.w,
    s.pad,
    this.tile()
));

convolution!(WinogradConv, Winograd, |s, this| format!(
    "{}→{} 3×3 on {}×{}, pad {:?}, Winograd {}, tile {:?}",
    s.ci,
    s.co,
    s.h,
    s.w,
    s.pad,
    this.block().describe(),
    this.tile()
));

convolution!(StridedConv, Strided, |s, this| format!(
    "{}→{} {}×{} stride {:?} on {}×{}, pad {:?}, im2col + tile {:?}",
    s.ci,
    s.co,
    s.kh,
    s.kw,
    s.stride,
    s.h,
    s.w,
    s.pad,
    this.tile()
));

convolution!(BlockDeconv, Transposed, |s, this| format!(
    "transposed {}→{} {}×{} stride = kernel on {}×{}, tile {:?} + depth to space",
    s.ci,
    s.co,
    s.kh,
    s.kw,
    s.h,
    s.w,
    this.tile()
));
