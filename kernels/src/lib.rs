//! edge-sample's CPU kernels: the convolutions, matrix products, norms and softmax that
//! dominate small diffusion UNets, for x86-64 (AVX2, AVX-512) and aarch64 (NEON), each with a
//! portable version and an f64 reference that the tests compare against.
//!
//! No inference engine here, no environment variables, no printing: the caller picks an
//! [`Isa`] (see [`Isa::best`]) and an algorithm, and runs layers on plain `f32` slices, on one
//! thread or split between the threads of a [`Team`].
//!
//! Modules: [`isa`] (the kernel sets), [`tile`] (the register tiles and their table),
//! [`conv`] (shapes, references, and the direct, lowered and Winograd convolutions),
//! [`matmul`], [`norm`], [`softmax`], [`quant`] (8-bit convolutions), [`team`] (the spinning thread team), and the crate's
//! plumbing: [`scratch`] (aligned scratch buffers) and [`view`] (the disjoint mutable view
//! that a team's parts write through).

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod conv;
pub mod isa;
pub mod matmul;
pub mod norm;
pub mod quant;
pub mod scratch;
pub mod softmax;
pub mod team;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tile;
pub mod view;

pub use conv::{
    conv_reference, deconv_reference, strided_reference, BlockDeconv, BlockShape, ConvAlgorithm,
    ConvKind, ConvShape, Convolution, OutputBlock, PackedConv, StridedConv, WinogradConv,
};
pub use isa::Isa;
pub use matmul::{matmul_reference, MatMul, MatMulShape};
pub use norm::{
    group_norm_rows, instance_norm, instance_norm_rows, layer_norm, layer_norm_reference,
};
pub use quant::{
    qconv_reference, qconv_sums_reference, quantize, requantize, DotIsa, QuantConv, QuantOutput,
    QuantParams, QuantStore, Q8,
};
pub use softmax::{exp_approx, softmax, EXP_REL_TOL};
pub use team::{share, split_units, with_team, Team};
