//! Our kernels (crate `edge-sample-kernels`) as tract operators, and the two places they enter the
//! graph:
//!
//! - ONNX `LayerNormalization` is parsed into [`FusedLayerNorm`] (one node) instead of tract's
//!   nine-node expansion, through tract-onnx's operator register.
//! - After type analysis, every float convolution that [`DirectConv`] supports (NCHW or CHW,
//!   constant weights and bias, f32; strided and transposed ones lowered as in `lowered.rs`)
//!   replaces tract's `Conv`, and every f32 matrix product tract's declutter leaves as an
//!   einsum becomes a [`FusedMatMul`], before tract optimizes the rest of the plan.
//!
//! Both are skipped when the loader is asked for tract's own lowering ([`super::Kernels::Tract`]).

use std::sync::{Arc, OnceLock};

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::array::MultiBroadcastTo;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv, KernelFormat};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::Max;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::nn::{Silu, Softmax, SoftmaxKind};
use tract_onnx::tract_core::tract_linalg::element_wise::ElementWise;
use tract_onnx::tract_core::tract_linalg::routines::Func;
use tract_onnx::tract_hir::internal::*;

use edge_sample_kernels::{
    instance_norm_rows, layer_norm, softmax, team, BlockDeconv, BlockShape, ConvAlgorithm,
    ConvShape, Isa, MatMul, MatMulShape, PackedConv, StridedConv, StridedShape, WinogradConv,
};

type OnnxBuilder =
    fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// tract's own `LayerNormalization` builder, for the forms we leave to it.
static TRACT_LAYER_NORM: OnceLock<OnnxBuilder> = OnceLock::new();

/// Routes ONNX `LayerNormalization` to [`FusedLayerNorm`] in this parser.
pub fn register(onnx: &mut tract_onnx::Onnx, _kernels: Isa) {
    if let Some(&tract) = onnx.op_register.0.get("LayerNormalization") {
        let _ = TRACT_LAYER_NORM.set(tract);
    }
    onnx.op_register
        .insert("LayerNormalization", layer_norm_builder);
    onnx.op_register
        .insert("InstanceNormalization", instance_norm_builder);
}

fn instance_norm_builder(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let epsilon = node.get_attr_opt("epsilon")?.unwrap_or(1e-5);
    Ok((expand(InstanceNormExpansion { epsilon }), vec![]))
}

#[derive(Debug, Clone)]
struct InstanceNormExpansion {
    epsilon: f32,
}

impl Expansion for InstanceNormExpansion {
    fn name(&self) -> StaticName {
        "InstanceNormalization".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].datum_type, &inputs[1].datum_type)?;
        s.equals(&inputs[0].datum_type, &inputs[2].datum_type)?;
        s.equals(&inputs[1].shape, &inputs[2].shape)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        s.equals(&inputs[1].shape[0], &inputs[0].shape[1])?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        ensure!(
            model.outlet_fact(inputs[0])?.rank() >= 3,
            "InstanceNormalization needs [N, C, spatial...]"
        );
        // `rewrite` sets the kernels the loader chose.
        model.wire_node(
            prefix,
            FusedInstanceNorm {
                epsilon: self.epsilon,
                kernels: Isa::best(),
            },
            inputs,
        )
    }
}

/// ONNX InstanceNormalization: every (item, channel) plane normalised over its spatial axes,
/// then `scale[c]`, `bias[c]`; f32 or f16 data, f32 statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedInstanceNorm {
    pub epsilon: f32,
    pub kernels: Isa,
}

impl Eq for FusedInstanceNorm {}

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
    as_op!();
}

fn layer_norm_builder(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    // The optional mean and inverse-deviation outputs are tract's to produce.
    let extra_outputs = node.output.iter().skip(1).any(|o| !o.is_empty());
    if extra_outputs {
        let tract = TRACT_LAYER_NORM
            .get()
            .ok_or_else(|| anyhow::anyhow!("no LayerNormalization builder in tract-onnx"))?;
        return tract(ctx, node);
    }
    let axis = node.get_attr_opt("axis")?.unwrap_or(-1);
    let epsilon = node.get_attr_opt("epsilon")?.unwrap_or(1e-5);
    Ok((
        expand(LayerNormExpansion {
            axis,
            epsilon,
            have_bias: node.input.len() == 3,
        }),
        vec![],
    ))
}

