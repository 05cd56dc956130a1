//! Bounds checked before tract allocates anything a file declares: a few hundred bytes of
//! ONNX can declare a 40 GB input, a constant of 10¹⁰ elements, a STRING tensor tract-onnx
//! cannot decode, or millions of nodes. Each is refused with one line naming the tensor or
//! node, what it declares and the limit.
use tract_onnx::pb;
use tract_onnx::prelude::TypedModel;

use crate::error::{Error, Result};

/// Nodes in a graph: a diffusers UNet2DModel for 256×256 images has ~2 000.
pub const MAX_NODES: usize = 100_000;
/// Elements of any one tensor a graph declares (an initializer, a constant it builds, the
/// image input of a batch): 2²⁶, 256 MiB of f32. The largest of the models edge-sample targets
/// (diffusers' DDPM CIFAR-10 UNet, batch 16) has 2²¹-element activations.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 26;

/// Bytes per element of an ONNX tensor type; `None` for types a denoiser never holds
/// (strings, complex numbers, undefined).
fn element_bytes(data_type: i32) -> Option<u64> {
    use pb::tensor_proto::DataType as D;
    let t = D::try_from(data_type).ok()?;
    Some(match t {
        D::Uint8 | D::Int8 | D::Bool => 1,
        D::Uint16 | D::Int16 | D::Float16 | D::Bfloat16 => 2,
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Double | D::Int64 | D::Uint64 => 8,
        _ => return None,
    })
}

fn elements(dims: impl IntoIterator<Item = i64>) -> Option<u64> {
    dims.into_iter()
        .try_fold(1u64, |n, d| n.checked_mul(u64::try_from(d).ok()?))
}

fn too_big(origin: &str, what: String, n: Option<u64>) -> Error {
    let n = n.map_or("more than 2⁶⁴".to_string(), |n| n.to_string());
    Error::model(
        origin,
        format!("{what} declares {n} elements (at most {MAX_TENSOR_ELEMENTS} are allowed)"),
    )
}

/// A stored tensor: a numeric type, a bounded size, and raw data of exactly that size.
fn check_tensor(origin: &str, t: &pb::TensorProto) -> Result<()> {
    let name = &t.name;
    let Some(width) = element_bytes(t.data_type) else {
        let ty = pb::tensor_proto::DataType::try_from(t.data_type)
            .map_or_else(|_| format!("type {}", t.data_type), |d| format!("{d:?}"));
        return Err(Error::model(
            origin,
            format!("tensor '{name}' is of {ty}, which edge-sample does not load"),
        ));
    };
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
        || !t.external_data.is_empty()
    {
        return Err(Error::model(
            origin,
            format!("tensor '{name}' is stored in an external file; save the model as one file"),
        ));
    }
    let n = elements(t.dims.iter().copied());
    if n.is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
        return Err(too_big(origin, format!("tensor '{name}'"), n));
    }
    let n = n.unwrap_or(0);
    if !t.raw_data.is_empty() && t.raw_data.len() as u64 != n * width {
        return Err(Error::model(
            origin,
            format!(
                "tensor '{name}' of shape {:?} has {} bytes of data, expected {}",
                t.dims,
                t.raw_data.len(),
                n * width
            ),
        ));
    }
    Ok(())
}

/// Checks a graph's size, its stored tensors, and the tensors its constant shape arguments
/// would make (ConstantOfShape, Expand), before tract parses it.
pub fn check_graph(origin: &str, g: &pb::GraphProto) -> Result<()> {
    if g.node.len() > MAX_NODES {
        return Err(Error::model(
            origin,
            format!("the graph has {} nodes (at most {MAX_NODES})", g.node.len()),
        ));
    }
    let mut constants: std::collections::HashMap<&str, &pb::TensorProto> =
        std::collections::HashMap::new();
    for t in &g.initializer {
        check_tensor(origin, t)?;
        constants.insert(&t.name, t);
    }
    for node in &g.node {
        for a in &node.attribute {
            if let Some(t) = &a.t {
                check_tensor(origin, t)?;
                if node.op_type == "Constant" {
                    if let Some(out) = node.output.first() {
                        constants.insert(out, t);
                    }
                }
            }
            for t in &a.tensors {
                check_tensor(origin, t)?;
            }
        }
    }
    for node in &g.node {
        let shape_input = match node.op_type.as_str() {
            "ConstantOfShape" => node.input.first(),
            "Expand" => node.input.get(1),
            _ => None,
        };
        let Some(t) = shape_input.and_then(|i| constants.get(i.as_str())) else {
            continue;
        };
        let dims: Vec<i64> = if !t.int64_data.is_empty() {
            t.int64_data.clone()
        } else {
            t.raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect()
        };
        let n = elements(dims.iter().copied());
        if n.is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
            return Err(too_big(
                origin,
                format!("{} node '{}' (shape {dims:?})", node.op_type, node.name),
                n,
            ));
        }
    }
    Ok(())
}

/// The image input of a batch, C·H·W·batch, within [`MAX_TENSOR_ELEMENTS`].
pub fn check_image(origin: &str, [c, h, w]: [usize; 3], batch: usize) -> Result<()> {
    let n = [c, h, w, batch]
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    if n.is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
        return Err(too_big(
            origin,
            format!("the image input ({batch}×{c}×{h}×{w}, batch × C × H × W)"),
            n,
        ));
    }
    Ok(())
}

/// Every tensor the typed graph computes (shapes all fixed by now), within
/// [`MAX_TENSOR_ELEMENTS`]: a Resize, Tile or broadcast inside the graph could otherwise make
/// each denoiser call allocate gigabytes from a small input.
pub fn check_activations(origin: &str, model: &TypedModel) -> Result<()> {
    for node in &model.nodes {
        for (slot, out) in node.outputs.iter().enumerate() {
            let Some(dims) = out.fact.shape.as_concrete() else {
                continue;
            };
            let n = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
            if n.is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
                return Err(too_big(
                    origin,
                    format!("node '{}' (output {slot}, shape {dims:?})", node.name),
                    n,
                ));
            }
        }
    }
    Ok(())
}
