//! Convolutions run by our kernels: any of the kernel crate's four kinds (direct, Winograd,
//! strided, transposed) behind its [`Convolution`] trait.
use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use edge_sample_kernels::{
    team, BlockDeconv, BlockShape, ConvAlgorithm, ConvKind, ConvShape, Convolution, Isa,
    PackedConv, StridedConv, WinogradConv,
};

/// A convolution run by our kernels (direct or Winograd tiles, or lowered to 1×1 tiles for
/// strided and transposed ones): one input (two with a run-time bias), weights and constant
/// bias packed inside.
#[derive(Debug, Clone)]
pub struct DirectConv {
    conv: Arc<dyn Convolution>,
    /// Whether the data has a batch axis (NCHW) or not (CHW).
    batched: bool,
    /// max(·, 0) applied as the tile is stored (a following ONNX Relu, fused).
    relu: bool,
    /// The bias is the op's second input (computed per run) rather than packed.
    runtime_bias: bool,
    kernels: Isa,
}

/// Two ops are the same when they share their packed convolution (clones of one op): packed
/// weights are not compared, so ops built apart are never merged by tract.
impl PartialEq for DirectConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.conv, &other.conv)
            && self.batched == other.batched
            && self.relu == other.relu
            && self.runtime_bias == other.runtime_bias
            && self.kernels == other.kernels
    }
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
    pub fn for_conv(
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
        let imp: Arc<dyn Convolution> = if stride == [1, 1] {
            let shape = ConvShape {
                ci,
                co,
                h: hw[0],
                w: hw[1],
                kh,
                kw,
                stride: [1, 1],
                pad,
            };
            if !shape.is_valid() {
                return Ok(None);
            }
            match conv_algorithm.winograd(&shape) {
                Some(block) => Arc::new(WinogradConv::new(shape, &weights, &bias, kernels, block)),
                None => Arc::new(PackedConv::new(shape, &weights, &bias, kernels)),
            }
        } else {
            let shape = ConvShape {
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
            Arc::new(StridedConv::new(shape, &weights, &bias, kernels))
        };
        DirectConv::checked(model, node, imp, batched, runtime_bias, kernels)
    }

    /// The replacement for a transposed convolution whose kernel equals its stride.
    pub fn for_deconv(
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
        let imp = Arc::new(BlockDeconv::new(shape, &weights, &bias, kernels));
        DirectConv::checked(model, node, imp, batched, runtime_bias, kernels)
    }

    /// The op, when its output shape is the node's (anything else is left to tract).
    fn checked(
        model: &TypedModel,
        node: &TypedNode,
        conv: Arc<dyn Convolution>,
        batched: bool,
        runtime_bias: bool,
        kernels: Isa,
    ) -> TractResult<Option<DirectConv>> {
        let op = DirectConv {
            conv,
            batched,
            relu: false,
            runtime_bias,
            kernels,
        };
        let x = model.outlet_fact(node.inputs[0])?.shape.to_tvec();
        Ok((op.out_shape(&x) == node.outputs[0].fact.shape.to_tvec()).then_some(op))
    }

    /// How the convolution is computed.
    pub fn kind(&self) -> ConvKind {
        self.conv.kind()
    }

    /// Whether a following ReLU is folded in.
    pub fn relu(&self) -> bool {
        self.relu
    }

    /// The same convolution with max(·, 0) applied as the tile is stored.
    pub fn with_relu(&self) -> DirectConv {
        DirectConv {
            relu: true,
            ..self.clone()
        }
    }

    /// Whether the bias is the op's second input (the node's bias input, kept), rather than
    /// packed.
    pub fn runtime_bias(&self) -> bool {
        self.runtime_bias
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
        // Safety: every element is written by `run_on` (each output pixel belongs to one
        // tile, or one block).
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
        self.conv.run_on(team.as_deref(), x, out, self.relu, bias);
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