#[derive(Debug, Clone)]
struct LayerNormExpansion {
    axis: i64,
    epsilon: f32,
    have_bias: bool,
}

impl Expansion for LayerNormExpansion {
    fn name(&self) -> StaticName {
        "LayerNormalization".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2 + self.have_bias as usize)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &inputs[1].datum_type)?;
        if self.have_bias {
            s.equals(&inputs[0].datum_type, &inputs[2].datum_type)?;
        }
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?.clone();
        let rank = fact.rank();
        let axis = if self.axis < 0 {
            self.axis + rank as i64
        } else {
            self.axis
        };
        ensure!(
            (0..rank as i64).contains(&axis),
            "LayerNormalization axis {} for a rank-{rank} input",
            self.axis
        );
        let axis = axis as usize;
        let normalized: TVec<TDim> = fact.shape.iter().skip(axis).cloned().collect();
        // Scale and bias become exactly the normalized shape (ONNX lets them broadcast).
        let mut wired = tvec![inputs[0]];
        for (i, &input) in inputs.iter().enumerate().skip(1) {
            let mut w = input;
            let f = model.outlet_fact(w)?.clone();
            ensure!(
                f.rank() <= normalized.len(),
                "LayerNormalization input {i} has rank {} > {}",
                f.rank(),
                normalized.len()
            );
            for _ in f.rank()..normalized.len() {
                w = model.wire_node(format!("{prefix}.add_axis_{i}"), AxisOp::Add(0), &[w])?[0];
            }
            if model.outlet_fact(w)?.shape.to_tvec() != normalized {
                w = model.wire_node(
                    format!("{prefix}.broadcast_{i}"),
                    MultiBroadcastTo {
                        shape: normalized.iter().cloned().collect(),
                    },
                    &[w],
                )?[0];
            }
            wired.push(w);
        }
        model.wire_node(
            prefix,
            // `rewrite` sets the kernels the loader chose.
            FusedLayerNorm {
                axis,
                epsilon: self.epsilon,
                kernels: Isa::best(),
            },
            &wired,
        )
    }
}

