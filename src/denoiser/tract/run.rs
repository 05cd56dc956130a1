//! One worker's view of a [`super::Model`]: its own engine state and input tensors, reused
//! every step.
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::denoiser::api::Denoiser;
use crate::error::{one_line, Error, Result};
use edge_sample_kernels::{with_team, Team};

/// One worker's view of the model: its own state and input tensors, reused every step.
pub struct TractDenoiser {
    /// Threads our kernels split their work between (none: the calling thread only).
    pub(super) team: Option<Arc<Team>>,
    pub(super) state: TypedSimpleState,
    pub(super) x: Arc<Tensor>,
    pub(super) t: Arc<Tensor>,
    pub(super) image_pos: usize,
    pub(super) shape: [usize; 3],
    pub(super) batch: usize,
}

/// Gives mutable access to a tensor we hand to tract by `Arc`: in place when tract has let go
/// of it (the normal case), else by replacing it with a copy.
fn exclusive(t: &mut Arc<Tensor>) -> &mut Tensor {
    Arc::make_mut(t)
}

fn write_floats(dst: &mut Tensor, src: &[f32]) -> anyhow::Result<()> {
    let dt = dst.datum_type();
    let mut view = dst.try_as_plain_ram_mut()?;
    match dt {
        DatumType::F32 => view.as_slice_mut::<f32>()?.copy_from_slice(src),
        DatumType::F16 => {
            for (d, s) in view.as_slice_mut::<f16>()?.iter_mut().zip(src) {
                *d = f16::from_f32(*s);
            }
        }
        dt => anyhow::bail!("unsupported image input type {dt:?}"),
    }
    Ok(())
}

fn write_timestep(dst: &mut Tensor, t: usize) -> anyhow::Result<()> {
    let dt = dst.datum_type();
    let mut view = dst.try_as_plain_ram_mut()?;
    match dt {
        DatumType::I64 => view.as_slice_mut::<i64>()?.fill(t as i64),
        DatumType::I32 => view.as_slice_mut::<i32>()?.fill(t as i32),
        DatumType::F32 => view.as_slice_mut::<f32>()?.fill(t as f32),
        DatumType::F16 => view.as_slice_mut::<f16>()?.fill(f16::from_f32(t as f32)),
        dt => anyhow::bail!("unsupported timestep type {dt:?}"),
    }
    Ok(())
}

fn read_floats(src: &Tensor, out: &mut [f32]) -> anyhow::Result<()> {
    let view = src.try_as_plain_ram()?;
    match src.datum_type() {
        DatumType::F32 => out.copy_from_slice(view.as_slice::<f32>()?),
        DatumType::F16 => {
            for (o, v) in out.iter_mut().zip(view.as_slice::<f16>()?) {
                *o = v.to_f32();
            }
        }
        dt => anyhow::bail!("unsupported output type {dt:?}"),
    }
    Ok(())
}

impl TractDenoiser {
    /// Writes `x` and `t` into the reused input tensors and hands them to tract in the
    /// model's input order.
    pub(super) fn inputs(&mut self, x: &[f32], t: usize) -> anyhow::Result<TVec<TValue>> {
        write_floats(exclusive(&mut self.x), x)?;
        write_timestep(exclusive(&mut self.t), t)?;
        let mut inputs: TVec<TValue> = tvec![];
        for pos in 0..2 {
            inputs.push(TValue::from_const(if pos == self.image_pos {
                self.x.clone()
            } else {
                self.t.clone()
            }));
        }
        Ok(inputs)
    }
}

impl Denoiser for TractDenoiser {
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn batch(&self) -> usize {
        self.batch
    }

    fn run(&mut self, x: &[f32], t: usize, out: &mut [f32]) -> Result<()> {
        let engine = |e: anyhow::Error| Error::runtime(format!("tract: {}", one_line(&e)));
        let inputs = self.inputs(x, t).map_err(engine)?;
        let outputs = match &self.team {
            Some(team) => with_team(team, || self.state.run(inputs)),
            None => self.state.run(inputs),
        }
        .map_err(engine)?;
        read_floats(&outputs[0], out).map_err(engine)?;
        Ok(())
    }
}
