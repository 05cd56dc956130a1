//! `Model::load`, one step per function: read the bytes and the sidecar, parse the protobuf,
//! find the interface and the model's settings, choose the precision, parse with our
//! operators, fix every input shape, translate the precision, put our kernels in, optimize.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::floats::FloatPrecisionTranslator;
use tract_onnx::tract_core::optim::Optimizer;
use tract_onnx::tract_core::transform::ModelTransform;

use super::io::IoSpec;
use super::limits;
use super::model::{LoadOptions, Model, ModelSource};
use super::onnx_fix;
use super::rewrite::{self, Rewritten};
use crate::denoiser::api::{Kernels, Precision};
use crate::denoiser::info::{parse_sidecar, ModelInfo};
use crate::error::{one_line, Error, Result};
use crate::input::{read_capped, FileStream, MAX_MODEL_BYTES, MAX_SIDECAR_BYTES};

/// True when the CPU has native f16 arithmetic (FEAT_FP16), honouring `TRACT_CPU_ISA`.
pub fn cpu_has_fp16() -> bool {
    configure_tract();
    tract_linalg::has_fp16()
}

/// Settles tract's CPU features before its first detection (which it caches for the process).
///
/// x86-64: tract 0.23.9's AMX int8 matrix kernel (`avx512amx_mmm_i32_8x8`, picked on Sapphire
/// Rapids and later Xeons for QOperator int8 models) reads its packed B operand past the end of
/// the buffer: `tests/fixtures/models/tiny_unet_int8_qop.onnx` with one image and one thread
/// crashed with SIGSEGV at a `tileloadd` every time here (and now and then with other image and
/// thread counts). Its AVX-512 VNNI kernels give the same integer results, so AMX is turned off,
/// unless `TRACT_CPU_ISA` is set by the user, which tract then obeys as given.
///
/// aarch64 Linux: tract finds FEAT_FP16 in /proc/cpuinfo ("asimdhp") and the core by its "CPU
/// part". Where /proc/cpuinfo does not describe the CPU that runs the code (qemu-user shows the
/// host's; some containers hide it) but the kernel's HWCAP says FP16 and DotProd, tract is told
/// the core is an ARMv8.2 one (its "a75" family, whose f32 kernel choices are the generic ones),
/// so that the f16 and SDOT kernels the CPU has are used. A user's `TRACT_CPU_AARCH64_KIND` or
/// `TRACT_CPU_AARCH64_OVERRIDE_CPU_PART` wins.
fn configure_tract() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(target_arch = "x86_64")]
        if std::env::var_os("TRACT_CPU_ISA").is_none() {
            tract_linalg::knobs::TRACT_CPU_ISA.set(Some("-amx-int8,-amx-bf16".to_string()));
        }
        #[cfg(all(target_arch = "aarch64", target_os = "linux"))]
        if std::env::var_os("TRACT_CPU_AARCH64_KIND").is_none()
            && std::env::var_os("TRACT_CPU_AARCH64_OVERRIDE_CPU_PART").is_none()
            && std::arch::is_aarch64_feature_detected!("fp16")
            && std::arch::is_aarch64_feature_detected!("dotprod")
            && !cpuinfo_describes_this_cpu(
                &std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
            )
        {
            tract_linalg::knobs::TRACT_CPU_AARCH64_KIND.set(Some("a75".to_string()));
        }
    });
}

/// True when /proc/cpuinfo names an ARM core tract knows by part number, or already lists
/// FEAT_FP16: then tract's own detection is right and is left alone.
#[cfg_attr(
    not(all(target_arch = "aarch64", target_os = "linux")),
    allow(dead_code)
)]
fn cpuinfo_describes_this_cpu(cpuinfo: &str) -> bool {
    let has_part = cpuinfo
        .lines()
        .any(|l| l.starts_with("CPU part") && l.contains("0x"));
    let has_fp16 = cpuinfo
        .lines()
        .any(|l| l.starts_with("Features") && l.split_whitespace().any(|f| f == "asimdhp"));
    has_part || has_fp16
}

impl Model {
    /// Loads, checks and optimizes a model. A panic inside tract (tract-onnx leaves some tensor
    /// encodings `unimplemented!`, its constant folding asserts) becomes a one-line model error.
    pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<Model> {
        configure_tract();
        let origin = source.display();
        quiet_panics(|| Model::load_unguarded(source, opts)).unwrap_or_else(|why| {
            Err(Error::model(
                &origin,
                format!("tract cannot import this model ({why})"),
            ))
        })
    }