/// Runs `f` on `x` as f32 and returns the result in `x`'s type: f32 data in place when this
/// node holds the only reference to it, f16 data through an f32 copy.
fn in_f32(x: TValue, f: impl FnOnce(&mut [f32])) -> TractResult<TVec<TValue>> {
    let dt = x.datum_type();
    let mut y = match dt {
        DatumType::F32 => x.into_tensor(),
        DatumType::F16 => x.cast_to::<f32>()?.into_owned(),
        dt => bail!("normalisation of {dt:?} data"),
    };
    f(y.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
    if dt == DatumType::F16 {
        y = y.cast_to::<f16>()?.into_owned();
    }
    Ok(tvec![y.into_tvalue()])
}

/// Row-wise work on tensors of at least this many floats is split between the current
/// team's threads (smaller ones cost more to hand over than they take).
const SPLIT_ROWS_MIN: usize = 1 << 15;

/// `f(rows, first row)` over `data`'s rows of `inner` floats: all at once, or an even share of
/// whole rows per thread of the current team. Same results either way (rows are independent).
fn split_rows(data: &mut [f32], inner: usize, f: &(dyn Fn(&mut [f32], usize) + Sync)) {
    split_units(data, inner, SPLIT_ROWS_MIN, f)
}

/// `f(part, first unit)` over `data`, split between the current team's threads when it holds
/// at least `min` floats (see [`team::split_units`]).
fn split_units(data: &mut [f32], unit: usize, min: usize, f: &(dyn Fn(&mut [f32], usize) + Sync)) {
    team::split_units(team::current().as_deref(), data, unit, min, f)
}

/// SiLU on tensors of at least this many floats is split between the current team's threads:
/// a quarter of the norms' threshold, since it costs an exponential and a division per value
/// (the attention UNet's 64-channel 16×16 activations, 16 K floats, are split; its 8×8 ones
/// are not).
const SPLIT_SILU_MIN: usize = 1 << 13;

/// SiLU (`x·σ(x)`, which tract's declutter makes of `x · Sigmoid(x)`) by tract's own SIMD
/// routine for this CPU, split between the current team's threads: tract's element-wise node
/// runs on the calling thread only, and on two threads it ran slower than on one (reading
/// what the other core wrote). Same values as tract's node: the same routine on the same
/// floats (elements are independent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TeamSilu;

impl TeamSilu {
    /// Whether `node` is tract's f32 SiLU.
    fn applies(model: &TypedModel, node: &TypedNode) -> TractResult<bool> {
        let Some(op) = node.op_as::<ElementWiseOp>() else {
            return Ok(false);
        };
        let x = model.outlet_fact(node.inputs[0])?;
        Ok(op.0.is::<Silu>() && op.1.is_none() && x.datum_type == DatumType::F32)
    }

    /// tract's f32 SiLU routine for this CPU, looked up once.
    fn routine() -> TractResult<&'static dyn ElementWise<f32>> {
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
    fn applies(model: &TypedModel, node: &TypedNode) -> TractResult<bool> {
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

/// A float matrix product (tract's `EinSum` of two f32 inputs with one m, one k and one n
/// axis and any batch axes, at fixed shapes) on our register tiles: [`MatMul`].
#[derive(Debug, Clone, PartialEq)]
pub struct FusedMatMul {
    mm: MatMul,
    out_shape: TVec<usize>,
}

impl Eq for FusedMatMul {}

impl FusedMatMul {
    /// The product `node` computes, when it is one we take.
    fn for_einsum(model: &TypedModel, node: &TypedNode, kernels: Isa) -> TractResult<Option<Self>> {
        let Some(op) = node.op_as::<EinSum>() else {
            return Ok(None);
        };
        if op.q_params.is_some() || op.operating_dt != DatumType::F32 || node.inputs.len() != 2 {
            return Ok(None);
        }
        let facts = [
            model.outlet_fact(node.inputs[0])?,
            model.outlet_fact(node.inputs[1])?,
        ];
        if facts.iter().any(|f| f.datum_type != DatumType::F32)
            || node.outputs[0].fact.datum_type != DatumType::F32
        {
            return Ok(None);
        }
        let (Some(sa), Some(sb), Some(sc)) = (
            facts[0].shape.as_concrete(),
            facts[1].shape.as_concrete(),
            node.outputs[0].fact.shape.as_concrete(),
        ) else {
            return Ok(None);
        };
        let strides = |shape: &[usize]| -> TVec<usize> {
            let mut st: TVec<usize> = tvec![1; shape.len()];
            for i in (0..shape.len().saturating_sub(1)).rev() {
                st[i] = st[i + 1] * shape[i + 1];
            }
            st
        };
        let (ta, tb, tc) = (strides(sa), strides(sb), strides(sc));
        // Axes by the operands they appear in: m (A and C), n (B and C), k (A and B), batch
        // (all three; broadcast where an input has length 1).
        let (mut ms, mut ns, mut ks) = (Vec::new(), Vec::new(), Vec::new());
        let mut batch = Vec::new();
        for axis in op.axes.iter_all_axes() {
            let one = |v: &TVec<usize>| (v.len() <= 1).then(|| v.first().copied());
            let (Some(ia), Some(ib), Some(ic)) = (
                one(&axis.inputs[0]),
                one(&axis.inputs[1]),
                one(&axis.outputs[0]),
            ) else {
                return Ok(None);
            };
            let len = |pos: Option<usize>, shape: &[usize]| pos.map_or(1, |p| shape[p]);
            let (la, lb, lc) = (len(ia, sa), len(ib, sb), len(ic, sc));
            let st = |pos: Option<usize>, l: usize, t: &TVec<usize>| match pos {
                Some(p) if l > 1 => t[p],
                _ => 0,
            };
            let (xa, xb, xc) = (st(ia, la, &ta), st(ib, lb, &tb), st(ic, lc, &tc));
            match (ia.is_some(), ib.is_some(), ic.is_some()) {
                (true, false, true) if la == lc => ms.push((la, [xa, xc])),
                (false, true, true) if lb == lc => ns.push((lb, [xb, xc])),
                (true, true, false) if la == lb => ks.push((la, [xa, xb])),
                (true, true, true) if (la == lc || la == 1) && (lb == lc || lb == 1) => {
                    batch.push((lc, [xa, xb, xc]))
                }
                // Size-1 axes of one operand only: nothing to iterate.
                _ if la == 1 && lb == 1 && lc == 1 => {}
                _ => return Ok(None),
            }
        }
        // The longest m and n axes are the product's; other ones are batch axes that one
        // input does not have (stride 0 there).
        let take = |axes: &mut Vec<(usize, [usize; 2])>| {
            let i = (0..axes.len()).max_by_key(|&i| (axes[i].0, std::cmp::Reverse(i)))?;
            Some(axes.remove(i))
        };
        let (m, [am, cm]) = take(&mut ms).unwrap_or((1, [0, 0]));
        let (n, [bn, cn]) = take(&mut ns).unwrap_or((1, [0, 0]));
        batch.extend(ms.iter().map(|&(l, [a, c])| (l, [a, 0, c])));
        batch.extend(ns.iter().map(|&(l, [b, c])| (l, [0, b, c])));
        // Several summed axes are one when they are nested alike in A and B (heads × head
        // dimension read as one run), else the product is left to tract.
        if ks.is_empty() {
            return Ok(None);
        }
        ks.sort_by_key(|k| std::cmp::Reverse(k.1[0]));
        let mut summed = (1usize, [0usize; 2]);
        for &(len, [xa, xb]) in ks.iter().rev().filter(|k| k.0 > 1) {
            if summed.0 == 1 {
                summed = (len, [xa, xb]);
            } else if xa == summed.0 * summed.1[0] && xb == summed.0 * summed.1[1] {
                summed.0 *= len;
            } else {
                return Ok(None);
            }
        }
        let (k, [ak, bk]) = summed;
        // Matrix-vector products (a batch-1 time embedding) fill a quarter of a 4-row tile;
        // tract's own matrix-vector kernels take them.
        if m == 1 || n == 1 {
            return Ok(None);
        }
        // Batch axes in C's order, so that consecutive entries write neighbouring outputs.
        batch.sort_by_key(|b| std::cmp::Reverse(b.1[2]));
        let shape = MatMulShape {
            m,
            k,
            n,
            batch,
            a: [am, ak],
            b: [bk, bn],
            c: [cm, cn],
        };
        let mut mm = MatMul::new(shape, kernels);
        // A constant operand read as positions (a linear layer's weights) is packed once.
        if let Some(k) = &facts[mm.positions_input()].konst {
            mm = mm.with_constant_positions(k.try_as_plain_ram()?.as_slice::<f32>()?);
        }
        Ok(Some(FusedMatMul {
            mm,
            out_shape: sc.into(),
        }))
    }
}

impl Op for FusedMatMul {
    fn name(&self) -> StaticName {
        "FusedMatMul".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} ({})",
            self.mm.describe(),
            self.mm.kernels.describe()
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for FusedMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        // Safety: every element of C is one (batch, m, n) output, written by `run`.
        let mut c = unsafe { Tensor::uninitialized::<f32>(&self.out_shape)? };
        let (a, b) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
        let team = team::current();
        self.mm.run(
            team.as_deref(),
            a.as_slice::<f32>()?,
            b.as_slice::<f32>()?,
            c.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec![c.into_tvalue()])
    }
}

impl TypedOp for FusedMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2, "FusedMatMul takes two inputs");
        Ok(tvec![f32::fact(&*self.out_shape)])
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
        ensure!(
            inputs.len() == 2 || inputs.len() == 3,
            "FusedLayerNorm takes 2 or 3 inputs"
        );
        let inner: TVec<TDim> = inputs[0].shape.iter().skip(self.axis).cloned().collect();
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
    as_op!();
}

