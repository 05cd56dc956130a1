//! Instance and group normalisation as one node: [`InstanceNormSpec`] as the ONNX parser builds
//! it (no kernels yet), [`FusedGroupNorm`] once the rewrite has given it the loader's kernels
//! (and, for PyTorch's GroupNorm, the reshapes and the affine around it).
use tract_onnx::tract_core::internal::*;

use edge_sample_kernels::{group_norm_rows, Isa};

use super::common::{in_f32, split_units, SPLIT_ROWS_MIN};
use super::silu::{TeamSilu, SPLIT_SILU_MIN};

/// ONNX `InstanceNormalization` as parsed: it holds no kernels and does not run;
/// [`super::super::rewrite`] replaces it by a [`FusedGroupNorm`].
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

/// Group normalisation with its per-channel affine, as one node: every (item, group of
/// `channels_per_group` channels) block of an NCHW tensor normalised over its values, then
/// channel c scaled by `scale[c]` and shifted by `bias[c]`; f32 or f16 data, f32 statistics.
/// ONNX `InstanceNormalization` is the case of one channel per group; PyTorch's GroupNorm
/// (exported as reshape → InstanceNormalization → reshape → Mul → Add) becomes one of these
/// in [`super::super::rewrite`], its affine folded into `scale` and `bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedGroupNorm {
    pub epsilon: f32,
    pub channels_per_group: usize,
    /// SiLU after the affine, by tract's routine (as [`TeamSilu`]), on each share of groups
    /// while it is in cache.
    pub silu: bool,
    pub kernels: Isa,
}

impl Eq for FusedGroupNorm {}

impl FusedGroupNorm {
    /// The instance norm `spec` describes (one channel per group).
    pub fn instance(spec: &InstanceNormSpec, kernels: Isa) -> FusedGroupNorm {
        FusedGroupNorm {
            epsilon: spec.epsilon,
            channels_per_group: 1,
            silu: false,
            kernels,
        }
    }
}

impl Op for FusedGroupNorm {
    fn name(&self) -> StaticName {
        "FusedGroupNorm".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "eps {}, {} channel(s) per group{} ({})",
            self.epsilon,
            self.channels_per_group,
            if self.silu { ", SiLU" } else { "" },
            self.kernels.describe()
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for FusedGroupNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, scale, bias) = args_3!(inputs);
        let plane: usize = x.shape()[2..].iter().product();
        let scale = scale.cast_to::<f32>()?;
        let scale = scale.try_as_plain_ram()?;
        let bias = bias.cast_to::<f32>()?;
        let bias = bias.try_as_plain_ram()?;
        let (scale, bias) = (scale.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        let cpg = self.channels_per_group;
        let silu = if self.silu {
            ensure!(
                x.datum_type() == DatumType::F32,
                "FusedGroupNorm: SiLU on f32 only"
            );
            Some(TeamSilu::routine()?)
        } else {
            None
        };
        ensure!(
            plane > 0
                && cpg > 0
                && scale.len().is_multiple_of(cpg)
                && x.len().is_multiple_of(plane * scale.len().max(1))
                && bias.len() == scale.len(),
            "FusedGroupNorm shapes"
        );
        in_f32(x, |data| {
            // With the SiLU in, a tensor is split between threads where TeamSilu's would be.
            let min = if silu.is_some() {
                SPLIT_SILU_MIN
            } else {
                SPLIT_ROWS_MIN
            };
            split_units(data, plane * cpg, min, &|groups, first| {
                group_norm_rows(
                    groups,
                    first,
                    plane,
                    cpg,
                    scale,
                    bias,
                    self.epsilon,
                    self.kernels,
                );
                if let Some(silu) = silu {
                    silu.run(groups).expect("tract's SiLU routine on f32");
                }
            })
        })
    }
}

impl TypedOp for FusedGroupNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let facts = output_facts(inputs)?;
        ensure!(
            self.channels_per_group > 0
                && inputs[0].shape[1]
                    .to_usize()
                    .is_ok_and(|c| c.is_multiple_of(self.channels_per_group)),
            "FusedGroupNorm: {} channel(s) per group for input {:?}",
            self.channels_per_group,
            inputs[0].shape
        );
        Ok(facts)
    }
    as_op!();
}

/// `x`'s fact, once scale and bias are checked to hold one value per channel.
fn output_facts(inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
    ensure!(inputs.len() == 3, "FusedGroupNorm takes x, scale, bias");
    ensure!(inputs[0].rank() >= 3, "FusedGroupNorm input rank");
    for f in &inputs[1..] {
        ensure!(
            f.rank() == 1 && f.shape[0] == inputs[0].shape[1],
            "FusedGroupNorm scale/bias shape {:?} for input {:?}",
            f.shape,
            inputs[0].shape
        );
    }
    Ok(tvec![inputs[0].datum_type.fact(inputs[0].shape.clone())])
}