    fn load_unguarded(source: &ModelSource, opts: &LoadOptions) -> Result<Model> {
        let origin = source.display();
        let engine = |e: anyhow::Error| Error::model(&origin, format!("tract: {}", one_line(&e)));
        let (bytes, sidecar) = read_source(source)?;
        let file_size = bytes.len();
        let mut proto = parse_proto(&origin, bytes)?;
        limits::check_graph(&origin, graph(&origin, &proto)?)?;
        let io = IoSpec::find(&origin, graph(&origin, &proto)?)?;
        let info = model_info(&origin, source, &proto, &sidecar)?;
        let rewrites = onnx_fix::apply(&mut proto);

        let batch = io.fixed_batch.unwrap_or(opts.batch.max(1));
        limits::check_image(&origin, io.image_shape, batch)?;
        let compute_f16 = computes_f16(opts, &io);
        let kernels = opts.kernels;
        let weights = take_initializers(&mut proto);
        let mut model = parse_graph(&proto, weights, kernels).map_err(engine)?;
        drop(proto);
        let (image_pos, time_pos) = fix_inputs(&origin, &mut model, &io, batch)?;
        let mut typed = model.into_typed().map_err(engine)?;
        to_f32(&mut typed, compute_f16).map_err(engine)?;
        // 1×1 and transposed convolutions are taken before tract's declutter turns them into
        // matrix products (ours are f32: f16 arithmetic leaves every convolution to tract).
        if let (Kernels::Ours(isa), false) = (kernels, compute_f16) {
            rewrite::rewrite_before_declutter(&mut typed, isa).map_err(engine)?;
        }
        typed = typed.into_decluttered().map_err(engine)?;
        check_output(&origin, &typed, &io, batch)?;
        limits::check_activations(&origin, &typed)?;
        if compute_f16 {
            FloatPrecisionTranslator::new(DatumType::F32, DatumType::F16)
                .transform(&mut typed)
                .map_err(engine)?;
            typed = typed.into_decluttered().map_err(engine)?;
        }
        let ours = match kernels {
            Kernels::Ours(isa) => rewrite::rewrite(&mut typed, isa, opts.conv).map_err(engine)?,
            Kernels::Tract => Rewritten::default(),
        };
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(engine)?;
        // The plan's own input types after translation decide the tensors we feed.
        let input_dt = |pos| -> Result<DatumType> {
            Ok(plan.model().input_fact(pos).map_err(engine)?.datum_type)
        };
        let (image_dt, time_dt) = (input_dt(image_pos)?, input_dt(time_pos)?);
        Ok(Model {
            source: origin,
            info,
            io,
            batch,
            compute: if compute_f16 { "f16" } else { "f32" },
            rewrites,
            kernels: describe_kernels(kernels, &ours),
            direct_convs: ours.convs,
            winograd_convs: ours.winograd,
            matmuls: ours.matmuls,
            quant_convs: ours.quant_convs,
            group_norms: ours.group_norms,
            file_size,
            plan,
            image_pos,
            image_dt,
            time_dt,
        })
    }
}

thread_local! {
    /// Set while [`quiet_panics`] runs on this thread.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err(its message)` without the panic hook's multi-line
/// report (other threads' panics still print as usual).
fn quiet_panics<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        msg.replace('\n', " ")
    })
}

/// Settings by name (ONNX metadata, sidecar).
type Settings = BTreeMap<String, String>;

/// A model's bytes: compiled in, or a file read as it is decoded.
enum ModelBytes {
    Embedded(&'static [u8]),
    File(FileStream),
}

impl ModelBytes {
    fn len(&self) -> usize {
        match self {
            ModelBytes::Embedded(b) => b.len(),
            ModelBytes::File(f) => f.len() as usize,
        }
    }
}

/// The model's bytes and its sidecar's settings (none for a built-in model).
fn read_source(source: &ModelSource) -> Result<(ModelBytes, Settings)> {
    match source {
        ModelSource::Path(p) => {
            let file = FileStream::open(p, "model", MAX_MODEL_BYTES)?;
            Ok((ModelBytes::File(file), read_sidecar(p)?))
        }
        ModelSource::Embedded { bytes, .. } => Ok((ModelBytes::Embedded(bytes), BTreeMap::new())),
    }
}

/// `<model>.json` beside the model, when there is one.
fn read_sidecar(model: &Path) -> Result<BTreeMap<String, String>> {
    let path = model.with_extension("json");
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let bytes = read_capped(&path, "sidecar", MAX_SIDECAR_BYTES)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::input(format!("sidecar {}: not UTF-8 text", path.display())))?;
    parse_sidecar(&path, &text)
}