/// How a [`DirectConv`] computes: the direct kernel, or the direct kernel after a gather
/// (strided convolutions) or before a scatter (transposed convolutions, kernel = stride).
#[derive(Debug, Clone, PartialEq)]
enum ConvImpl {
    Direct(PackedConv),
    Winograd(WinogradConv),
    Strided(StridedConv),
    Block(BlockDeconv),
}

impl ConvImpl {
    /// (co, out_h, out_w).
    fn out_chw(&self) -> [usize; 3] {
        match self {
            ConvImpl::Direct(p) => [p.shape.co, p.shape.out_h(), p.shape.out_w()],
            ConvImpl::Winograd(p) => [p.shape.co, p.shape.out_h(), p.shape.out_w()],
            ConvImpl::Strided(p) => [p.shape.co, p.shape.out_h(), p.shape.out_w()],
            ConvImpl::Block(p) => [p.shape.co, p.shape.out_h(), p.shape.out_w()],
        }
    }

    fn describe(&self) -> String {
        match self {
            ConvImpl::Direct(p) => {
                let s = &p.shape;
                format!(
                    "{}→{} {}×{} on {}×{}, pad {:?}, tile {:?}",
                    s.ci,
                    s.co,
                    s.kh,
                    s.kw,
                    s.h,
                    s.w,
                    s.pad,
                    p.tile()
                )
            }
            ConvImpl::Winograd(p) => {
                let s = &p.shape;
                format!(
                    "{}→{} 3×3 on {}×{}, pad {:?}, Winograd {}, tile {:?}",
                    s.ci,
                    s.co,
                    s.h,
                    s.w,
                    s.pad,
                    p.block().describe(),
                    p.tile()
                )
            }
            ConvImpl::Strided(p) => {
                let s = &p.shape;
                format!(
                    "{}→{} {}×{} stride {:?} on {}×{}, pad {:?}, im2col + tile {:?}",
                    s.ci,
                    s.co,
                    s.kh,
                    s.kw,
                    s.stride,
                    s.h,
                    s.w,
                    s.pad,
                    p.tile()
                )
            }
            ConvImpl::Block(p) => {
                let s = &p.shape;
                format!(
                    "transposed {}→{} {}×{} stride = kernel on {}×{}, tile {:?} + depth to space",
                    s.ci,
                    s.co,
                    s.kh,
                    s.kw,
                    s.h,
                    s.w,
                    p.tile()
                )
            }
        }
    }
}

