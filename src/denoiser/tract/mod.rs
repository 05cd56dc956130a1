//! The tract engine: ONNX → (rewrites) → every dimension fixed → precision → optimized once →
//! one runnable plan shared by all workers, one state per worker reused for every step.
//! The only folder of the crate that imports tract.
//!
//! - [`model`]: [`Model`] (the plan and what was learnt loading it), [`LoadOptions`],
//!   [`ModelSource`].
//! - [`load`]: `Model::load`, step by step.
//! - [`io`]: the model's interface found in the ONNX graph ([`IoSpec`], [`TimeShape`]).
//! - [`onnx_fix`]: protobuf rewrites for exporter output tract does not load.
//! - [`rewrite`]: the graph passes that put our kernels into tract's graph.
//! - [`ops`]: our kernels as tract operators, one per file.
//! - [`run`]: [`TractDenoiser`], one worker's state; [`profile`]: its per-node timing.

pub mod io;
pub mod limits;
pub mod load;
pub mod model;
pub mod onnx_fix;
pub mod ops;
pub mod profile;
pub mod rewrite;
pub mod run;

pub use self::io::{IoSpec, TimeShape};
pub use self::load::cpu_has_fp16;
pub use self::model::{LoadOptions, Model, ModelSource};
pub use self::profile::NodeTime;
pub use self::run::TractDenoiser;
