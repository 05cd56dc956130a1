//! Softmax over the last axis by our kernel.
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

use edge_sample_kernels::{softmax, Isa};

use super::common::{in_f32, split_rows};

/// Softmax over the last axis (attention weights) by [`softmax`]: one pass for the maximum,
/// one for the exponentials and their sum, one to scale, instead of tract's generic
/// reduction chain.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedSoftmax {
    pub kernels: Isa,
}

impl Eq for FusedSoftmax {}

impl FusedSoftmax {
    /// Whether `node` is a plain f32 softmax over its last axis.
    pub fn applies(model: &TypedModel, node: &TypedNode) -> TractResult<bool> {
        let Some(op) = node.op_as::<Softmax>() else {
            return Ok(false);
        };
        let x = model.outlet_fact(node.inputs[0])?;
        Ok(x.datum_type == DatumType::F32
            && op.kind == SoftmaxKind::Softmax
            && op.quant_output_dt.is_none()
            && x.rank() > 0
            && op.axes.as_slice() == [x.rank() - 1])
    }
}

impl Op for FusedSoftmax {
    fn name(&self) -> StaticName {
        "FusedSoftmax".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("last axis ({})", self.kernels.describe())])
    }
    op_as_typed_op!();
}

impl EvalOp for FusedSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let inner = x.shape().last().copied().unwrap_or(1);
        ensure!(inner > 0 && x.len() % inner == 0, "FusedSoftmax shape");
        in_f32(x, |data| {
            split_rows(data, inner, &|rows, _| softmax(rows, inner, self.kernels))
        })
    }
}

impl TypedOp for FusedSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "FusedSoftmax takes one input");
        Ok(tvec![inputs[0].datum_type.fact(inputs[0].shape.clone())])
    }
    as_op!();
}