/// A convolution run by our kernels ([`PackedConv`], directly or lowered): one input (two with
/// a run-time bias), weights and constant bias inside.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectConv {
    conv: Arc<ConvImpl>,
    /// Whether the data has a batch axis (NCHW) or not (CHW).
    batched: bool,
    /// max(·, 0) applied as the tile is stored (a following ONNX Relu, fused).
    relu: bool,
    /// The bias is the op's second input (computed per run) rather than packed.
    runtime_bias: bool,
    kernels: Isa,
}

impl Eq for DirectConv {}

/// The data layout and shape of a convolution's input: (batched, concrete shape).
fn nchw_input(
    model: &TypedModel,
    node: &TypedNode,
    format: DataFormat,
) -> TractResult<Option<(bool, TVec<usize>)>> {
    let batched = match format {
        DataFormat::NCHW => true,
        DataFormat::CHW => false,
        _ => return Ok(None),
    };
    let x = model.outlet_fact(node.inputs[0])?;
    if x.datum_type != DatumType::F32 || node.inputs.len() != 3 {
        return Ok(None);
    }
    Ok(x.shape
        .as_concrete()
        .filter(|s| s.len() == 3 + batched as usize)
        .map(|s| (batched, s.into())))
}

/// A convolution's bias input: packed values (empty for none), or `None` in the pair's second
/// place when it is computed at run time — `co` values, or `n × co` laid out image by image
/// (tract folds an Add that follows the conv, such as a per-image time embedding, into the
/// bias). `None` when the bias has another form.
fn conv_bias(
    model: &TypedModel,
    bias: OutletId,
    co: usize,
    batch: Option<usize>,
) -> TractResult<Option<(Vec<f32>, bool)>> {
    let fact = model.outlet_fact(bias)?;
    if fact.datum_type != DatumType::F32 {
        return Ok(None);
    }
    if let Some(bk) = &fact.konst {
        let values = bk.try_as_plain_ram()?;
        let values = values.as_slice::<f32>()?;
        return Ok(match values.len() {
            0 => Some((vec![], false)),
            1 => Some((vec![values[0]; co], false)),
            n if n == co => Some((values.to_vec(), false)),
            _ => None,
        });
    }
    let Some(bs) = fact.shape.as_concrete() else {
        return Ok(None);
    };
    // Drop trailing and leading unit axes: [n, co, 1, 1] → [n, co]; [co, 1, 1] → [co].
    let mut dims: Vec<usize> = bs.to_vec();
    while dims.len() > 1 && dims.last() == Some(&1) {
        dims.pop();
    }
    while dims.len() > 1 && dims[0] == 1 {
        dims.remove(0);
    }
    let fits = dims == [co] || batch.is_some_and(|n| dims == [n, co]);
    Ok(fits.then(|| (vec![], true)))
}

