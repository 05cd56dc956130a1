//! ONNX `QuantizeLinear` (f32 → u8/i8, per-tensor) as onnxruntime computes it, vectorized:
//! [`edge_sample_kernels::quantize`].
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::{QuantizeLinearI8, QuantizeLinearU8};

use edge_sample_kernels::{quantize, Q8};

/// Tensors of at least this many floats are split between the current team's threads.
const SPLIT_QUANTIZE_MIN: usize = 1 << 14;

/// `y = saturate(round_half_even(x / y_scale) + y_zero)`: onnxruntime's QuantizeLinear (a
/// division, as MLAS does), where tract's own node multiplies by `1 / y_scale`, which rounds
/// some values one step the other way.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeOp {
    y_scale: f32,
    y_zero: i32,
    y_type: Q8,
    out_dt: DatumType,
}

impl Eq for QuantizeOp {}

impl QuantizeOp {
    /// The replacement for tract's f32 `QuantizeLinear` at `node`, when it is one.
    pub fn for_node(model: &TypedModel, node: &TypedNode) -> TractResult<Option<QuantizeOp>> {
        let Some(op) = node.op_as::<ElementWiseOp>() else {
            return Ok(None);
        };
        if model.outlet_fact(node.inputs[0])?.datum_type != DatumType::F32 {
            return Ok(None);
        }
        let (inv, y_zero, y_type) = if let Some(q) = op.0.downcast_ref::<QuantizeLinearU8>() {
            (q.scale, q.zero_point as i32, Q8::U8)
        } else if let Some(q) = op.0.downcast_ref::<QuantizeLinearI8>() {
            (q.scale, q.zero_point as i32, Q8::I8)
        } else {
            return Ok(None);
        };
        // tract keeps 1 / y_scale: take y_scale back where the reciprocal gives it exactly.
        let y_scale = inv.recip();
        if !y_scale.is_finite() || y_scale <= 0.0 || y_scale.recip() != inv {
            return Ok(None);
        }
        Ok(Some(QuantizeOp {
            y_scale,
            y_zero,
            y_type,
            out_dt: node.outputs[0].fact.datum_type,
        }))
    }
}

impl Op for QuantizeOp {
    fn name(&self) -> StaticName {
        "Quantize".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale {} zero point {} ({:?})",
            self.y_scale, self.y_zero, self.y_type
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for QuantizeOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let mut y = Tensor::zero_dt(self.out_dt, x.shape())?;
        {
            let xr = x.try_as_plain_ram()?;
            let xs = xr.as_slice::<f32>()?;
            let mut yr = y.try_as_plain_ram_mut()?;
            // SAFETY: the output is an 8-bit type (checked in `for_node`): written as bytes.
            let ys = unsafe { yr.as_slice_mut_unchecked::<u8>() };
            let team = edge_sample_kernels::team::current()
                .filter(|t| t.threads() > 1 && xs.len() >= SPLIT_QUANTIZE_MIN);
            let (s, z, t) = (self.y_scale, self.y_zero, self.y_type);
            match team {
                Some(team) => {
                    let parts = team.threads();
                    let dst = edge_sample_kernels::view::DisjointMut::new(ys);
                    team.run(parts, &|p| {
                        let r = edge_sample_kernels::share(xs.len(), p, parts);
                        // SAFETY: the parts take disjoint ranges.
                        let out = unsafe { dst.slice_mut(r.clone()) };
                        quantize(&xs[r], s, z, t, out);
                    });
                }
                None => quantize(xs, s, z, t, ys),
            }
        }
        Ok(tvec![y.into_tvalue()])
    }
}

impl TypedOp for QuantizeOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "Quantize takes one input");
        Ok(tvec![self.out_dt.fact(inputs[0].shape.clone())])
    }
    as_op!();
}
