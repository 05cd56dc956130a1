//! The tract engine: ONNX → (rewrites) → every dimension fixed → precision → optimized once →
//! one runnable plan shared by all workers, one state per worker reused for every step.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::floats::FloatPrecisionTranslator;
use tract_onnx::tract_core::optim::Optimizer;
use tract_onnx::tract_core::transform::ModelTransform;

use super::fused;
use super::info::{parse_sidecar, ModelInfo};
use super::kernels::Kernels;
use super::onnx_fix;
use super::team::{with_team, Team};
use super::winograd::ConvAlgorithm;
use super::{Denoiser, Precision};
use crate::error::{one_line, Error, Result};

/// Where a model's bytes come from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    Path(PathBuf),
    /// A model compiled into the binary.
    Embedded {
        name: &'static str,
        bytes: &'static [u8],
    },
}

impl ModelSource {
    pub fn display(&self) -> String {
        match self {
            ModelSource::Path(p) => p.display().to_string(),
            ModelSource::Embedded { name, .. } => format!("{name} (built in)"),
        }
    }
}

/// How to build the plan.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Images per network call for models with a free batch dimension.
    pub batch: usize,
    pub precision: Precision,
    /// Our convolution and layer-norm kernels, or tract's own lowering.
    pub kernels: Kernels,
    /// Direct or Winograd 3×3 convolutions (with our kernels).
    pub conv: ConvAlgorithm,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            batch: 1,
            precision: Precision::Auto,
            kernels: Kernels::selected(),
            conv: ConvAlgorithm::selected(),
        }
    }
}

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

impl std::fmt::Display for TimeShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
    pub image_type: &'static str,
    pub time_input: String,
    pub time_type: &'static str,
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

/// A loaded, optimized model ready to spawn per-worker denoisers.
pub struct Model {
    pub source: String,
    pub info: ModelInfo,
    pub io: IoSpec,
    /// Images per network call in the plan.
    pub batch: usize,
    /// "f32" or "f16": the arithmetic the plan runs.
    pub compute: &'static str,
    /// Graph rewrites applied before tract saw the model.
    pub rewrites: Vec<String>,
    /// Which kernels run the convolutions and layer norms (see `kernels.rs`).
    pub kernels: String,
    /// Convolutions run by our kernel instead of tract's lowering.
    pub direct_convs: usize,
    /// Those of them computed by Winograd's algorithm.
    pub winograd_convs: usize,
    /// Matrix products (attention, linear layers) run on our tiles instead of tract's.
    pub matmuls: usize,
    pub file_size: usize,
    plan: Arc<TypedSimplePlan>,
    image_pos: usize,
    image_dt: DatumType,
    time_dt: DatumType,
}

fn elem_name(t: i32) -> &'static str {
    match t {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        6 => "int32",
        7 => "int64",
        10 => "float16",
        11 => "float64",
        _ => "other",
    }
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

/// Finds the image and timestep inputs and the output, whatever their names.
fn io_spec(origin: &str, graph: &pb::GraphProto) -> Result<IoSpec> {
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|i| i.name.as_str()).collect();
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
    let is_float = |t: i32| t == 1 || t == 10;
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
    if ![1, 6, 7, 10].contains(&time_elem) {
        return Err(Error::model(
            origin,
            format!(
                "timestep input {} is {}, expected int64, int32, float32 or float16",
                time.name,
                elem_name(time_elem)
            ),
        ));
    }
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
        match init.data_type {
            1 => counts[0] += 1,
            10 => counts[1] += 1,
            _ => {}
        }
    }
    let ops: std::collections::HashSet<&str> =
        graph.node.iter().map(|n| n.op_type.as_str()).collect();
    let int8 = if ops.contains("QLinearConv") || ops.contains("QLinearMatMul") {
        Some("int8 (QOperator)")
    } else if ops.contains("DequantizeLinear") {
        Some("int8 (QDQ)")
    } else {
        None
    };
    Ok(IoSpec {
        image_input: image.name.clone(),
        image_type: elem_name(image_elem),
        time_input: time.name.clone(),
        time_type: elem_name(time_elem),
        time_shape,
        output: output.name.clone(),
        image_shape: chw,
        fixed_batch,
        fp16_weights: counts[1] > counts[0],
        int8,
    })
}

