//! The model's interface as found in the ONNX graph: which input is the image and which the
//! timestep, whatever their names, their element types and shapes.
use std::collections::HashSet;
use std::fmt;

use tract_onnx::pb;
use tract_onnx::prelude::{tvec, DatumType, TVec};

use crate::error::{Error, Result};

/// How the timestep input is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeShape {
    Scalar,
    /// `[1]`: one timestep for the whole batch.
    One,
    /// `[N]`.
    Batch,
    /// `[N, 1]` (the seed's).
    BatchByOne,
}

impl TimeShape {
    /// The timestep tensor's dimensions for `batch` images.
    pub fn dims(self, batch: usize) -> TVec<usize> {
        match self {
            TimeShape::Scalar => tvec![],
            TimeShape::One => tvec![1],
            TimeShape::Batch => tvec![batch],
            TimeShape::BatchByOne => tvec![batch, 1],
        }
    }
}

impl fmt::Display for TimeShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeShape::Scalar => "scalar",
            TimeShape::One => "[1]",
            TimeShape::Batch => "[N]",
            TimeShape::BatchByOne => "[N,1]",
        })
    }
}

/// The model's interface as found in the ONNX graph.
#[derive(Clone, Debug)]
pub struct IoSpec {
    pub image_input: String,
    /// F32 or F16, as the file declares it.
    pub image_type: DatumType,
    pub time_input: String,
    /// I64, I32, F32 or F16, as the file declares it.
    pub time_type: DatumType,
    pub time_shape: TimeShape,
    pub output: String,
    /// C, H, W.
    pub image_shape: [usize; 3],
    /// `Some(n)` when the batch dimension is fixed in the file.
    pub fixed_batch: Option<usize>,
    /// True when most weights are stored as f16.
    pub fp16_weights: bool,
    pub int8: Option<&'static str>,
}