/// The protobuf, decoded as the file is read (tract's `proto_model_for_read` would first copy
/// the whole file, then decode a second copy of every weight from it): the weights are in
/// memory once, in the message.
fn parse_proto(origin: &str, bytes: ModelBytes) -> Result<pb::ModelProto> {
    let decoded = match bytes {
        ModelBytes::Embedded(b) => <pb::ModelProto as prost::Message>::decode(b),
        ModelBytes::File(mut f) => {
            let decoded = <pb::ModelProto as prost::Message>::decode(&mut f);
            // A read error (or a file changed while read) explains a failed decode best.
            f.finish()?;
            decoded
        }
    };
    decoded.map_err(anyhow::Error::from).map_err(|e| {
        Error::model(
            origin,
            format!(
                "not a valid ONNX file (truncated or another format?): {}",
                one_line(&e)
            ),
        )
    })
}

fn graph<'p>(origin: &str, proto: &'p pb::ModelProto) -> Result<&'p pb::GraphProto> {
    proto
        .graph
        .as_ref()
        .filter(|g| !g.node.is_empty())
        .ok_or_else(|| Error::model(origin, "not a valid ONNX model: it holds no graph"))
}

/// The model's settings: its ONNX metadata, then its sidecar, then the seed's defaults.
fn model_info(
    origin: &str,
    source: &ModelSource,
    proto: &pb::ModelProto,
    sidecar: &BTreeMap<String, String>,
) -> Result<ModelInfo> {
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
    ModelInfo::resolve(origin, &default_name, &metadata, sidecar)
}

/// Whether the plan computes in f16.
fn computes_f16(opts: &LoadOptions, io: &IoSpec) -> bool {
    match opts.precision {
        Precision::F32 => false,
        Precision::F16 => true,
        // fp16 models compute in f16 where the CPU has FEAT_FP16, unless our kernels run
        // the convolutions: they are f32 only and beat tract's f16 ones (docs/PERFORMANCE.md, "ARM,
        // without a board": 12.0 M vs 15.2 M instructions per step on Cortex-A76).
        Precision::Auto => {
            (io.fp16_weights || io.image_type == DatumType::F16)
                && cpu_has_fp16()
                && opts.kernels == Kernels::Tract
        }
    }
}

/// The graph's initializers (its weights), moved out of the protobuf: [`parse_graph`] turns
/// them into tract tensors one at a time, each protobuf copy freed as its tensor is made, so
/// that the weights are never held twice over (peak memory of the main job).
fn take_initializers(proto: &mut pb::ModelProto) -> Vec<pb::TensorProto> {
    proto
        .graph
        .as_mut()
        .map(|g| std::mem::take(&mut g.initializer))
        .unwrap_or_default()
}

/// The ONNX graph (its initializers taken out by [`take_initializers`] and given as
/// `weights`) as tract's inference model; with our kernels, ONNX `LayerNormalization` and
/// `InstanceNormalization` are parsed into single nodes (see [`rewrite::register`]).
///
/// tract's parser makes a source node of each name no node or initializer defines; each
/// weight's source becomes the constant tract would have made, and leaves the model's inputs.
fn parse_graph(
    proto: &pb::ModelProto,
    weights: Vec<pb::TensorProto>,
    kernels: Kernels,
) -> TractResult<InferenceModel> {
    let mut onnx = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .with_ignore_output_shapes(true);
    if let Kernels::Ours(_) = kernels {
        rewrite::register(&mut onnx);
    }
    let parsed = onnx.parse(proto, None)?;
    let mut model = parsed.model;
    let mut inputs = model.input_outlets()?.to_vec();
    let mut resolved = std::collections::HashSet::new();
    for t in weights {
        let Some(&outlet) = parsed.outlets_by_name.get(&t.name) else {
            continue; // read by no node
        };
        let tensor = tract_onnx::tensor::load_tensor(&*onnx.provider, &t, None)
            .with_context(|| format!("initializer {}", t.name))?
            .into_arc_tensor();
        resolved.insert(t.name.clone());
        drop(t);
        let fact = TypedFact::try_from(tensor.clone())?;
        let node = model.node_mut(outlet.node);
        node.op = Box::new(tract_onnx::tract_core::ops::konst::Const::new(tensor)?);
        node.outputs[0].fact = fact.into();
        inputs.retain(|&i| i != outlet);
    }
    model.set_input_outlets(&inputs)?;
    let unresolved: Vec<&String> = parsed
        .unresolved_inputs
        .iter()
        .filter(|n| !resolved.contains(*n))
        .collect();
    if !unresolved.is_empty() {
        anyhow::bail!("Could not resolve inputs at top-level: {unresolved:?}");
    }
    Ok(model)
}