/// A constant f32 tensor's values with the expected shape.
fn const_f32(
    model: &TypedModel,
    outlet: OutletId,
    shape: &[usize],
) -> TractResult<Option<Vec<f32>>> {
    let Some(k) = model.outlet_fact(outlet)?.konst.clone() else {
        return Ok(None);
    };
    if k.datum_type() != DatumType::F32 || k.shape() != shape {
        return Ok(None);
    }
    Ok(Some(k.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
}

impl DirectConv {
    /// The replacement for `conv` at `node`, or `None` where our kernels do not apply.
    fn for_conv(
        model: &TypedModel,
        node: &TypedNode,
        conv: &Conv,
        kernels: Isa,
        conv_algorithm: ConvAlgorithm,
    ) -> TractResult<Option<DirectConv>> {
        let spec = &conv.pool_spec;
        let Some((batched, xs)) = nchw_input(model, node, spec.data_format)? else {
            return Ok(None);
        };
        if conv.q_params.is_some()
            || conv.group != 1
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.rank() != 2
            || spec.dilations().iter().any(|&d| d != 1)
        {
            return Ok(None);
        }
        let hw = &xs[xs.len() - 2..];
        let (ci, co) = (spec.input_channels, spec.output_channels);
        let [kh, kw] = [spec.kernel_shape[0], spec.kernel_shape[1]];
        if xs[xs.len() - 3] != ci {
            return Ok(None);
        }
        let Some(weights) = const_f32(model, node.inputs[1], &[co, ci, kh, kw])? else {
            return Ok(None);
        };
        let padding = spec.computed_padding(hw);
        let pad = [
            padding[0].pad_before,
            padding[1].pad_before,
            padding[0].pad_after,
            padding[1].pad_after,
        ];
        let batch = batched.then(|| xs[0]);
        let Some((bias, runtime_bias)) = conv_bias(model, node.inputs[2], co, batch)? else {
            return Ok(None);
        };
        let stride = [spec.strides()[0], spec.strides()[1]];
        let imp = if stride == [1, 1] {
            let shape = ConvShape {
                ci,
                co,
                h: hw[0],
                w: hw[1],
                kh,
                kw,
                pad,
            };
            if !shape.is_valid() {
                return Ok(None);
            }
            match conv_algorithm.winograd(&shape) {
                Some(block) => {
                    ConvImpl::Winograd(WinogradConv::new(shape, &weights, &bias, kernels, block))
                }
                None => ConvImpl::Direct(PackedConv::new(shape, &weights, &bias, kernels)),
            }
        } else {
            let shape = StridedShape {
                ci,
                co,
                h: hw[0],
                w: hw[1],
                kh,
                kw,
                stride,
                pad,
            };
            if !shape.is_valid() {
                return Ok(None);
            }
            ConvImpl::Strided(StridedConv::new(shape, &weights, &bias, kernels))
        };
        DirectConv::checked(model, node, imp, batched, runtime_bias, kernels)
    }

    /// The replacement for a transposed convolution whose kernel equals its stride.
    fn for_deconv(
        model: &TypedModel,
        node: &TypedNode,
        deconv: &Deconv,
        kernels: Isa,
    ) -> TractResult<Option<DirectConv>> {
        let spec = &deconv.pool_spec;
        let Some((batched, xs)) = nchw_input(model, node, spec.data_format)? else {
            return Ok(None);
        };
        if deconv.group != 1
            || deconv.kernel_format != KernelFormat::OIHW
            || spec.rank() != 2
            || spec.dilations().iter().any(|&d| d != 1)
            || deconv.adjustments.iter().any(|&a| a != 0)
            || spec.strides().as_ref() != spec.kernel_shape.as_slice()
            || !(0..2).all(|ax| spec.padding.valid_dim(ax, false))
        {
            return Ok(None);
        }
        // tract keeps the kernel as co × ci × kh × kw (ONNX's ci × co × kh × kw, axes swapped
        // by the ONNX parser); BlockDeconv takes ONNX's order.
        let ci = xs[xs.len() - 3];
        let (co, [kh, kw]) = (
            spec.output_channels,
            [spec.kernel_shape[0], spec.kernel_shape[1]],
        );
        if spec.input_channels != ci {
            return Ok(None);
        }
        let Some(tw) = const_f32(model, node.inputs[1], &[co, ci, kh, kw])? else {
            return Ok(None);
        };
        let taps = kh * kw;
        let mut weights = vec![0.0f32; tw.len()];
        for o in 0..co {
            for c in 0..ci {
                weights[(c * co + o) * taps..][..taps]
                    .copy_from_slice(&tw[(o * ci + c) * taps..][..taps]);
            }
        }
        let batch = batched.then(|| xs[0]);
        let Some((bias, runtime_bias)) = conv_bias(model, node.inputs[2], co, batch)? else {
            return Ok(None);
        };
        let shape = BlockShape {
            ci,
            co,
            h: xs[xs.len() - 2],
            w: xs[xs.len() - 1],
            kh,
            kw,
        };
        let imp = ConvImpl::Block(BlockDeconv::new(shape, &weights, &bias, kernels));
        DirectConv::checked(model, node, imp, batched, runtime_bias, kernels)
    }

    /// The op, when its output shape is the node's (anything else is left to tract).
    fn checked(
        model: &TypedModel,
        node: &TypedNode,
        conv: ConvImpl,
        batched: bool,
        runtime_bias: bool,
        kernels: Isa,
    ) -> TractResult<Option<DirectConv>> {
        let op = DirectConv {
            conv: Arc::new(conv),
            batched,
            relu: false,
            runtime_bias,
            kernels,
        };
        let x = model.outlet_fact(node.inputs[0])?.shape.to_tvec();
        Ok((op.out_shape(&x) == node.outputs[0].fact.shape.to_tvec()).then_some(op))
    }

    fn out_shape<D: Clone + From<usize>>(&self, input: &[D]) -> TVec<D> {
        let [co, h, w] = self.conv.out_chw();
        let mut shape: TVec<D> = input.iter().cloned().collect();
        let r = shape.len();
        shape[r - 3] = co.into();
        shape[r - 2] = h.into();
        shape[r - 1] = w.into();
        shape
    }
}

impl Op for DirectConv {
    fn name(&self) -> StaticName {
        "DirectConv".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}{} ({})",
            self.conv.describe(),
            if self.relu { ", relu" } else { "" },
            self.kernels.describe()
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for DirectConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = self.out_shape(x.shape());
        // Safety: every element is written by `run` (each output pixel belongs to one tile,
        // or one block).
        let mut y = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        let x = x.try_as_plain_ram()?;
        let bias = match inputs.get(1) {
            Some(b) if self.runtime_bias => Some(b.try_as_plain_ram()?),
            _ => None,
        };
        let bias = bias.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
        let (x, out) = (x.as_slice::<f32>()?, &mut y.try_as_plain_ram_mut()?);
        let out = out.as_slice_mut::<f32>()?;
        let team = team::current();
        let team = team.as_deref();
        match &*self.conv {
            ConvImpl::Direct(p) => p.run_on(team, x, out, self.relu, bias),
            ConvImpl::Winograd(p) => p.run_on(team, x, out, self.relu, bias),
            ConvImpl::Strided(p) => p.run_on(team, x, out, self.relu, bias),
            ConvImpl::Block(p) => p.run_on(team, x, out, self.relu, bias),
        }
        Ok(tvec![y.into_tvalue()])
    }
}

impl TypedOp for DirectConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].rank() == 3 + self.batched as usize,
            "DirectConv input rank"
        );
        let shape = self.out_shape(&inputs[0].shape.to_tvec());
        Ok(tvec![f32::fact(shape)])
    }
    as_op!();
}

