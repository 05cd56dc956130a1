//! What the rest of the crate sees of any engine: the [`Engine`] the sampling loop drives (a
//! model's [`ModelSpec`] and a [`Denoiser`] per worker), and the engine policy a caller picks
//! ([`Precision`], [`Kernels`]). No engine here.

use std::fmt;
use std::str::FromStr;

use edge_sample_kernels::Isa;

use crate::error::Result;
use crate::sampler::Prediction;
use crate::schedule::ScheduleConfig;

/// Who runs the convolutions, matrix products, norms and softmax: tract's own lowering, or our
/// kernels compiled for one instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    Tract,
    Ours(Isa),
}

impl Kernels {
    /// Our kernels with the best instruction set this CPU runs.
    pub fn best() -> Kernels {
        Kernels::Ours(Isa::best())
    }

    /// Every kernel set of ours this CPU runs (tests, A/B runs).
    pub fn all_supported() -> Vec<Kernels> {
        Isa::all_supported()
            .into_iter()
            .map(Kernels::Ours)
            .collect()
    }

    /// A short description for logs and `bench`.
    pub fn describe(self) -> &'static str {
        match self {
            Kernels::Tract => "tract",
            Kernels::Ours(isa) => isa.describe(),
        }
    }

    /// The name `EDGE_SAMPLE_KERNELS` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Tract => "tract",
            Kernels::Ours(isa) => isa.name(),
        }
    }
}

/// A network `(x_t, t) → output of x_t's shape` run on a fixed batch of images.
pub trait Denoiser: Send {
    /// (C, H, W) of one image.
    fn image_shape(&self) -> [usize; 3];
    /// Images per call; `x` and `out` hold `batch() · C·H·W` values.
    fn batch(&self) -> usize;
    /// Runs the network on `x` at training timestep `t`, writing its output to `out`.
    fn run(&mut self, x: &[f32], t: usize, out: &mut [f32]) -> Result<()>;
}

/// Arithmetic precision of the denoiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f16 arithmetic for an fp16 model where the CPU has FEAT_FP16, else f32.
    Auto,
    F32,
    F16,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Precision::Auto),
            "f32" | "fp32" => Ok(Precision::F32),
            "f16" | "fp16" => Ok(Precision::F16),
            _ => Err(format!("unknown precision '{s}' (valid: auto, f32, f16)")),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        })
    }
}

/// What the sampling loop and the sinks know of a model, whatever engine runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// The model's name (PNG parameters, `bench`).
    pub name: String,
    /// (C, H, W) of one image.
    pub image_shape: [usize; 3],
    /// Images per network call.
    pub batch: usize,
    /// The noise schedule it was trained with.
    pub schedule: ScheduleConfig,
    /// What its output is.
    pub prediction: Prediction,
    /// Model-space values that map to pixel 0 and 255.
    pub pixel_range: (f32, f32),
}

/// What the sampling loop needs from an engine: the model's spec and a denoiser per worker.
pub trait Engine: Sync {
    /// The model's shape, batch, schedule, prediction type and pixel range.
    fn spec(&self) -> ModelSpec;
    /// A denoiser with its own state for one worker thread, running `spec().batch` images per
    /// call; `threads` (≥ 1) is how many threads it may use inside each call.
    fn new_denoiser(&self, threads: usize) -> Result<Box<dyn Denoiser>>;
}
