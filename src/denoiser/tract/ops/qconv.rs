//! 8-bit convolutions (ONNX `QLinearConv` and `ConvInteger`, tract's quantized `Conv`) on our
//! integer kernels: [`QuantConv`]. A `ConvInteger` followed by an integer bias, a cast to float
//! and a per-channel multiplier (what edge-sample makes of a QDQ convolution whose output feeds
//! float operations) becomes one op storing f32: [`QuantConvOp::dequantizing`].
use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use edge_sample_kernels::{ConvShape, DotIsa, Isa, QuantConv, QuantOutput, QuantParams, Q8};

/// A quantized convolution on [`QuantConv`]: one 8-bit input, the weights, bias, scales and
/// zero points packed inside; an 8-bit output of the type tract's `Conv` gave, its i32 sums
/// (`ConvInteger`), or f32.
#[derive(Debug, Clone)]
pub struct QuantConvOp {
    conv: Arc<QuantConv>,
    batched: bool,
    out_dt: DatumType,
}

/// Two ops are the same when they share their packed convolution.
impl PartialEq for QuantConvOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.conv, &other.conv)
            && self.batched == other.batched
            && self.out_dt == other.out_dt
    }
}

impl Eq for QuantConvOp {}

/// The 8-bit kernel set that goes with a float one: the float set's architecture, with the
/// dot-product instructions this CPU has.
pub fn dot_isa_for(kernels: Isa) -> DotIsa {
    let pick = |fast: DotIsa, base: DotIsa| {
        if fast.is_supported() {
            fast
        } else {
            base
        }
    };
    match kernels {
        Isa::Portable => DotIsa::Portable,
        Isa::Avx2 => DotIsa::Avx2,
        Isa::Avx512 => pick(DotIsa::Vnni, DotIsa::Avx2),
        Isa::Neon => pick(DotIsa::NeonDot, DotIsa::Neon),
    }
}

/// An 8-bit datum type's value type.
fn q8(dt: DatumType) -> Option<Q8> {
    match dt.unquantized() {
        DatumType::U8 => Some(Q8::U8),
        DatumType::I8 => Some(Q8::I8),
        _ => None,
    }
}

/// A constant's values as i32 (zero points) or f32 (scales), with its element count.
fn konst(model: &TypedModel, outlet: OutletId) -> TractResult<Option<Arc<Tensor>>> {
    Ok(model.outlet_fact(outlet)?.konst.clone())
}

fn ints(t: &Tensor) -> TractResult<Option<Vec<i32>>> {
    if !t.datum_type().is_integer() {
        return Ok(None);
    }
    let t = t.cast_to::<i32>()?;
    Ok(Some(t.try_as_plain_ram()?.as_slice::<i32>()?.to_vec()))
}