fn dt_of(elem: &str) -> DatumType {
    match elem {
        "float16" => DatumType::F16,
        "int64" => DatumType::I64,
        "int32" => DatumType::I32,
        _ => DatumType::F32,
    }
}

/// True when the CPU has native f16 arithmetic (FEAT_FP16), honouring `TRACT_CPU_ISA`.
pub fn cpu_has_fp16() -> bool {
    tract_linalg::has_fp16()
}

impl Model {
    pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<Model> {
        let origin = source.display();
        let (bytes, sidecar): (std::borrow::Cow<'static, [u8]>, BTreeMap<String, String>) =
            match source {
                ModelSource::Path(p) => {
                    let bytes = std::fs::read(p).map_err(|e| {
                        Error::input(format!("cannot read model {}: {e}", p.display()))
                    })?;
                    (bytes.into(), read_sidecar(p)?)
                }
                ModelSource::Embedded { bytes, .. } => ((*bytes).into(), BTreeMap::new()),
            };
        let file_size = bytes.len();
        let mut proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &*bytes)
            .map_err(|e| {
                Error::model(
                    &origin,
                    format!(
                        "not a valid ONNX file (truncated or another format?): {}",
                        one_line(&e)
                    ),
                )
            })?;
        let graph = proto
            .graph
            .as_ref()
            .filter(|g| !g.node.is_empty())
            .ok_or_else(|| Error::model(&origin, "not a valid ONNX model: it holds no graph"))?;
        let io = io_spec(&origin, graph)?;
        let metadata: BTreeMap<String, String> = proto
            .metadata_props
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let default_name = match source {
            ModelSource::Path(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ModelSource::Embedded { name, .. } => name.to_string(),
        };
        let info = ModelInfo::resolve(&origin, &default_name, &metadata, &sidecar)?;
        let rewrites = onnx_fix::apply(&mut proto);

        let batch = io.fixed_batch.unwrap_or(opts.batch.max(1));
        let compute_f16 = match opts.precision {
            Precision::F32 => false,
            Precision::F16 => true,
            // fp16 models compute in f16 where the CPU has FEAT_FP16, unless our kernels run
            // the convolutions: they are f32 only and beat tract's f16 ones (README, "ARM,
            // without a board": 12.0 M vs 15.2 M instructions per step on Cortex-A76).
            Precision::Auto => {
                (io.fp16_weights || io.image_type == "float16")
                    && cpu_has_fp16()
                    && opts.kernels == Kernels::Tract
            }
        };
        let engine = |e: anyhow::Error| Error::model(&origin, format!("tract: {}", one_line(&e)));

        let kernels = opts.kernels;
        let mut onnx = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true);
        fused::register(&mut onnx, kernels);
        let mut model = onnx.model_for_proto_model(&proto).map_err(engine)?;
        // The parsed protobuf and the file's bytes hold a copy of every weight each: gone
        // before tract optimizes (peak memory of the main job).
        drop(proto);
        drop(bytes);
        let image_dt = dt_of(io.image_type);
        let time_dt = dt_of(io.time_type);
        let time_shape: TVec<usize> = match io.time_shape {
            TimeShape::Scalar => tvec![],
            TimeShape::One => tvec![1],
            TimeShape::Batch => tvec![batch],
            TimeShape::BatchByOne => tvec![batch, 1],
        };
        let [c, h, w] = io.image_shape;
        let mut image_pos = usize::MAX;
        let mut time_pos = usize::MAX;
        for (pos, outlet) in model
            .input_outlets()
            .map_err(engine)?
            .to_vec()
            .into_iter()
            .enumerate()
        {
            let name = model.node(outlet.node).name.clone();
            if name == io.image_input {
                image_pos = pos;
                model
                    .set_input_fact(pos, InferenceFact::dt_shape(image_dt, [batch, c, h, w]))
                    .map_err(engine)?;
            } else if name == io.time_input {
                time_pos = pos;
                model
                    .set_input_fact(pos, InferenceFact::dt_shape(time_dt, time_shape.clone()))
                    .map_err(engine)?;
            }
        }
        if image_pos == usize::MAX || time_pos == usize::MAX {
            return Err(Error::model(
                &origin,
                "tract did not expose the image and timestep inputs",
            ));
        }
        let mut typed = model.into_typed().map_err(engine)?;
        let has_f16 = typed.nodes().iter().any(|n| {
            n.outputs
                .iter()
                .any(|o| o.fact.datum_type == DatumType::F16)
        });
        if has_f16 && !compute_f16 {
            FloatPrecisionTranslator::new(DatumType::F16, DatumType::F32)
                .transform(&mut typed)
                .map_err(engine)?;
        }
        // Folds constant subgraphs (the casts the translation put on weights, the axis moves
        // the ONNX parser puts on transposed-convolution kernels) so that weights are constants
        // for the kernel rewrites.
        Optimizer::prop_consts()
            .optimize(&mut typed)
            .map_err(engine)?;
        // 1×1 and transposed convolutions are taken before tract's declutter turns them into
        // matrix products (ours are f32: f16 arithmetic leaves every convolution to tract).
        if !compute_f16 {
            fused::rewrite_before_declutter(&mut typed, kernels).map_err(engine)?;
        }
        typed = typed.into_decluttered().map_err(engine)?;
        let out_fact = typed.output_fact(0).map_err(engine)?.clone();
        let want: TVec<TDim> = [batch, c, h, w].iter().map(|&d| d.to_dim()).collect();
        if out_fact.shape.to_tvec() != want {
            return Err(Error::model(
                &origin,
                format!(
                    "not a denoiser: output {} has shape {:?}, expected the image's [{batch},{c},{h},{w}]",
                    io.output, out_fact.shape
                ),
            ));
        }
        if compute_f16 {
            FloatPrecisionTranslator::new(DatumType::F32, DatumType::F16)
                .transform(&mut typed)
                .map_err(engine)?;
            typed = typed.into_decluttered().map_err(engine)?;
        }
        let ours = fused::rewrite(&mut typed, kernels, opts.conv).map_err(engine)?;
        let optimized = typed.into_optimized().map_err(engine)?;
        let plan = optimized.into_runnable().map_err(engine)?;
        // The plan's own input types after translation decide the tensors we feed.
        let image_dt = plan
            .model()
            .input_fact(image_pos)
            .map_err(engine)?
            .datum_type;
        let time_dt = plan
            .model()
            .input_fact(time_pos)
            .map_err(engine)?
            .datum_type;
        Ok(Model {
            source: origin,
            info,
            io,
            batch,
            compute: if compute_f16 { "f16" } else { "f32" },
            rewrites,
            kernels: match kernels {
                Kernels::Tract => "tract".to_string(),
                k => format!(
                    "{} ({} convolutions ({} by Winograd), {} matrix products, fused norms)",
                    k.describe(),
                    ours.convs,
                    ours.winograd,
                    ours.matmuls
                ),
            },
            direct_convs: ours.convs,
            winograd_convs: ours.winograd,
            matmuls: ours.matmuls,
            file_size,
            plan,
            image_pos,
            image_dt,
            time_dt,
        })
    }