/// Replaces the 1×1 stride-1 convolutions and the transposed convolutions of `model` by
/// [`DirectConv`]s. Run before tract's declutter, which would turn them into matrix products
/// (einsums) we do not take.
pub fn rewrite_before_declutter(model: &mut TypedModel, kernels: Isa) -> TractResult<usize> {
    let count = replace_convs(model, kernels, ConvAlgorithm::Direct, |node| {
        node.op_as::<Deconv>().is_some()
            || node.op_as::<Conv>().is_some_and(|c| {
                c.pool_spec.kernel_shape.iter().all(|&k| k == 1)
                    && c.pool_spec.strides().iter().all(|&s| s == 1)
            })
    })?;
    if count > 0 {
        model.compact()?;
    }
    Ok(count)
}

/// Replaces each supported `Conv` of `model` by a [`DirectConv`], each f32 matrix product by
/// a [`FusedMatMul`], each last-axis softmax by a [`FusedSoftmax`] and each f32 SiLU by a
/// [`TeamSilu`], folds following ReLUs
/// into the convolutions, and points every fused norm at `kernels`; returns how many
/// convolutions and products `model` now runs on our kernels.
pub fn rewrite(
    model: &mut TypedModel,
    kernels: Isa,
    conv_algorithm: ConvAlgorithm,
) -> TractResult<Rewritten> {
    for node in model.nodes_mut() {
        if let Some(ln) = node.op_as_mut::<FusedLayerNorm>() {
            ln.kernels = kernels;
        }
        if let Some(n) = node.op_as_mut::<FusedInstanceNorm>() {
            n.kernels = kernels;
        }
    }
    replace_convs(model, kernels, conv_algorithm, |node| {
        node.op_as::<Conv>().is_some()
    })?;
    for id in model.eval_order()? {
        let node = model.node(id);
        if let Some(op) = FusedMatMul::for_einsum(model, node, kernels)? {
            let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
            patch.apply(model)?;
            continue;
        }
        if FusedSoftmax::applies(model, node)? {
            let op = FusedSoftmax { kernels };
            let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
            patch.apply(model)?;
            continue;
        }
        if TeamSilu::applies(model, node)? {
            let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, TeamSilu)?;
            patch.apply(model)?;
        }
    }
    model.compact()?;
    fuse_relus(model)?;
    let count = |f: fn(&TypedNode) -> bool| model.nodes().iter().filter(|n| f(n)).count();
    Ok(Rewritten {
        convs: count(|n| n.op_is::<DirectConv>()),
        winograd: count(|n| {
            n.op_as::<DirectConv>()
                .is_some_and(|c| matches!(*c.conv, ConvImpl::Winograd(_)))
        }),
        matmuls: count(|n| n.op_is::<FusedMatMul>()),
    })
}

