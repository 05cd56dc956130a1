//! edge-sample's CPU kernels: the convolutions, matrix products, norms and softmax that
//! dominate small diffusion UNets, for x86-64 (AVX2, AVX-512) and aarch64 (NEON), each with a
//! portable version and an f64 reference that the tests compare against.
//!
//! No inference engine here, no environment variables, no printing: the caller picks an
//! [`Isa`] (see [`Isa::best`]) and an algorithm, and runs layers on plain `f32` slices, on one
//! thread or split between the threads of a [`Team`].

pub mod convolution;
pub mod direct;
pub mod isa;
pub mod lowered;
pub mod matmul;
pub mod shuffle;
pub mod team;
pub mod winograd;

pub use convolution::{ConvKind, Convolution};
pub use direct::{
    conv_reference, exp_approx, instance_norm, instance_norm_rows, layer_norm,
    layer_norm_reference, softmax, ConvShape, PackedConv, EXP_REL_TOL,
};
pub use isa::Isa;
pub use lowered::{
    deconv_reference, strided_reference, BlockDeconv, BlockShape, StridedConv, StridedShape,
};
pub use matmul::{matmul_reference, MatMul, MatMulShape};
pub use team::{share, split_units, with_team, Team};
pub use winograd::{ConvAlgorithm, OutputBlock, WinogradConv};