    /// A denoiser with its own engine state, for one worker thread.
    pub fn denoiser(&self) -> Result<TractDenoiser> {
        self.denoiser_with_threads(1)
    }

    /// A denoiser whose convolutions are split between `threads` threads (a [`Team`]): for
    /// runs with fewer batches than cores. Nodes left to tract run on the calling thread.
    pub fn denoiser_with_threads(&self, threads: usize) -> Result<TractDenoiser> {
        let engine = |e: anyhow::Error| Error::runtime(format!("tract: {}", one_line(&e)));
        let state = TypedSimpleState::new(&self.plan).map_err(engine)?;
        let [c, h, w] = self.io.image_shape;
        let x = Tensor::zero_dt(self.image_dt, &[self.batch, c, h, w]).map_err(engine)?;
        let tshape: Vec<usize> = match self.io.time_shape {
            TimeShape::Scalar => vec![],
            TimeShape::One => vec![1],
            TimeShape::Batch => vec![self.batch],
            TimeShape::BatchByOne => vec![self.batch, 1],
        };
        let t = Tensor::zero_dt(self.time_dt, &tshape).map_err(engine)?;
        let team = match threads > 1 {
            true => Some(Arc::new(Team::new(threads).map_err(|e| {
                Error::runtime(format!("cannot start {threads} threads: {e}"))
            })?)),
            false => None,
        };
        Ok(TractDenoiser {
            team,
            state,
            x: Arc::new(x),
            t: Arc::new(t),
            image_pos: self.image_pos,
            shape: self.io.image_shape,
            batch: self.batch,
        })
    }
}

