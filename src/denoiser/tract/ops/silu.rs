//! SiLU by tract's own routine, split between the current team's threads.
use std::sync::OnceLock;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::Silu;
use tract_onnx::tract_core::tract_linalg::element_wise::ElementWise;
use tract_onnx::tract_core::tract_linalg::routines::Func;

use super::common::split_units;

/// SiLU on tensors of at least this many floats is split between the current team's threads:
/// a quarter of the norms' threshold, since it costs an exponential and a division per value
/// (the attention UNet's 64-channel 16×16 activations, 16 K floats, are split; its 8×8 ones
/// are not).
pub const SPLIT_SILU_MIN: usize = 1 << 13;

/// SiLU (`x·σ(x)`, which tract's declutter makes of `x · Sigmoid(x)`) by tract's own SIMD
/// routine for this CPU, split between the current team's threads: tract's element-wise node
/// runs on the calling thread only, and on two threads it ran slower than on one (reading
/// what the other core wrote). Same values as tract's node: the same routine on the same
/// floats (elements are independent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TeamSilu;

impl TeamSilu {
    /// Whether `node` is tract's f32 SiLU.
    pub fn applies(model: &TypedModel, node: &TypedNode) -> TractResult<bool> {
        let Some(op) = node.op_as::<ElementWiseOp>() else {
            return Ok(false);
        };
        let x = model.outlet_fact(node.inputs[0])?;
        Ok(op.0.is::<Silu>() && op.1.is_none() && x.datum_type == DatumType::F32)
    }

    /// tract's f32 SiLU routine for this CPU, looked up once.
    pub fn routine() -> TractResult<&'static dyn ElementWise<f32>> {
        static ROUTINE: OnceLock<Box<dyn ElementWise<f32>>> = OnceLock::new();
        if let Some(r) = ROUTINE.get() {
            return Ok(r.as_ref());
        }
        let r = Func::Silu.ew_f32()?;
        Ok(ROUTINE.get_or_init(|| r).as_ref())
    }
}

impl Op for TeamSilu {
    fn name(&self) -> StaticName {
        "TeamSilu".into()
    }
    op_as_typed_op!();
}

impl EvalOp for TeamSilu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let routine = Self::routine()?;
        let mut y = x.into_tensor();
        {
            let mut ram = y.try_as_plain_ram_mut()?;
            // Cut at multiples of 16 floats: whole vectors for every kernel set.
            split_units(
                ram.as_slice_mut::<f32>()?,
                16,
                SPLIT_SILU_MIN,
                &|part, _| routine.run(part).expect("tract's SiLU routine on f32"),
            );
        }
        Ok(tvec![y.into_tvalue()])
    }
}

impl TypedOp for TeamSilu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "TeamSilu takes one input");
        Ok(tvec![inputs[0].datum_type.fact(inputs[0].shape.clone())])
    }
    as_op!();
}