/// Fixes the image input to `[batch, C, H, W]` and the timestep to its shape for `batch`;
/// returns their positions among the model's inputs.
fn fix_inputs(
    origin: &str,
    model: &mut InferenceModel,
    io: &IoSpec,
    batch: usize,
) -> Result<(usize, usize)> {
    let engine = |e: anyhow::Error| Error::model(origin, format!("tract: {}", one_line(&e)));
    let [c, h, w] = io.image_shape;
    let mut image_pos = None;
    let mut time_pos = None;
    let outlets = model.input_outlets().map_err(engine)?.to_vec();
    for (pos, outlet) in outlets.into_iter().enumerate() {
        let name = &model.node(outlet.node).name;
        let fact = if *name == io.image_input {
            image_pos = Some(pos);
            InferenceFact::dt_shape(io.image_type, [batch, c, h, w])
        } else if *name == io.time_input {
            time_pos = Some(pos);
            InferenceFact::dt_shape(io.time_type, io.time_shape.dims(batch))
        } else {
            continue;
        };
        model.set_input_fact(pos, fact).map_err(engine)?;
    }
    image_pos
        .zip(time_pos)
        .ok_or_else(|| Error::model(origin, "tract did not expose the image and timestep inputs"))
}

/// Brings f16 weights and data to f32 unless the plan computes in f16, then folds constant
/// subgraphs (the casts the translation put on weights, the axis moves the ONNX parser puts
/// on transposed-convolution kernels) so that weights are constants for the kernel rewrites.
fn to_f32(typed: &mut TypedModel, compute_f16: bool) -> TractResult<()> {
    let has_f16 = typed.nodes().iter().any(|n| {
        n.outputs
            .iter()
            .any(|o| o.fact.datum_type == DatumType::F16)
    });
    if has_f16 && !compute_f16 {
        FloatPrecisionTranslator::new(DatumType::F16, DatumType::F32).transform(typed)?;
    }
    Optimizer::prop_consts().optimize(typed)
}

/// Fails unless the output has the image's shape.
fn check_output(origin: &str, typed: &TypedModel, io: &IoSpec, batch: usize) -> Result<()> {
    let out_fact = typed
        .output_fact(0)
        .map_err(|e| Error::model(origin, format!("tract: {}", one_line(&e))))?;
    let [c, h, w] = io.image_shape;
    let want: TVec<TDim> = [batch, c, h, w].iter().map(|&d| d.to_dim()).collect();
    if out_fact.shape.to_tvec() != want {
        return Err(Error::model(
            origin,
            format!(
                "not a denoiser: output {} has shape {:?}, expected the image's [{batch},{c},{h},{w}]",
                io.output, out_fact.shape
            ),
        ));
    }
    Ok(())
}

/// `Model::kernels`: who runs what, for `info` and `bench`.
fn describe_kernels(kernels: Kernels, ours: &Rewritten) -> String {
    match kernels {
        Kernels::Tract => "tract".to_string(),
        Kernels::Ours(isa) => format!(
            "{} ({} convolutions ({} by Winograd), {} matrix products, fused norms{}{})",
            isa.describe(),
            ours.convs,
            ours.winograd,
            ours.matmuls,
            match ours.group_norms {
                0 => String::new(),
                n => format!(" ({n} group norms in one node each)"),
            },
            match ours.quant_convs {
                0 => String::new(),
                n => format!(
                    "; {n} int8 convolutions on {}",
                    super::ops::qconv::dot_isa_for(isa).name()
                ),
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{cpuinfo_describes_this_cpu, quiet_panics};

    #[test]
    fn a_panic_inside_the_importer_becomes_its_message() {
        assert_eq!(quiet_panics(|| 7), Ok(7));
        let r: Result<(), String> = quiet_panics(|| panic!("not implemented: FIXME\nsecond line"));
        assert_eq!(r, Err("not implemented: FIXME second line".to_string()));
    }

    #[test]
    fn cpuinfo_of_a_board_is_trusted_and_a_foreign_one_is_not() {
        // A Raspberry Pi 5 (Cortex-A76), abridged from its /proc/cpuinfo.
        let pi5 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull \
                   sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n\
                   CPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd0b\n";
        assert!(cpuinfo_describes_this_cpu(pi5));
        // A Pi 4 (Cortex-A72): a part tract knows, no FEAT_FP16.
        let pi4 = "Features\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n";
        assert!(cpuinfo_describes_this_cpu(pi4));
        // What qemu-user shows an aarch64 binary on an x86-64 host: the host's file.
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme avx2 avx512f\n";
        assert!(!cpuinfo_describes_this_cpu(x86));
        assert!(!cpuinfo_describes_this_cpu(""));
    }
}
