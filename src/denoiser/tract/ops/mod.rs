//! Our kernels (crate `edge-sample-kernels`) as tract operators, one per file. Each is
//! created once, by the passes in [`super::rewrite`], with the kernels the loader chose;
//! the two norms also have a kernel-less spec operator that the ONNX parser builds.

pub mod common;
pub mod conv;
pub mod group_norm;
pub mod layer_norm;
pub mod matmul;
pub mod qconv;
pub mod quantize;
pub mod silu;
pub mod softmax;

pub use self::conv::DirectConv;
pub use self::group_norm::{FusedGroupNorm, InstanceNormSpec};
pub use self::layer_norm::{FusedLayerNorm, LayerNormSpec};
pub use self::matmul::FusedMatMul;
pub use self::qconv::QuantConvOp;
pub use self::quantize::QuantizeOp;
pub use self::silu::TeamSilu;
pub use self::softmax::FusedSoftmax;