impl IoSpec {
    /// The image input's element type in ONNX's words ("float32", "float16").
    pub fn image_type_name(&self) -> &'static str {
        type_name(self.image_type)
    }

    /// The timestep input's element type in ONNX's words ("int64", "float32", …).
    pub fn time_type_name(&self) -> &'static str {
        type_name(self.time_type)
    }

    /// Finds the image and timestep inputs and the output of `graph`, whatever their names.
    /// `origin` names the model in errors.
    pub fn find(origin: &str, graph: &pb::GraphProto) -> Result<IoSpec> {
        let inits: HashSet<&str> = graph.initializer.iter().map(|i| i.name.as_str()).collect();
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !inits.contains(i.name.as_str()))
            .collect();
        let describe = |vs: &[&pb::ValueInfoProto]| {
            vs.iter()
                .map(|v| match dims_of(v) {
                    Some((t, d)) => format!("{} {}{}", v.name, elem_name(t), shape_str(&d)),
                    None => v.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if inputs.len() != 2 {
            return Err(Error::model(
                origin,
                format!(
                    "not a denoiser: expected 2 inputs (image [N,C,H,W], timestep), found {}: {}",
                    inputs.len(),
                    describe(&inputs)
                ),
            ));
        }
        let is_float = |t: i32| matches!(onnx_type(t), Some(DatumType::F32 | DatumType::F16));
        let image_ix = inputs
            .iter()
            .position(|v| dims_of(v).is_some_and(|(t, d)| d.len() == 4 && is_float(t)))
            .ok_or_else(|| {
                Error::model(
                    origin,
                    format!(
                        "not a denoiser: no float input of rank 4 [N,C,H,W] among {}",
                        describe(&inputs)
                    ),
                )
            })?;
        let image = inputs[image_ix];
        let time = inputs[1 - image_ix];
        let (image_elem, idims) = dims_of(image).unwrap();
        let (time_elem, tdims) = dims_of(time).ok_or_else(|| {
            Error::model(
                origin,
                format!("timestep input {} has no tensor type", time.name),
            )
        })?;
        let time_type = match onnx_type(time_elem) {
            Some(dt @ (DatumType::I64 | DatumType::I32 | DatumType::F32 | DatumType::F16)) => dt,
            _ => {
                return Err(Error::model(
                    origin,
                    format!(
                        "timestep input {} is {}, expected int64, int32, float32 or float16",
                        time.name,
                        elem_name(time_elem)
                    ),
                ))
            }
        };
        let mut chw = [0usize; 3];
        for (k, d) in idims[1..].iter().enumerate() {
            chw[k] = d.ok_or_else(|| {
                Error::model(
                    origin,
                    format!(
                        "image input {} has shape {}: channels, height and width must be fixed",
                        image.name,
                        shape_str(&idims)
                    ),
                )
            })? as usize;
        }
        let fixed_batch = idims[0].map(|n| n as usize);
        let time_shape = match tdims.len() {
            0 => TimeShape::Scalar,
            1 if tdims[0] == Some(1) && fixed_batch != Some(1) => TimeShape::One,
            1 => TimeShape::Batch,
            2 => TimeShape::BatchByOne,
            _ => {
                return Err(Error::model(
                    origin,
                    format!(
                        "timestep input {} has shape {}, expected a scalar, [N], [1] or [N,1]",
                        time.name,
                        shape_str(&tdims)
                    ),
                ))
            }
        };
        let output = graph
            .output
            .first()
            .ok_or_else(|| Error::model(origin, "not a denoiser: the graph has no output"))?;
        let mut counts = [0usize; 2];
        for init in &graph.initializer {
            match onnx_type(init.data_type) {
                Some(DatumType::F32) => counts[0] += 1,
                Some(DatumType::F16) => counts[1] += 1,
                _ => {}
            }
        }
        let ops: HashSet<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        let int8 = if ops.contains("QLinearConv") || ops.contains("QLinearMatMul") {
            Some("int8 (QOperator)")
        } else if ops.contains("DequantizeLinear") {
            Some("int8 (QDQ)")
        } else {
            None
        };
        Ok(IoSpec {
            image_input: image.name.clone(),
            // `is_float` found it: F32 or F16.
            image_type: onnx_type(image_elem).unwrap_or(DatumType::F32),
            time_input: time.name.clone(),
            time_type,
            time_shape,
            output: output.name.clone(),
            image_shape: chw,
            fixed_batch,
            fp16_weights: counts[1] > counts[0],
            int8,
        })
    }
}

/// An element type in ONNX's words ("float32", "int64", …), as `info` prints it; "other" for
/// types a denoiser's inputs do not have.
pub fn type_name(dt: DatumType) -> &'static str {
    match dt {
        DatumType::F32 => "float32",
        DatumType::U8 => "uint8",
        DatumType::I8 => "int8",
        DatumType::I32 => "int32",
        DatumType::I64 => "int64",
        DatumType::F16 => "float16",
        DatumType::F64 => "float64",
        _ => "other",
    }
}

/// The datum type of an ONNX `TensorProto.DataType` code, for the ones named in errors.
fn onnx_type(elem: i32) -> Option<DatumType> {
    Some(match elem {
        1 => DatumType::F32,
        2 => DatumType::U8,
        3 => DatumType::I8,
        6 => DatumType::I32,
        7 => DatumType::I64,
        10 => DatumType::F16,
        11 => DatumType::F64,
        _ => return None,
    })
}

fn elem_name(elem: i32) -> &'static str {
    onnx_type(elem).map_or("other", type_name)
}

fn dims_of(v: &pb::ValueInfoProto) -> Option<(i32, Vec<Option<i64>>)> {
    let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let dims = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if n > 0 => Some(n),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some((t.elem_type, dims))
}

fn shape_str(dims: &[Option<i64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |n| n.to_string()))
        .collect();
    format!("[{}]", parts.join(","))
}
