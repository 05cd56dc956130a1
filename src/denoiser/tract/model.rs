//! A loaded model: the runnable plan and what was learnt loading it (built by
//! [`super::load`]), from which every worker gets its own [`TractDenoiser`].
use std::path::PathBuf;
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::io::IoSpec;
use super::run::TractDenoiser;
use crate::denoiser::api::{Denoiser, Engine, Kernels, ModelSpec, Precision};
use crate::denoiser::info::ModelInfo;
use crate::error::{one_line, Error, Result};
use edge_sample_kernels::{ConvAlgorithm, Team};

/// Where a model's bytes come from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    Path(PathBuf),
    /// A model compiled into the binary.
    Embedded {
        name: &'static str,
        bytes: &'static [u8],
    },
}

impl ModelSource {
    pub fn display(&self) -> String {
        match self {
            ModelSource::Path(p) => p.display().to_string(),
            ModelSource::Embedded { name, .. } => format!("{name} (built in)"),
        }
    }
}

/// How to build the plan.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Images per network call for models with a free batch dimension.
    pub batch: usize,
    pub precision: Precision,
    /// Our convolution, matrix-product, norm and softmax kernels, or tract's own lowering.
    pub kernels: Kernels,
    /// Direct or Winograd 3×3 convolutions (with our kernels).
    pub conv: ConvAlgorithm,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            batch: 1,
            precision: Precision::Auto,
            kernels: Kernels::best(),
            conv: ConvAlgorithm::Auto,
        }
    }
}

/// A loaded, optimized model ready to spawn per-worker denoisers.
pub struct Model {
    pub source: String,
    pub info: ModelInfo,
    pub io: IoSpec,
    /// Images per network call in the plan.
    pub batch: usize,
    /// "f32" or "f16": the arithmetic the plan runs.
    pub compute: &'static str,
    /// Graph rewrites applied before tract saw the model.
    pub rewrites: Vec<String>,
    /// Which kernels run the convolutions, products and norms, with their counts.
    pub kernels: String,
    /// Convolutions run by our kernel instead of tract's lowering.
    pub direct_convs: usize,
    /// Those of them computed by Winograd's algorithm.
    pub winograd_convs: usize,
    /// Matrix products (attention, linear layers) run on our tiles instead of tract's.
    pub matmuls: usize,
    /// 8-bit convolutions (QLinearConv) run on our integer kernels.
    pub quant_convs: usize,
    /// Group norms run as one node with their reshapes and affine (PyTorch's GroupNorm).
    pub group_norms: usize,
    pub file_size: usize,
    pub(super) plan: Arc<TypedSimplePlan>,
    /// Position of the image among the plan's inputs (the timestep is the other one).
    pub(super) image_pos: usize,
    /// The plan's input types after precision translation: the tensors we feed.
    pub(super) image_dt: DatumType,
    pub(super) time_dt: DatumType,
}

impl Model {
    /// A denoiser with its own engine state, for one worker thread.
    pub fn denoiser(&self) -> Result<TractDenoiser> {
        self.denoiser_with_threads(1)
    }

    /// A denoiser whose convolutions are split between `threads` threads (a [`Team`]): for
    /// runs with fewer batches than cores. Nodes left to tract run on the calling thread.
    pub fn denoiser_with_threads(&self, threads: usize) -> Result<TractDenoiser> {
        let engine = |e: anyhow::Error| Error::runtime(format!("tract: {}", one_line(&e)));
        let state = TypedSimpleState::new(&self.plan).map_err(engine)?;
        let [c, h, w] = self.io.image_shape;
        let x = Tensor::zero_dt(self.image_dt, &[self.batch, c, h, w]).map_err(engine)?;
        let t =
            Tensor::zero_dt(self.time_dt, &self.io.time_shape.dims(self.batch)).map_err(engine)?;
        let team = match threads > 1 {
            true => Some(Arc::new(Team::new(threads).map_err(|e| {
                Error::runtime(format!("cannot start {threads} threads: {e}"))
            })?)),
            false => None,
        };
        Ok(TractDenoiser {
            team,
            state,
            x: Arc::new(x),
            t: Arc::new(t),
            image_pos: self.image_pos,
            shape: self.io.image_shape,
            batch: self.batch,
        })
    }
}

/// The engine boundary: what the sampling loop sees of a tract model.
impl Engine for Model {
    fn spec(&self) -> ModelSpec {
        ModelSpec {
            name: self.info.name.clone(),
            image_shape: self.io.image_shape,
            batch: self.batch,
            schedule: self.info.schedule,
            prediction: self.info.prediction,
            pixel_range: self.info.pixel_range,
        }
    }

    fn new_denoiser(&self, threads: usize) -> Result<Box<dyn Denoiser>> {
        Ok(Box::new(self.denoiser_with_threads(threads)?))
    }
}
