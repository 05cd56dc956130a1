//! Graph rewrites applied to the ONNX protobuf before tract sees it, closing gaps between what
//! real exporters write and what tract 0.23 loads (each measured on real exports):
//! - fp16 `Gemm` (PyTorch `model.half()` Linear layers) fails tract's type check after
//!   expansion → `Transpose` + `MatMul` + `Add`, which load and fold to the same matmul.
//! - onnxruntime's QOperator quantizer emits Microsoft contrib ops (`com.microsoft`
//!   QLinearAdd, QLinearMul, QLinearConcat, QLinearSigmoid, QLinearLeakyRelu,
//!   QLinearAveragePool, QLinearGlobalAveragePool, QLinearSoftmax, QGemm) that tract does not
//!   implement → the standard `DequantizeLinear` → float op → `QuantizeLinear`, which is their
//!   definition (QLinearSoftmax dequantizes by hand: `Builder::dq_by_hand`).
//!   The integer convolutions and matmuls (standard QLinearConv / QLinearMatMul) stay integer.
use tract_onnx::pb;

const MS: &str = "com.microsoft";

fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.i)
}
fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.f)
}

fn node(op: &str, name: String, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_string(),
        name,
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 2,
        i: v,
        ..Default::default()
    }
}
fn ints_attr(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}
fn float_attr(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 1,
        f: v,
        ..Default::default()
    }
}

/// Builds replacement nodes with names derived from the node they replace.
struct Builder<'a> {
    base: &'a str,
    nodes: Vec<pb::NodeProto>,
}