/// What [`rewrite`] left on our kernels.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rewritten {
    /// [`DirectConv`] nodes.
    pub convs: usize,
    /// Those of them computed by Winograd's algorithm.
    pub winograd: usize,
    /// [`FusedMatMul`] nodes.
    pub matmuls: usize,
}

/// Replaces the convolutions `pick` selects, where [`DirectConv`] applies.
fn replace_convs(
    model: &mut TypedModel,
    kernels: Isa,
    conv_algorithm: ConvAlgorithm,
    pick: impl Fn(&TypedNode) -> bool,
) -> TractResult<usize> {
    let mut count = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        if !pick(node) {
            continue;
        }
        let op = if let Some(conv) = node.op_as::<Conv>() {
            DirectConv::for_conv(model, node, conv, kernels, conv_algorithm)?
        } else if let Some(deconv) = node.op_as::<Deconv>() {
            DirectConv::for_deconv(model, node, deconv, kernels)?
        } else {
            None
        };
        let Some(op) = op else {
            continue;
        };
        let inputs: TVec<OutletId> = if op.runtime_bias {
            tvec![node.inputs[0], node.inputs[2]]
        } else {
            tvec![node.inputs[0]]
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, op)?;
        patch.apply(model)?;
        count += 1;
    }
    Ok(count)
}

/// Folds `max(conv, 0)` into the convolution when the convolution feeds nothing else.
fn fuse_relus(model: &mut TypedModel) -> TractResult<()> {
    let mut fused = false;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<DirectConv>() else {
            continue;
        };
        if conv.relu || node.outputs[0].successors.len() != 1 || model.outputs.contains(&id.into())
        {
            continue;
        }
        let succ = model.node(node.outputs[0].successors[0].node);
        let Some(bin) = succ.op_as::<TypedBinOp>() else {
            continue;
        };
        if !bin.0.is::<Max>() || succ.inputs.len() != 2 {
            continue;
        }
        let other = succ.inputs.iter().find(|i| i.node != id).copied();
        let zero = match other.map(|o| model.outlet_fact(o)).transpose()? {
            Some(f) => f
                .konst
                .as_ref()
                .is_some_and(|k| k.len() == 1 && k.cast_to_scalar::<f32>().is_ok_and(|v| v == 0.0)),
            None => false,
        };
        if !zero
            || model.outlet_fact(OutletId::new(succ.id, 0))?.shape != node.outputs[0].fact.shape
        {
            continue;
        }
        let mut op = conv.clone();
        op.relu = true;
        let mut patch = TypedModelPatch::new("fuse relu into conv");
        let inputs = patch.taps(model, &node.inputs)?;
        let wire = patch.wire_node(&node.name, op, &inputs)?[0];
        patch.shunt_outside(model, OutletId::new(succ.id, 0), wire)?;
        patch.obliterate(id)?;
        patch.obliterate(succ.id)?;
        patch.apply(model)?;
        fused = true;
    }
    if fused {
        model.compact()?;
    }
    Ok(())
}