fn floats(t: &Tensor) -> TractResult<Option<Vec<f32>>> {
    if t.datum_type() != DatumType::F32 {
        return Ok(None);
    }
    Ok(Some(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
}

impl QuantConvOp {
    /// The replacement for tract's quantized `conv` at `node`, or `None` where our kernels do
    /// not apply (grouped, dilated, weights with a zero point, non-constant parameters).
    pub fn for_conv(
        model: &TypedModel,
        node: &TypedNode,
        conv: &Conv,
        kernels: Isa,
    ) -> TractResult<Option<QuantConvOp>> {
        let spec = &conv.pool_spec;
        let batched = match spec.data_format {
            DataFormat::NCHW => true,
            DataFormat::CHW => false,
            _ => return Ok(None),
        };
        if conv.q_params.is_none()
            || node.inputs.len() != 9
            || conv.group != 1
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.rank() != 2
            || spec.dilations().iter().any(|&d| d != 1)
        {
            return Ok(None);
        }
        let x = model.outlet_fact(node.inputs[0])?;
        let out_dt = node.outputs[0].fact.datum_type;
        let sums = out_dt == DatumType::I32;
        let (Some(x_type), Some(y_type)) = (
            q8(x.datum_type),
            if sums { Some(Q8::U8) } else { q8(out_dt) },
        ) else {
            return Ok(None);
        };
        let Some(xs) = x
            .shape
            .as_concrete()
            .filter(|s| s.len() == 3 + batched as usize)
        else {
            return Ok(None);
        };
        let hw = &xs[xs.len() - 2..];
        let (ci, co) = (spec.input_channels, spec.output_channels);
        let [kh, kw] = [spec.kernel_shape[0], spec.kernel_shape[1]];
        if xs[xs.len() - 3] != ci {
            return Ok(None);
        }
        let consts: Option<Vec<Arc<Tensor>>> = node.inputs[1..]
            .iter()
            .map(|&o| konst(model, o))
            .collect::<TractResult<_>>()?;
        let Some(c) = consts else {
            return Ok(None);
        };
        let [w, bias, x0, x_scale, k0, k_scale, y0, y_scale] = &c[..] else {
            return Ok(None);
        };
        if q8(w.datum_type()) != Some(Q8::I8) || w.shape() != [co, ci, kh, kw] {
            return Ok(None);
        }
        let weights: Vec<i8> = w
            .try_as_plain_ram()?
            .as_slice::<u8>()
            .map(|b| b.iter().map(|&v| v as i8).collect())
            .or_else(|_| -> TractResult<Vec<i8>> {
                Ok(w.try_as_plain_ram()?.as_slice::<i8>()?.to_vec())
            })?;
        let Some(bias) = ints(bias)? else {
            return Ok(None);
        };
        let bias = match bias.len() {
            0 => vec![],
            1 => vec![bias[0]; co],
            n if n == co => bias,
            _ => return Ok(None),
        };
        let (Some(x0), Some(k0), Some(y0)) = (ints(x0)?, ints(k0)?, ints(y0)?) else {
            return Ok(None);
        };
        let (Some(x_scale), Some(k_scale), Some(y_scale)) =
            (floats(x_scale)?, floats(k_scale)?, floats(y_scale)?)
        else {
            return Ok(None);
        };
        if x0.len() != 1
            || y0.len() != 1
            || x_scale.len() != 1
            || y_scale.len() != 1
            || k0.iter().any(|&z| z != 0)
            || !(k_scale.len() == 1 || k_scale.len() == co)
        {
            return Ok(None);
        }
        let padding = spec.computed_padding(hw);
        let shape = ConvShape {
            ci,
            co,
            h: hw[0],
            w: hw[1],
            kh,
            kw,
            stride: [spec.strides()[0], spec.strides()[1]],
            pad: [
                padding[0].pad_before,
                padding[1].pad_before,
                padding[0].pad_after,
                padding[1].pad_after,
            ],
        };
        let params = QuantParams {
            x_type,
            x_scale: x_scale[0],
            x_zero: x0[0],
            w_scale: k_scale,
            y_type,
            y_scale: y_scale[0],
            y_zero: y0[0],
        };
        let Ok(qc) = QuantConv::new(shape, &weights, &bias, params, dot_isa_for(kernels)) else {
            return Ok(None);
        };
        let qc = if sums { qc.with_sums() } else { qc };
        Ok(Some(QuantConvOp {
            conv: Arc::new(qc),
            batched,
            out_dt,
        }))
    }

    /// This op (storing sums) followed by `+ bias` (i32, one or one per channel), a cast to
    /// f32 and `· multiplier` (one or one per channel), as one op storing f32.
    pub fn dequantizing(&self, bias: &[i32], multiplier: &[f32]) -> Option<QuantConvOp> {
        if self.conv.output() != QuantOutput::Sums {
            return None;
        }
        let conv = (*self.conv)
            .clone()
            .with_dequantized(bias, multiplier)
            .ok()?;
        Some(QuantConvOp {
            conv: Arc::new(conv),
            batched: self.batched,
            out_dt: DatumType::F32,
        })
    }

    /// The number of output channels.
    pub fn channels(&self) -> usize {
        self.conv.shape().co
    }

    /// What it stores.
    pub fn output(&self) -> QuantOutput {
        self.conv.output()
    }

    fn out_shape<D: Clone + From<usize>>(&self, input: &[D]) -> TVec<D> {
        let s = self.conv.shape();
        let mut shape: TVec<D> = input.iter().cloned().collect();
        let r = shape.len();
        shape[r - 3] = s.co.into();
        shape[r - 2] = s.out_h().into();
        shape[r - 1] = s.out_w().into();
        shape
    }
}

impl Op for QuantConvOp {
    fn name(&self) -> StaticName {
        "QuantConv".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        let s = self.conv.shape();
        let out = match self.conv.output() {
            QuantOutput::Requantized => "",
            QuantOutput::Sums => ", i32 out",
            QuantOutput::Dequantized => ", f32 out",
        };
        Ok(vec![format!(
            "int8 {}x{} stride {} {}->{} ({}{out})",
            s.kh,
            s.kw,
            s.stride[0],
            s.ci,
            s.co,
            self.conv.isa().name()
        )])
    }
    op_as_typed_op!();
}

thread_local! {
    /// The gathered rows of the last layer run on this thread, reused (grown, never shrunk).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl EvalOp for QuantConvOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = self.out_shape(x.shape());
        let mut y = Tensor::zero_dt(self.out_dt, &shape)?;
        let xr = x.try_as_plain_ram()?;
        let mut yr = y.try_as_plain_ram_mut()?;
        // SAFETY: the input is an 8-bit type (checked when the op was made): read as bytes.
        let xb = unsafe { xr.as_slice_unchecked::<u8>() };
        SCRATCH.with(|s| -> TractResult<()> {
            let scratch = &mut s.borrow_mut();
            match self.conv.output() {
                // SAFETY: an 8-bit output type (checked when the op was made): written as bytes.
                QuantOutput::Requantized => {
                    self.conv
                        .run(xb, unsafe { yr.as_slice_mut_unchecked::<u8>() }, scratch)
                }
                QuantOutput::Sums => self.conv.run(xb, yr.as_slice_mut::<i32>()?, scratch),
                QuantOutput::Dequantized => self.conv.run(xb, yr.as_slice_mut::<f32>()?, scratch),
            }
            Ok(())
        })?;
        Ok(tvec![y.into_tvalue()])
    }
}

impl TypedOp for QuantConvOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].rank() == 3 + self.batched as usize,
            "QuantConv input rank"
        );
        let shape = self.out_shape(&inputs[0].shape.to_tvec());
        Ok(tvec![self.out_dt.fact(shape)])
    }
    as_op!();
}
