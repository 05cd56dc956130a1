//! edge-sample: diffusion-model image generation on small CPUs.
//!
//! The data flows one way: options → a [`plan::Plan`] (model, schedule, sampler, precision,
//! threads) → the denoising loop ([`pipeline`], over an engine: [`denoiser::Engine`]) → pixels
//! ([`image`]) → sinks (PNG files, and screens through [`display`] and [`show`]).

pub mod app;
pub mod boards;
pub mod budget;
pub mod cli;
pub mod denoiser;
pub mod display;
pub mod error;
pub mod image;
pub mod input;
pub mod models;
pub mod noise;
pub mod npy;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod sampler;
pub mod schedule;
pub mod settings;
pub mod show;

pub use error::{Error, Result};
