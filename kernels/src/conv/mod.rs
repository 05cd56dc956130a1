//! Convolutions on NCHW `f32` data: their shapes, the f64 references the tests compare
//! against, and the one interface ([`Convolution`]) of the four ways we compute them:
//!
//! - [`direct`]: stride 1, register tiles over a zero-bordered copy ([`PackedConv`]);
//! - [`winograd`]: 3×3 stride 1 by Winograd's minimal filtering ([`WinogradConv`]), with the
//!   column shuffles of [`shuffle`];
//! - [`lowered`]: strided convolutions by im2col and transposed ones (kernel = stride) by
//!   depth to space, both around a 1×1 [`PackedConv`] ([`StridedConv`], [`BlockDeconv`]).
//!
//! The shapes ([`shape`]) and references ([`reference`]) have modules of their own, so that
//! the algorithms depend on them and never on each other's tests or references; this file only
//! names the modules.

pub mod convolution;
pub mod direct;
pub mod lowered;
pub mod reference;
pub mod shape;
pub mod shuffle;
pub mod winograd;

pub use convolution::{ConvKind, Convolution};
pub use direct::PackedConv;
pub use lowered::{BlockDeconv, StridedConv};
pub use reference::{conv_reference, deconv_reference, strided_reference};
pub use shape::{BlockShape, ConvShape};
pub use winograd::{ConvAlgorithm, OutputBlock, WinogradConv};
