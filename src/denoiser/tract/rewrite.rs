//! Every graph pass that puts our kernels (the operators of [`super::ops`]) into tract's
//! graph, and the one place each of those operators is created with the loader's kernels:
//!
//! - [`register`], at parse time: ONNX `LayerNormalization` and `InstanceNormalization` become
//!   one kernel-less spec node each ([`LayerNormSpec`], [`InstanceNormSpec`]) instead of
//!   tract's multi-node expansions, through tract-onnx's operator register.
//! - [`rewrite_before_declutter`]: 1×1 and transposed convolutions become [`DirectConv`]s
//!   before tract's declutter turns them into matrix products.
//! - [`rewrite`], after declutter: the spec nodes become [`FusedLayerNorm`] and
//!   [`FusedInstanceNorm`]; every other convolution our kernels support (NCHW or CHW, constant
//!   weights and bias, f32) a [`DirectConv`]; every f32 matrix product tract leaves as an
//!   einsum a [`FusedMatMul`]; last-axis softmax a [`FusedSoftmax`]; f32 SiLU a [`TeamSilu`];
//!   ReLUs that follow a convolution are folded into it ([`fuse_relus`]).
//!
//! None of them runs when the loader is asked for tract's own lowering
//! ([`crate::denoiser::Kernels::Tract`]).

use std::sync::OnceLock;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::array::MultiBroadcastTo;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv};
use tract_onnx::tract_core::ops::math::Max;
use tract_onnx::tract_hir::internal::*;

use super::ops::{
    DirectConv, FusedInstanceNorm, FusedLayerNorm, FusedMatMul, FusedSoftmax, InstanceNormSpec,
    LayerNormSpec, QuantConvOp, QuantizeOp, TeamSilu,
};
use edge_sample_kernels::{ConvAlgorithm, ConvKind, Isa};

type OnnxBuilder =
    fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// tract's own `LayerNormalization` builder, for the forms we leave to it.
static TRACT_LAYER_NORM: OnceLock<OnnxBuilder> = OnceLock::new();

/// Routes ONNX `LayerNormalization` and `InstanceNormalization` to one node each in this
/// parser: [`LayerNormSpec`] and [`InstanceNormSpec`], which [`rewrite`] turns into our
/// fused norms. (tract-onnx's register holds plain `fn` pointers, so the builders cannot
/// know the kernels: the spec nodes carry none.)
pub fn register(onnx: &mut tract_onnx::Onnx) {
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
        model.wire_node(
            prefix,
            InstanceNormSpec {
                epsilon: self.epsilon,
            },
            inputs,
        )
    }
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
            LayerNormSpec {
                axis,
                epsilon: self.epsilon,
            },
            &wired,
        )
    }
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
    let count = count + replace_quant_convs(model, kernels)?;
    if count > 0 {
        model.compact()?;
    }
    Ok(count)
}

/// Replaces every quantized convolution (ONNX `QLinearConv`) our 8-bit kernels take by a
/// [`QuantConvOp`]: before declutter, which turns the 1×1 ones into integer einsums.
fn replace_quant_convs(model: &mut TypedModel, kernels: Isa) -> TractResult<usize> {
    let mut count = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>().filter(|c| c.q_params.is_some()) else {
            continue;
        };
        let Some(op) = QuantConvOp::for_conv(model, node, conv, kernels)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &[node.inputs[0]], op)?;
        patch.apply(model)?;
        count += 1;
    }
    Ok(count)
}

/// Turns every norm spec node into our fused norm on `kernels`, replaces each supported
/// `Conv` of `model` by a [`DirectConv`], each f32 matrix product by a [`FusedMatMul`], each
/// last-axis softmax by a [`FusedSoftmax`] and each f32 SiLU by a [`TeamSilu`], and folds
/// following ReLUs into the convolutions; returns how many convolutions and products `model`
/// now runs on our kernels.
pub fn rewrite(
    model: &mut TypedModel,
    kernels: Isa,
    conv_algorithm: ConvAlgorithm,
) -> TractResult<Rewritten> {
    fuse_norms(model, kernels);
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
            continue;
        }
        if let Some(op) = QuantizeOp::for_node(model, node)? {
            let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
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
                .is_some_and(|c| c.kind() == ConvKind::Winograd)
        }),
        matmuls: count(|n| n.op_is::<FusedMatMul>()),
        quant_convs: count(|n| n.op_is::<QuantConvOp>()),
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
    /// [`QuantConvOp`] nodes (8-bit convolutions).
    pub quant_convs: usize,
}

/// Gives every norm the parser made ([`register`]) its kernels, in place: same node, same
/// inputs and outputs.
fn fuse_norms(model: &mut TypedModel, kernels: Isa) {
    for node in model.nodes_mut() {
        let fused: Box<dyn TypedOp> = if let Some(spec) = node.op_as::<LayerNormSpec>() {
            Box::new(FusedLayerNorm::new(spec, kernels))
        } else if let Some(spec) = node.op_as::<InstanceNormSpec>() {
            Box::new(FusedInstanceNorm::new(spec, kernels))
        } else {
            continue;
        };
        node.op = fused;
    }
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
        let inputs: TVec<OutletId> = if op.runtime_bias() {
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
        if conv.relu()
            || node.outputs[0].successors.len() != 1
            || model.outputs.contains(&id.into())
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
        let op = conv.with_relu();
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