fn read_sidecar(model: &Path) -> Result<BTreeMap<String, String>> {
    let path = model.with_extension("json");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_sidecar(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::input(format!("cannot read {}: {e}", path.display()))),
    }
}

/// One worker's view of the model: its own state and input tensors, reused every step.
pub struct TractDenoiser {
    team: Option<Arc<Team>>,
    state: TypedSimpleState,
    x: Arc<Tensor>,
    t: Arc<Tensor>,
    image_pos: usize,
    shape: [usize; 3],
    batch: usize,
}

/// Gives mutable access to a tensor we hand to tract by `Arc`: in place when tract has let go
/// of it (the normal case), else by replacing it with a copy.
fn exclusive(t: &mut Arc<Tensor>) -> &mut Tensor {
    Arc::make_mut(t)
}

fn write_floats(dst: &mut Tensor, src: &[f32]) -> anyhow::Result<()> {
    let dt = dst.datum_type();
    let mut view = dst.try_as_plain_ram_mut()?;
    match dt {
        DatumType::F32 => view.as_slice_mut::<f32>()?.copy_from_slice(src),
        DatumType::F16 => {
            for (d, s) in view.as_slice_mut::<f16>()?.iter_mut().zip(src) {
                *d = f16::from_f32(*s);
            }
        }
        dt => anyhow::bail!("unsupported image input type {dt:?}"),
    }
    Ok(())
}

fn write_timestep(dst: &mut Tensor, t: usize) -> anyhow::Result<()> {
    let dt = dst.datum_type();
    let mut view = dst.try_as_plain_ram_mut()?;
    match dt {
        DatumType::I64 => view.as_slice_mut::<i64>()?.fill(t as i64),
        DatumType::I32 => view.as_slice_mut::<i32>()?.fill(t as i32),
        DatumType::F32 => view.as_slice_mut::<f32>()?.fill(t as f32),
        DatumType::F16 => view.as_slice_mut::<f16>()?.fill(f16::from_f32(t as f32)),
        dt => anyhow::bail!("unsupported timestep type {dt:?}"),
    }
    Ok(())
}

fn read_floats(src: &Tensor, out: &mut [f32]) -> anyhow::Result<()> {
    let view = src.try_as_plain_ram()?;
    match src.datum_type() {
        DatumType::F32 => out.copy_from_slice(view.as_slice::<f32>()?),
        DatumType::F16 => {
            for (o, v) in out.iter_mut().zip(view.as_slice::<f16>()?) {
                *o = v.to_f32();
            }
        }
        dt => anyhow::bail!("unsupported output type {dt:?}"),
    }
    Ok(())
}

