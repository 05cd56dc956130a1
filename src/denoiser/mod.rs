//! The noise-prediction network behind a small trait, so that samplers and the sampling loop
//! never see the engine.
//!
//! - [`api`]: the [`Engine`] boundary (a model's [`ModelSpec`], a [`Denoiser`] per worker)
//!   and the engine policy a caller picks ([`Precision`], [`Kernels`]).
//! - [`info`]: what a model says about itself ([`ModelInfo`]).
//! - [`tract`]: the tract engine, the only folder that imports tract: loading, graph
//!   rewrites that put our kernels (crate `edge-sample-kernels`) into tract's graph as
//!   custom operators, running and profiling.
//!
//! This file only names the modules and re-exports what the rest of the crate uses.

pub mod api;
pub mod info;
pub mod tract;

pub use self::api::{Denoiser, Engine, Kernels, ModelSpec, Precision};
pub use self::info::ModelInfo;
pub use self::tract::{
    cpu_has_fp16, IoSpec, LoadOptions, Model, ModelSource, NodeTime, TimeShape, TractDenoiser,
};
pub use edge_sample_kernels::{ConvAlgorithm, Isa};
