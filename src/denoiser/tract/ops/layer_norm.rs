//! Layer normalisation as one node: [`LayerNormSpec`] as the ONNX parser builds it (no
//! kernels yet), [`FusedLayerNorm`] once the rewrite has given it the loader's kernels.
use tract_onnx::tract_core::internal::*;

use edge_sample_kernels::{layer_norm, Isa};

use super::common::in_f32;

/// ONNX `LayerNormalization` over the axes from `axis` on, as parsed: it holds no kernels and
/// does not run; [`super::super::rewrite`] replaces it by a [`FusedLayerNorm`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormSpec {
    pub axis: usize,
    pub epsilon: f32,
}

impl Eq for LayerNormSpec {}

impl Op for LayerNormSpec {
    fn name(&self) -> StaticName {
        "LayerNormSpec".into()
    }
    op_as_typed_op!();
}

impl EvalOp for LayerNormSpec {
    // Nothing to fold before it has kernels (and no `eval`: the rewrite replaces it).
    not_out_of_plan!();
}

impl TypedOp for LayerNormSpec {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        output_facts(self.axis, inputs)
    }
    as_op!();
}

/// Layer normalisation over the axes from `axis` on: inputs `x`, `scale`, optional `bias`
/// (scale and bias shaped like the normalized axes); f32 or f16 data, f32 statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedLayerNorm {
    pub axis: usize,
    pub epsilon: f32,
    pub kernels: Isa,
}

impl Eq for FusedLayerNorm {}

impl FusedLayerNorm {
    pub fn new(spec: &LayerNormSpec, kernels: Isa) -> FusedLayerNorm {
        FusedLayerNorm {
            axis: spec.axis,
            epsilon: spec.epsilon,
            kernels,
        }
    }
}

impl Op for FusedLayerNorm {
    fn name(&self) -> StaticName {
        "FusedLayerNorm".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "axis {} eps {} ({})",
            self.axis,
            self.epsilon,
            self.kernels.describe()
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for FusedLayerNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut inputs = inputs.into_iter();
        let x = inputs.next().context("FusedLayerNorm: no input")?;
        let scale = inputs.next().context("FusedLayerNorm: no scale")?;
        let bias = inputs.next();
        let scale = scale.cast_to::<f32>()?;
        let scale = scale.try_as_plain_ram()?;
        let scale = scale.as_slice::<f32>()?;
        let bias = bias.as_ref().map(|b| b.cast_to::<f32>()).transpose()?;
        let bias = bias.as_ref().map(|b| b.try_as_plain_ram()).transpose()?;
        let bias = bias.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
        in_f32(x, |data| {
            layer_norm(data, scale, bias, self.epsilon, self.kernels)
        })
    }
}

impl TypedOp for FusedLayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        output_facts(self.axis, inputs)
    }
    as_op!();
}

/// `x`'s fact, once scale and bias are checked to have the normalized axes' shape.
fn output_facts(axis: usize, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
    ensure!(
        inputs.len() == 2 || inputs.len() == 3,
        "FusedLayerNorm takes 2 or 3 inputs"
    );
    let inner: TVec<TDim> = inputs[0].shape.iter().skip(axis).cloned().collect();
    for (i, f) in inputs.iter().enumerate().skip(1) {
        ensure!(
            f.shape.to_tvec() == inner,
            "FusedLayerNorm input {i} has shape {:?}, expected {:?}",
            f.shape,
            inner
        );
    }
    Ok(tvec![inputs[0].datum_type.fact(inputs[0].shape.clone())])
}