impl TractDenoiser {
    /// Writes `x` and `t` into the reused input tensors and hands them to tract in the
    /// model's input order.
    fn inputs(&mut self, x: &[f32], t: usize) -> anyhow::Result<TVec<TValue>> {
        write_floats(exclusive(&mut self.x), x)?;
        write_timestep(exclusive(&mut self.t), t)?;
        let mut inputs: TVec<TValue> = tvec![];
        for pos in 0..2 {
            inputs.push(TValue::from_const(if pos == self.image_pos {
                self.x.clone()
            } else {
                self.t.clone()
            }));
        }
        Ok(inputs)
    }
}

impl Denoiser for TractDenoiser {
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn batch(&self) -> usize {
        self.batch
    }

    fn run(&mut self, x: &[f32], t: usize, out: &mut [f32]) -> Result<()> {
        let engine = |e: anyhow::Error| Error::runtime(format!("tract: {}", one_line(&e)));
        let inputs = self.inputs(x, t).map_err(engine)?;
        let outputs = match &self.team {
            Some(team) => with_team(team, || self.state.run(inputs)),
            None => self.state.run(inputs),
        }
        .map_err(engine)?;
        read_floats(&outputs[0], out).map_err(engine)?;
        Ok(())
    }
}

/// Time spent in one node of the optimized plan over a profile.
#[derive(Clone, Debug)]
pub struct NodeTime {
    pub name: String,
    /// The optimized operator (tract's own name, e.g. "Conv", "OptMatMul", "Add").
    pub op: String,
    /// What the operator says of itself (shapes, kernel choices), on one line.
    pub info: String,
    pub time: std::time::Duration,
}

impl TractDenoiser {
    /// Runs the plan `runs` times on `x` at timestep `t`, timing every node (tract's
    /// per-node evaluation, as `tract --profile` does): where a denoiser step spends its time.
    pub fn profile(&mut self, x: &[f32], t: usize, runs: usize) -> Result<Vec<NodeTime>> {
        use tract_onnx::tract_core::ops::OpState;
        use tract_onnx::tract_core::plan::{eval, EvalContext};
        let engine = |e: anyhow::Error| Error::runtime(format!("tract: {}", one_line(&e)));
        let mut times: BTreeMap<usize, NodeTime> = BTreeMap::new();
        let team = self.team.clone();
        for _ in 0..runs {
            let inputs = self.inputs(x, t).map_err(engine)?;
            let state = &mut self.state;
            let run = || {
                state.run_plan_with_eval(
                    inputs,
                    |ctx: &EvalContext,
                     st: Option<&mut (dyn OpState + 'static)>,
                     node: &TypedNode,
                     input: TVec<TValue>|
                     -> TractResult<TVec<TValue>> {
                        let t0 = std::time::Instant::now();
                        let out = eval(ctx, st, node, input);
                        let e = times.entry(node.id).or_insert_with(|| NodeTime {
                            name: node.name.clone(),
                            op: node.op().name().to_string(),
                            info: node.op().info().unwrap_or_default().join("; "),
                            time: std::time::Duration::ZERO,
                        });
                        e.time += t0.elapsed();
                        out
                    },
                )
            };
            match &team {
                Some(team) => with_team(team, run),
                None => run(),
            }
            .map_err(engine)?;
        }
        let mut v: Vec<NodeTime> = times.into_values().collect();
        for n in &mut v {
            n.time /= runs.max(1) as u32;
        }
        v.sort_by_key(|n| std::cmp::Reverse(n.time));
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------------
// The engine boundary: what the sampling loop sees of a tract model (see `super::Engine`).

impl super::Engine for Model {
    fn spec(&self) -> super::ModelSpec {
        super::ModelSpec {
            name: self.info.name.clone(),
            image_shape: self.io.image_shape,
            batch: self.batch,
            schedule: self.info.schedule,
            prediction: self.info.prediction,
            pixel_range: self.info.pixel_range,
        }
    }

    fn new_denoiser(&self, threads: usize) -> Result<Box<dyn Denoiser>> {
        Ok(Box::new(self.denoiser_with_threads(threads)?))
    }
}