impl<'a> Builder<'a> {
    /// For the nodes replacing `n`: named after its name, or its first output's.
    fn for_node(n: &'a pb::NodeProto) -> Builder<'a> {
        Builder {
            base: if n.name.is_empty() {
                n.output.first().map_or("", |s| s.as_str())
            } else {
                &n.name
            },
            nodes: vec![],
        }
    }
    fn tmp(&self, what: &str) -> String {
        format!("{}__es_{what}_{}", self.base, self.nodes.len())
    }
    fn push(&mut self, mut n: pb::NodeProto) -> String {
        let out = n.output[0].clone();
        if n.name.is_empty() {
            n.name = self.tmp(&n.op_type.to_lowercase());
        }
        self.nodes.push(n);
        out
    }
    /// x (quantized) → float.
    fn dq(&mut self, x: &str, scale: &str, zp: &str) -> String {
        let out = self.tmp("dq");
        let ins: Vec<&str> = if zp.is_empty() {
            vec![x, scale]
        } else {
            vec![x, scale, zp]
        };
        self.push(node("DequantizeLinear", String::new(), &ins, &[&out]))
    }
    /// x (quantized) → float as (float(x) − float(zp)) · scale: the same value as
    /// `DequantizeLinear`, without its operator. tract 0.23.9 folds a `DequantizeLinear` →
    /// op → `QuantizeLinear` chain whose op maps its axes one to one into a 256-entry lookup
    /// table computed on a 1-D input, and `Softmax` declares such a mapping although it mixes
    /// the values of its axis: every output then saturated at 255 (tests/engine.rs,
    /// qop_QLinearSoftmax: 223 of 256 steps off on average).
    fn dq_by_hand(&mut self, x: &str, scale: &str, zp: &str) -> String {
        let float = 1; // TensorProto.FLOAT
        let xf = self.op("Cast", &[x], vec![int_attr("to", float)]);
        let centred = if zp.is_empty() {
            xf
        } else {
            let zf = self.op("Cast", &[zp], vec![int_attr("to", float)]);
            self.op("Sub", &[&xf, &zf], vec![])
        };
        self.op("Mul", &[&centred, scale], vec![])
    }
    /// float → quantized, written to the original output name.
    fn q(&mut self, x: &str, scale: &str, zp: &str, out: &str) {
        let ins: Vec<&str> = if zp.is_empty() {
            vec![x, scale]
        } else {
            vec![x, scale, zp]
        };
        self.push(node("QuantizeLinear", String::new(), &ins, &[out]));
    }
    fn op(&mut self, op: &str, ins: &[&str], attrs: Vec<pb::AttributeProto>) -> String {
        let out = self.tmp(&op.to_lowercase());
        let mut n = node(op, String::new(), ins, &[&out]);
        n.attribute = attrs;
        self.push(n)
    }
}

fn input(n: &pb::NodeProto, i: usize) -> &str {
    n.input.get(i).map_or("", |s| s.as_str())
}

/// Rewrites one contrib node; `None` when it is not one we know.
fn rewrite_contrib(n: &pb::NodeProto) -> Option<Vec<pb::NodeProto>> {
    let mut b = Builder::for_node(n);
    let out = n.output.first()?.as_str();
    match n.op_type.as_str() {
        "QLinearAdd" | "QLinearMul" => {
            let a = b.dq(input(n, 0), input(n, 1), input(n, 2));
            let c = b.dq(input(n, 3), input(n, 4), input(n, 5));
            let op = if n.op_type == "QLinearAdd" {
                "Add"
            } else {
                "Mul"
            };
            let y = b.op(op, &[&a, &c], vec![]);
            b.q(&y, input(n, 6), input(n, 7), out);
        }
        "QLinearConcat" => {
            let mut parts = vec![];
            for k in (2..n.input.len()).step_by(3) {
                parts.push(b.dq(input(n, k), input(n, k + 1), input(n, k + 2)));
            }
            let refs: Vec<&str> = parts.iter().map(|s| s.as_str()).collect();
            let y = b.op(
                "Concat",
                &refs,
                vec![int_attr("axis", attr_i(n, "axis", 0))],
            );
            b.q(&y, input(n, 0), input(n, 1), out);
        }
        "QLinearSigmoid" | "QLinearLeakyRelu" | "QLinearSoftmax" => {
            let x = if n.op_type == "QLinearSoftmax" {
                b.dq_by_hand(input(n, 0), input(n, 1), input(n, 2))
            } else {
                b.dq(input(n, 0), input(n, 1), input(n, 2))
            };
            let y = match n.op_type.as_str() {
                "QLinearSigmoid" => b.op("Sigmoid", &[&x], vec![]),
                "QLinearLeakyRelu" => b.op(
                    "LeakyRelu",
                    &[&x],
                    vec![float_attr("alpha", attr_f(n, "alpha", 0.01))],
                ),
                _ => b.op(
                    "Softmax",
                    &[&x],
                    vec![int_attr("axis", attr_i(n, "axis", -1))],
                ),
            };
            b.q(&y, input(n, 3), input(n, 4), out);
        }
        "QLinearAveragePool" | "QLinearGlobalAveragePool" => {
            if attr_i(n, "channels_last", 0) != 0 {
                return None;
            }
            let x = b.dq(input(n, 0), input(n, 1), input(n, 2));
            let y = if n.op_type == "QLinearGlobalAveragePool" {
                b.op("GlobalAveragePool", &[&x], vec![])
            } else {
                let attrs = n
                    .attribute
                    .iter()
                    .filter(|a| a.name != "channels_last")
                    .cloned()
                    .collect();
                b.op("AveragePool", &[&x], attrs)
            };
            b.q(&y, input(n, 3), input(n, 4), out);
        }
        "QGemm" => {
            let a = b.dq(input(n, 0), input(n, 1), input(n, 2));
            let w = b.dq(input(n, 3), input(n, 4), input(n, 5));
            let mut ins = vec![a, w];
            if !input(n, 6).is_empty() {
                // int32 bias quantized with scale a_scale·b_scale and zero point 0.
                let s = b.op("Mul", &[input(n, 1), input(n, 4)], vec![]);
                let c = b.op("Cast", &[input(n, 6)], vec![int_attr("to", 1)]);
                ins.push(b.op("Mul", &[&c, &s], vec![]));
            }
            let attrs = vec![
                float_attr("alpha", attr_f(n, "alpha", 1.0)),
                int_attr("transA", attr_i(n, "transA", 0)),
                int_attr("transB", attr_i(n, "transB", 0)),
            ];
            let refs: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
            if input(n, 7).is_empty() {
                let mut g = node("Gemm", format!("{}__es_gemm", b.base), &refs, &[out]);
                g.attribute = attrs;
                b.push(g);
            } else {
                let y = b.op("Gemm", &refs, attrs);
                b.q(&y, input(n, 7), input(n, 8), out);
            }
        }
        _ => return None,
    }
    Some(b.nodes)
}

/// Gemm → [Transpose] MatMul [Add]; only for alpha = beta = 1 (what exporters write).
/// `QLinearMatMul` of two activations (attention's Q·Kᵀ and weights·V in onnxruntime's
/// QOperator export) → `DequantizeLinear` ×2 → `MatMul` → `QuantizeLinear`, its definition
/// with the products in f32: tract 0.23.9 runs such a product as a loop of tiny integer matrix
/// products (fashion-int8-qop, x86 AVX2: its 12 took 4.4 ms of a 10 ms call; f32, 0.5 ms on our
/// tiles). Products with a constant operand stay integer.
fn rewrite_activation_qmatmul(n: &pb::NodeProto) -> Option<Vec<pb::NodeProto>> {
    if n.input.len() != 8 || n.output.len() != 1 {
        return None;
    }
    let mut b = Builder::for_node(n);
    let a = b.dq(input(n, 0), input(n, 1), input(n, 2));
    let w = b.dq(input(n, 3), input(n, 4), input(n, 5));
    let y = b.op("MatMul", &[&a, &w], vec![]);
    b.q(&y, input(n, 6), input(n, 7), &n.output[0]);
    Some(b.nodes)
}

fn rewrite_gemm(n: &pb::NodeProto) -> Option<Vec<pb::NodeProto>> {
    if attr_f(n, "alpha", 1.0) != 1.0 || attr_f(n, "beta", 1.0) != 1.0 {
        return None;
    }
    let mut b = Builder::for_node(n);
    let mut a = input(n, 0).to_string();
    let mut w = input(n, 1).to_string();
    if attr_i(n, "transA", 0) != 0 {
        a = b.op("Transpose", &[&a], vec![ints_attr("perm", &[1, 0])]);
    }
    if attr_i(n, "transB", 0) != 0 {
        w = b.op("Transpose", &[&w], vec![ints_attr("perm", &[1, 0])]);
    }
    let out = n.output[0].as_str();
    if input(n, 2).is_empty() {
        b.push(node(
            "MatMul",
            format!("{}__es_matmul", b.base),
            &[&a, &w],
            &[out],
        ));
    } else {
        let y = b.op("MatMul", &[&a, &w], vec![]);
        b.push(node(
            "Add",
            format!("{}__es_add", b.base),
            &[&y, input(n, 2)],
            &[out],
        ));
    }
    Some(b.nodes)
}

/// An initializer's values as f32 (FLOAT) or whether all are zero (integer types).
fn init_floats(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != 1 {
        return None;
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    t.raw_data.len().is_multiple_of(4).then(|| {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
}

fn init_all_zero(t: &pb::TensorProto) -> bool {
    t.raw_data.iter().all(|&b| b == 0)
        && t.int32_data.iter().all(|&v| v == 0)
        && t.int64_data.is_empty()
}

/// How many QDQ convolutions [`fuse_qdq_convs`] made integer, by the kind of their output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct QdqConvs {
    /// Into `QLinearConv` (8-bit output).
    requantized: usize,
    /// Into `ConvInteger` → `Add` → `Cast` → `Mul` (f32 output).
    float: usize,
}

/// QDQ convolutions: `DequantizeLinear(x)` (8-bit, per-tensor), `DequantizeLinear(int8
/// weights, zero point 0)` and `DequantizeLinear(int32 bias, scale x_scale · w_scale)` →
/// `Conv`, then
/// - a single `QuantizeLinear`: one `QLinearConv` (what onnxruntime's QDQ transformer runs, so
///   the same integer result);
/// - anything else (the float output feeds a residual `Add`, a `Reshape`, …): `ConvInteger` →
///   `Add(bias)` → `Cast(float)` → `Mul(x_scale · w_scale)`, the same value computed from the
///   exact integer sum (onnxruntime runs a float convolution of the dequantized tensors there:
///   the two differ by f32 rounding).
///
/// Both run on edge-sample's 8-bit kernels (the second as one op storing f32, see
/// `rewrite::fuse_dequantizing_convs`); tract's own lowering runs them as written.
fn fuse_qdq_convs(graph: &mut pb::GraphProto) -> QdqConvs {
    use std::collections::HashMap;
    let default = |n: &pb::NodeProto| n.domain.is_empty() || n.domain == "ai.onnx";
    let inits: HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut uses: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in &n.output {
            producer.insert(o, i);
        }
        for x in &n.input {
            uses.entry(x).or_default().push(i);
        }
    }
    let outputs: Vec<&str> = graph.output.iter().map(|v| v.name.as_str()).collect();
    let dq = |name: &str| -> Option<&pb::NodeProto> {
        let n = &graph.node[*producer.get(name)?];
        (n.op_type == "DequantizeLinear" && default(n) && n.input.len() == 3).then_some(n)
    };
    // (conv index, quantize index if one is absorbed, the nodes replacing the conv)
    let mut fused: Vec<(usize, Option<usize>, Vec<pb::NodeProto>)> = vec![];
    let mut new_inits: Vec<pb::TensorProto> = vec![];
    let mut counts = QdqConvs::default();
    for (ci, conv) in graph.node.iter().enumerate() {
        if conv.op_type != "Conv" || !default(conv) || conv.output.len() != 1 {
            continue;
        }
        let y = conv.output[0].as_str();
        let quantize = match uses.get(y).map(|u| u.as_slice()) {
            Some([qi]) => Some(*qi).filter(|&qi| {
                let q = &graph.node[qi];
                q.op_type == "QuantizeLinear"
                    && default(q)
                    && q.input.len() == 3
                    && !outputs.contains(&y)
            }),
            _ => None,
        };
        let (Some(dx), Some(dw)) = (dq(input(conv, 0)), dq(input(conv, 1))) else {
            continue;
        };
        let (Some(w), Some(wzp), Some(ws), Some(xs), Some(xzp)) = (
            inits.get(input(dw, 0)),
            inits.get(input(dw, 2)),
            inits.get(input(dw, 1)).and_then(|t| init_floats(t)),
            inits.get(input(dx, 1)).and_then(|t| init_floats(t)),
            inits.get(input(dx, 2)),
        ) else {
            continue;
        };
        let per_channel = ws.len() > 1;
        let co = w.dims.first().copied().unwrap_or(0);
        if w.data_type != 3
            || w.dims.len() != 4
            || !init_all_zero(wzp)
            || !matches!(xzp.data_type, 2 | 3)
            || xzp.dims.iter().product::<i64>() != 1
            || xs.len() != 1
            || (per_channel
                && (attr_i(dw, "axis", 1) != 0 || w.dims.first() != Some(&(ws.len() as i64))))
        {
            continue;
        }
        let mut bias = None;
        if !input(conv, 2).is_empty() {
            let Some(db) = dq(input(conv, 2)) else {
                continue;
            };
            let (Some(b), Some(bzp), Some(bs)) = (
                inits.get(input(db, 0)),
                inits.get(input(db, 2)),
                inits.get(input(db, 1)).and_then(|t| init_floats(t)),
            ) else {
                continue;
            };
            let scale_ok =
                bs.len() == ws.len() && bs.iter().zip(&ws).all(|(&b, &w)| b == xs[0] * w);
            if b.data_type != 6 || !init_all_zero(bzp) || !scale_ok || b.dims != [co] {
                continue;
            }
            bias = Some(*b);
        }
        let base = if conv.name.is_empty() { y } else { &conv.name };
        if let Some(qi) = quantize {
            let q = &graph.node[qi];
            let mut ins: Vec<&str> = vec![
                input(dx, 0),
                input(dx, 1),
                input(dx, 2),
                input(dw, 0),
                input(dw, 1),
                input(dw, 2),
                input(q, 1),
                input(q, 2),
            ];
            if let Some(b) = bias {
                ins.push(&b.name);
            }
            let mut n = node(
                "QLinearConv",
                format!("{base}__es_qlinearconv"),
                &ins,
                &[&q.output[0]],
            );
            n.attribute = conv.attribute.clone();
            fused.push((ci, Some(qi), vec![n]));
            counts.requantized += 1;
            continue;
        }
        // Float output: the exact sums, plus the integer bias, cast, times x_scale · w_scale.
        let sums = format!("{base}__es_sums");
        let mut n = node(
            "ConvInteger",
            format!("{base}__es_convinteger"),
            &[input(dx, 0), input(dw, 0), input(dx, 2)],
            &[&sums],
        );
        n.attribute = conv.attribute.clone();
        let mut nodes = vec![n];
        let mut at = sums;
        if let Some(b) = bias {
            let mut b = b.clone();
            b.name = format!("{base}__es_bias");
            b.dims = vec![1, co, 1, 1];
            let out = format!("{base}__es_biased");
            nodes.push(node(
                "Add",
                format!("{base}__es_add_bias"),
                &[&at, &b.name],
                &[&out],
            ));
            new_inits.push(b);
            at = out;
        }
        let cast = format!("{base}__es_float");
        let mut c = node("Cast", format!("{base}__es_cast"), &[&at], &[&cast]);
        c.attribute.push(int_attr("to", 1));
        nodes.push(c);
        let multiplier: Vec<f32> = ws.iter().map(|&w| xs[0] * w).collect();
        let m = pb::TensorProto {
            name: format!("{base}__es_scale"),
            data_type: 1,
            dims: if per_channel {
                vec![1, co, 1, 1]
            } else {
                vec![1]
            },
            float_data: multiplier,
            ..Default::default()
        };
        nodes.push(node(
            "Mul",
            format!("{base}__es_mul"),
            &[&cast, &m.name],
            &[y],
        ));
        new_inits.push(m);
        fused.push((ci, None, nodes));
        counts.float += 1;
    }
    let mut replace: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    let mut drop = std::collections::HashSet::new();
    for (ci, qi, n) in fused {
        replace.insert(ci, n);
        drop.extend(qi);
    }
    let old = std::mem::take(&mut graph.node);
    graph.node = old
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .flat_map(|(i, n)| replace.remove(&i).unwrap_or_else(|| vec![n]))
        .collect();
    graph.initializer.extend(new_inits);
    counts
}

/// Removes the nodes whose outputs nothing reads (the `DequantizeLinear`s of weights and
/// activations the fusions above left behind, above all): tract would otherwise fold each
/// dequantized weight into an f32 constant, 4× the int8 weight's memory, before dropping it.
fn prune_dead_nodes(graph: &mut pb::GraphProto) {
    use std::collections::HashSet;
    loop {
        let read: HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(|s| s.as_str()))
            .chain(graph.output.iter().map(|o| o.name.as_str()))
            .collect();
        let dead: Vec<usize> = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                !n.output.is_empty() && n.output.iter().all(|o| !read.contains(o.as_str()))
            })
            .map(|(i, _)| i)
            .collect();
        if dead.is_empty() {
            break;
        }
        for i in dead.into_iter().rev() {
            graph.node.remove(i);
        }
    }
    // Initializers nothing reads go too, but not those the graph also lists as inputs (older
    // exporters do): without its initializer, such an input would become a model input.
    let read: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .chain(graph.input.iter().map(|i| i.name.clone()))
        .collect();
    graph.initializer.retain(|t| read.contains(&t.name));
}

