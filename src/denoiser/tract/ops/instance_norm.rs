//! Instance normalisation as one node: [`InstanceNormSpec`] as the ONNX parser builds it (no
//! kernels yet), [`FusedInstanceNorm`] once the rewrite has given it the loader's kernels.
use tract_onnx::tract_core::internal::*;

use edge_sample_kernels::{instance_norm_rows, Isa};

use super::common::{in_f32, split_rows};

/// ONNX `InstanceNormalization` as parsed: it holds no kernels and does not run;
/// [`super::super::rewrite`] replaces it by a [`FusedInstanceNorm`].
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceNormSpec {
    pub epsilon: f32,
}

impl Eq for InstanceNormSpec {}

impl Op for InstanceNormSpec {
    fn name(&self) -> StaticName {
        "InstanceNormSpec".into()
    }
    op_as_typed_op!();
}

impl EvalOp for InstanceNormSpec {
    // Nothing to fold before it has kernels (and no `eval`: the rewrite replaces it).
    not_out_of_plan!();
}

impl TypedOp for InstanceNormSpec {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        output_facts(inputs)
    }
    as_op!();
}

/// ONNX InstanceNormalization: every (item, channel) plane normalised over its spatial axes,
/// then `scale[c]`, `bias[c]`; f32 or f16 data, f32 statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedInstanceNorm {
    pub epsilon: f32,
    pub kernels: Isa,
}

impl Eq for FusedInstanceNorm {}

impl FusedInstanceNorm {
    pub fn new(spec: &InstanceNormSpec, kernels: Isa) -> FusedInstanceNorm {
        FusedInstanceNorm {
            epsilon: spec.epsilon,
            kernels,
        }
    }
}

impl Op for FusedInstanceNorm {
    fn name(&self) -> StaticName {
        "FusedInstanceNorm".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "eps {} ({})",
            self.epsilon,
            self.kernels.describe()
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for FusedInstanceNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, scale, bias) = args_3!(inputs);
        let inner: usize = x.shape()[2..].iter().product();
        let scale = scale.cast_to::<f32>()?;
        let scale = scale.try_as_plain_ram()?;
        let bias = bias.cast_to::<f32>()?;
        let bias = bias.try_as_plain_ram()?;
        let (scale, bias) = (scale.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        ensure!(
            inner > 0 && x.len() % (inner * scale.len().max(1)) == 0 && bias.len() == scale.len(),
            "FusedInstanceNorm shapes"
        );
        in_f32(x, |data| {
            split_rows(data, inner, &|rows, first| {
                instance_norm_rows(rows, first, inner, scale, bias, self.epsilon, self.kernels)
            })
        })
    }
}

impl TypedOp for FusedInstanceNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        output_facts(inputs)
    }
    as_op!();
}

/// `x`'s fact, once scale and bias are checked to hold one value per channel.
fn output_facts(inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
    ensure!(inputs.len() == 3, "FusedInstanceNorm takes x, scale, bias");
    ensure!(inputs[0].rank() >= 3, "FusedInstanceNorm input rank");
    for f in &inputs[1..] {
        ensure!(
            f.rank() == 1 && f.shape[0] == inputs[0].shape[1],
            "FusedInstanceNorm scale/bias shape {:?} for input {:?}",
            f.shape,
            inputs[0].shape
        );
    }
    Ok(tvec![inputs[0].datum_type.fact(inputs[0].shape.clone())])
}