/// The default-domain DequantizeLinear nodes with a scalar scale, by output name.
fn per_tensor_dequantized(
    graph: &pb::GraphProto,
) -> std::collections::HashMap<String, pb::NodeProto> {
    let scalar = |name: &str| {
        graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .is_some_and(|t| t.dims.iter().product::<i64>() == 1)
    };
    graph
        .node
        .iter()
        .filter(|n| {
            n.op_type == "DequantizeLinear"
                && (n.domain.is_empty() || n.domain == "ai.onnx")
                && n.output.len() == 1
                && scalar(input(n, 1))
        })
        .map(|n| (n.output[0].clone(), n.clone()))
        .collect()
}

/// Applies every rewrite the graph needs; returns a line per kind of rewrite applied.
pub fn apply(model: &mut pb::ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_mut() else {
        return vec![];
    };
    let fp16 = graph.initializer.iter().any(|t| t.data_type == 10)
        || graph.input.iter().any(|v| {
            matches!(
                v.r#type.as_ref().and_then(|t| t.value.as_ref()),
                Some(pb::type_proto::Value::TensorType(t)) if t.elem_type == 10
            )
        });
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let qdq_convs = fuse_qdq_convs(graph);
    if qdq_convs.requantized > 0 {
        counts.insert(
            "QDQ DequantizeLinear → Conv → QuantizeLinear fused into QLinearConv;".into(),
            qdq_convs.requantized,
        );
    }
    if qdq_convs.float > 0 {
        counts.insert(
            "QDQ DequantizeLinear → Conv (float output) fused into ConvInteger → Add → Cast → Mul;"
                .into(),
            qdq_convs.float,
        );
    }
    let dequantized = per_tensor_dequantized(graph);
    let constants: std::collections::HashSet<String> =
        graph.initializer.iter().map(|t| t.name.clone()).collect();
    let mut nodes = Vec::with_capacity(graph.node.len());
    for mut n in graph.node.drain(..) {
        if n.op_type == "Softmax" && (n.domain.is_empty() || n.domain == "ai.onnx") {
            if let Some(dq) = n.input.first().and_then(|i| dequantized.get(i)) {
                // QDQ: DequantizeLinear → Softmax → QuantizeLinear, the chain tract folds into
                // a lookup table wrongly (see `Builder::dq_by_hand`): the Softmax reads a
                // dequantization by hand instead.
                let mut b = Builder {
                    base: &n.input[0],
                    nodes: vec![],
                };
                let x = b.dq_by_hand(input(dq, 0), input(dq, 1), input(dq, 2));
                nodes.extend(b.nodes);
                n.input[0] = x;
                *counts
                    .entry("Softmax after DequantizeLinear (QDQ)".into())
                    .or_default() += 1;
                nodes.push(n);
                continue;
            }
        }
        let replaced = if n.domain == MS {
            rewrite_contrib(&n)
        } else if fp16 && n.op_type == "Gemm" && (n.domain.is_empty() || n.domain == "ai.onnx") {
            rewrite_gemm(&n)
        } else if n.op_type == "QLinearMatMul"
            && (n.domain.is_empty() || n.domain == "ai.onnx")
            && !constants.contains(input(&n, 3))
        {
            rewrite_activation_qmatmul(&n)
        } else {
            None
        };
        match replaced {
            Some(new) => {
                *counts
                    .entry(format!(
                        "{} ({})",
                        n.op_type,
                        match n.op_type.as_str() {
                            _ if n.domain == MS => MS,
                            "QLinearMatMul" => "two activations, the product in f32",
                            _ => "fp16",
                        }
                    ))
                    .or_default() += 1;
                nodes.extend(new);
            }
            None => nodes.push(n),
        }
    }
    graph.node = nodes;
    prune_dead_nodes(graph);
    counts
        .into_iter()
        .map(|(k, v)| format!("{v}× {k} rewritten"))
        .collect()
}
