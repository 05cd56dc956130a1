//! tract (through edge-sample's loader and rewrites) against onnxruntime on the same files:
//! tests/fixtures/make_models.py, make_qop_ops.py and make_fashion_half_ref.py ran each model
//! in onnxruntime (CPU, 1 thread) on inputs from the noise stream and saved input, timesteps
//! and output (tests/fixtures/ort/).
//!
//! How differences are measured. Float networks: |tract − ort| divided by the standard
//! deviation of onnxruntime's output for that file (the outputs' std runs from 0.19 to 2.4,
//! and rounding differences grow with the size of the activations), max and mean limits
//! apart. Quantized outputs: in steps of the output's quantization scale (both engines end on
//! the same DequantizeLinear, so differences come in whole steps). Where every measurement
//! was exactly 0 the test asserts bit-identity instead of a limit.
//!
//! Every limit is about 3× the worst value measured over tract's own lowering and every
//! kernel set of ours (x86: portable, AVX2, AVX-512; aarch64 under qemu, Cortex-A72 and
//! Cortex-A76: portable, NEON); the measurements are in each constant's comment.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use edge_sample::denoiser::tract::cpu_has_fp16;
use edge_sample::denoiser::{
    ConvAlgorithm, Denoiser, Kernels, LoadOptions, Model, ModelSource, Precision,
};

/// Matrix products of attn_unet.onnx that tract leaves as einsums after declutter (counted
/// from its graph: 4 attention blocks × 6, the time MLP's 3 (tract splits its first layer in
/// two) and the time projections of its 8 ResNet blocks).
const ATTN_UNET_MATMULS: usize = 4 * 6 + 3 + 8;

/// GroupNorms of attn_unet.onnx, each run as one node of ours: two in each of its 8 ResNet
/// blocks, one in each of its 4 attention blocks, and the one before the output convolution.
const ATTN_UNET_GROUP_NORMS: usize = 8 * 2 + 4 + 1;

/// A limit on max and mean |difference|, in the unit the check names (std of the reference,
/// or quantization steps).
#[derive(Clone, Copy, Debug)]
struct Limit {
    max: f32,
    mean: f32,
}

// Each limit below: ~3× the worst measured over tract's lowering and every kernel set of
// ours, on x86 (AVX-512 host: tract, portable, AVX2, AVX-512) and under qemu Cortex-A72 and
// Cortex-A76 (tract, portable, NEON); "max/std" is max |tract − ort| / std(ort output).

/// fp32 graphs, both engines in f32 (summation order, FMA), relative to std(ort output);
/// also the attention test's image 0. Worst max/std 5.4e-6 (attn_unet, tract's lowering,
/// x86; qemu 4.1e-6), mean/std 7.0e-7 (attn_unet, portable, x86; NEON 6.9e-7). Other files:
/// max/std 6e-7 .. 3.3e-6.
const FP32: Limit = Limit {
    max: 1.6e-5,
    mean: 2.1e-6,
};
/// fp16 weights computed in f32 by tract vs onnxruntime's float16 arithmetic, relative to
/// std(ort output). Worst max/std 2.46e-3 (tiny_unet_fp16_half: every kernel set, x86 and
/// qemu), mean/std 3.23e-4 (same); tiny_unet_fp16 2.0e-3 / 2.9e-4, fashion_fp16_half
/// 1.8e-3 / 1.7e-4.
const FP16_AS_F32: Limit = Limit {
    max: 7.4e-3,
    mean: 9.7e-4,
};
/// f16 *arithmetic* (`--precision f16`, or auto with FEAT_FP16 and tract's kernels) vs
/// onnxruntime's float16 graph, relative to std(ort output). tiny_unet_fp16 with tract's
/// norms: max/std 2.41e-2, mean/std 4.19e-3 (identical on x86, qemu A72 and A76); with our
/// fused norms' f32 statistics 1.18e-2 / 1.99e-3.
const F16_COMPUTE: Limit = Limit {
    max: 7.3e-2,
    mean: 1.3e-2,
};
/// Lower bound: `--precision f16` must differ from the f32 run of the same file by at least
/// this mean |f16 − f32| / std(ort output): ~1/3 of the smallest gap measured (2.01e-3 with
/// our norms, 4.12e-3 with tract's; x86, qemu A72 and A76 alike), so that a run which
/// silently computes in f32 (gap 0) fails.
const F16_MIN_MEAN_GAP: f32 = 6.7e-4;
/// QOperator tiny UNet (integer QLinearConv in both engines, contrib ops rewritten to
/// DequantizeLinear → float op → QuantizeLinear), in steps of the output scale. Measured max
/// 2 steps, mean 0.42 steps (every kernel set, x86 and qemu A72/A76); differences come in
/// whole steps, so the max limit is 5 steps (2.5×).
const INT8_QOP_STEPS: Limit = Limit {
    max: 5.0,
    mean: 1.3,
};
/// QDQ convolutions with a float output, integer sums times one f32 multiplier (ours and
/// tract's) vs onnxruntime's float convolution of the dequantized tensors, relative to
/// std(ort output, graph optimizations off: the ONNX definition). Worst max/std 4.71e-7
/// (residual_u8), mean/std 5.51e-8 (stride2_reshape), every kernel set and tract alike (x86
/// and qemu A72/A76: the sums are exact, the multiply the same IEEE operation); 3× each.
const QDQ_FLOAT_CONV: Limit = Limit {
    max: 1.5e-6,
    mean: 1.7e-7,
};
/// The default-op-set QDQ export of the digit model, in steps of its output scale, vs
/// onnxruntime's optimized session (which fuses the Q/DQ pairs around Add, Concat and the rest
/// into its own integer ops) and, for tract's own lowering, vs onnxruntime without graph
/// optimizations too. Measured (x86 and qemu A72/A76): our kernels 4 steps max, mean 0.452
/// vs the optimized session (= onnxruntime's own optimized-vs-unoptimized gap); tract's
/// lowering 6 / 0.492 vs optimized, 6 / 0.480 vs unoptimized. Limits 3× the worst.
const QDQ_DEFAULT_STEPS: Limit = Limit {
    max: 18.0,
    mean: 1.5,
};
/// The scale of digits_qdq_default's final DequantizeLinear (manifest out_scale).
const DIGITS_QDQ_DEFAULT_EPS_SCALE: f32 = 0.033_92;
/// The scale of tiny_unet_int8_qdq/qop's final DequantizeLinear (eps_scale in both files).
const TINY_UNET_INT8_EPS_SCALE: f32 = 0.030_368_28;
/// Our kernels vs tract's own lowering on models/fashion/fashion.onnx, relative to std of
/// tract's output. Worst max/std 1.91e-6 (AVX2, x86, with the group norms' affine folded in;
/// 1.74e-6 before), mean/std 3.1e-7 (portable, x86; qemu 1.3e-6 / 2.0e-7).
const FASHION_OURS_VS_TRACT: Limit = Limit {
    max: 5.3e-6,
    mean: 9.4e-7,
};
/// Forced Winograd F(2×2) vs onnxruntime, relative to std(ort output). Worst max/std 3.57e-6
/// (attn_unet, portable, x86), mean/std 5.9e-7 (attn_unet, portable, qemu).
const WINOGRAD_F2: Limit = Limit {
    max: 1.1e-5,
    mean: 1.8e-6,
};
/// Forced Winograd F(4×4) vs onnxruntime, relative to std(ort output). Worst max/std 1.30e-5
/// (attn_unet, portable, qemu A72/A76; x86 1.11e-5), mean/std 2.05e-6 (attn_unet, portable,
/// x86).
const WINOGRAD_F4: Limit = Limit {
    max: 3.9e-5,
    mean: 6.2e-6,
};

/// An onnxruntime reference: input, timesteps and output.
struct Reference {
    name: String,
    x: Vec<f32>,
    ts: Vec<usize>,
    want: Vec<f32>,
    n: usize,
    chw: usize,
}

impl Reference {
    /// tests/fixtures/ort/{stem}_{x,t,eps}.npy
    fn load(stem: &str) -> Reference {
        let (xshape, x) =
            edge_sample::npy::read_f32(&fixture(&format!("ort/{stem}_x.npy"))).unwrap();
        let (_, want) =
            edge_sample::npy::read_f32(&fixture(&format!("ort/{stem}_eps.npy"))).unwrap();
        let path = fixture(&format!("ort/{stem}_t.npy"));
        let ts = match edge_sample::npy::read_i64(&path) {
            Ok((_, v)) => v.into_iter().map(|t| t as usize).collect(),
            Err(_) => edge_sample::npy::read_f32(&path)
                .unwrap()
                .1
                .into_iter()
                .map(|t| t as usize)
                .collect(),
        };
        assert_eq!(x.len(), want.len(), "{stem}: x and eps sizes");
        Reference {
            name: stem.to_string(),
            n: xshape[0],
            chw: xshape[1..].iter().product(),
            x,
            ts,
            want,
        }
    }

    /// Standard deviation of onnxruntime's output.
    fn std(&self) -> f32 {
        std_of(&self.want)
    }
}

/// Population standard deviation.
fn std_of(v: &[f32]) -> f32 {
    let n = v.len() as f64;
    let mean = v.iter().map(|&a| a as f64).sum::<f64>() / n;
    let var = v.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() as f32
}

fn model_path(file: &str) -> PathBuf {
    if let Some(repo) = file.strip_prefix("repo:") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(repo)
    } else {
        fixture(&format!("models/{file}"))
    }
}

fn load_with(file: &str, batch: usize, precision: Precision, kernels: Kernels) -> Model {
    Model::load(
        &ModelSource::Path(model_path(file)),
        &LoadOptions {
            batch,
            precision,
            kernels,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{file} ({precision}, {kernels:?}): {e}"))
}

/// Runs the model on the reference's input: one timestep per call, the whole batch at image
/// i's t, keeping image i (images of a batch do not interact in these networks).
fn run_on(model: &Model, r: &Reference) -> Vec<f32> {
    let mut den = model.denoiser().unwrap();
    assert_eq!(den.batch(), r.n, "{}: plan batch", r.name);
    let mut got = vec![0f32; r.n * r.chw];
    let mut out = vec![0f32; r.n * r.chw];
    for i in 0..r.n {
        let t = if r.ts.len() == r.n { r.ts[i] } else { r.ts[0] };
        den.run(&r.x, t, &mut out).unwrap();
        got[i * r.chw..(i + 1) * r.chw].copy_from_slice(&out[i * r.chw..(i + 1) * r.chw]);
    }
    got
}

/// Max and mean |got − want| / unit, and where the max is.
fn scaled_diff(got: &[f32], want: &[f32], unit: f32) -> (f32, f32, usize) {
    let (max, at) = max_abs_diff(got, want);
    let mean = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() as f64)
        .sum::<f64>()
        / got.len() as f64;
    (max / unit, mean as f32 / unit, at)
}

/// Asserts max and mean |got − want| / unit within `limit`; prints the measurement in one
/// greppable line (`MEASURE <constant> <case> <kernels>: max … mean …`).
fn assert_within(
    constant: &str,
    case: &str,
    got: &[f32],
    want: &[f32],
    unit: f32,
    limit: Limit,
) -> (f32, f32) {
    let (max, mean, at) = scaled_diff(got, want, unit);
    eprintln!("MEASURE {constant} {case}: max {max:.3e} mean {mean:.3e} (unit {unit:.4e})");
    assert!(
        max <= limit.max && mean <= limit.mean,
        "{case}: max |diff| {max} (got {}, want {} at {at}), mean {mean}, in units of {unit}; \
         limits {constant} {} / {}",
        got[at],
        want[at],
        limit.max,
        limit.mean
    );
    (max, mean)
}

/// Asserts got == want bit for bit; prints the measurement (in units of `unit`) first.
fn assert_bits(constant: &str, case: &str, got: &[f32], want: &[f32], unit: f32) {
    let (max, mean, at) = scaled_diff(got, want, unit);
    eprintln!("MEASURE {constant} {case}: max {max:.3e} mean {mean:.3e} (unit {unit:.4e})");
    assert!(
        got.iter()
            .zip(want)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{case}: not bit-identical to onnxruntime: max |diff| {max} (got {}, want {} at {at}), \
         mean {mean}, in units of {unit}",
        got[at],
        want[at]
    );
}

/// tract's own lowering, and every set of our convolution / layer-norm kernels this CPU runs
/// (portable, AVX2, AVX-512, NEON): each is checked against onnxruntime on its own.
fn kernel_choices() -> Vec<Kernels> {
    let mut k = vec![Kernels::Tract];
    k.extend(Kernels::all_supported());
    k
}

/// tests/fixtures/models/{stem}.onnx for `batch` on `kernels`, asserting that `convs` of its
/// convolutions run on our 8-bit kernels (none with tract's own lowering).
fn load_with_quant_convs(stem: &str, batch: usize, kernels: Kernels, convs: usize) -> Model {
    let m = load_with(&format!("{stem}.onnx"), batch, Precision::Auto, kernels);
    let ours = if kernels == Kernels::Tract { 0 } else { convs };
    assert_eq!(
        m.quant_convs,
        ours,
        "{stem} {}: {}",
        kernels.name(),
        m.kernels
    );
    m
}

/// What `--precision auto` computes an fp16 model in with these kernels: f16 only with
/// FEAT_FP16 and tract's own kernels (ours are f32).
fn auto_compute(kernels: Kernels) -> &'static str {
    if cpu_has_fp16() && kernels == Kernels::Tract {
        "f16"
    } else {
        "f32"
    }
}

#[test]
fn fp32_models_match_onnxruntime() {
    for file in [
        "tiny_unet.onnx",
        "tiny_unet_v.onnx",
        "tiny_unet_x0.onnx",
        "rgb16_tfloat_scalar.onnx",
        "rgb16_tfloat_n.onnx",
        "gray12_tint_1.onnx",
        "gray12_tint_b4.onnx",
        "sidecar.onnx",
        "attn_unet.onnx",
    ] {
        let r = Reference::load(file.trim_end_matches(".onnx"));
        let std = r.std();
        for kernels in kernel_choices() {
            let m = load_with(file, r.n, Precision::Auto, kernels);
            assert_eq!(m.compute, "f32", "{file}");
            let got = run_on(&m, &r);
            assert_within(
                "FP32",
                &format!("{file} {}", kernels.name()),
                &got,
                &r.want,
                std,
                FP32,
            );
        }
    }
}

#[test]
fn closed_form_denoiser_is_bit_identical_to_onnxruntime() {
    // gaussian_denoiser.onnx is eps = A[t]·x + B[t]: a Gather, a Mul and an Add per value,
    // the same IEEE operations in both engines (measured bit-identical with every kernel set,
    // x86 and qemu A72/A76).
    let r = Reference::load("gaussian_denoiser");
    for kernels in kernel_choices() {
        let m = load_with("gaussian_denoiser.onnx", r.n, Precision::Auto, kernels);
        let got = run_on(&m, &r);
        let case = format!("gaussian_denoiser.onnx {}", kernels.name());
        assert_bits("FP32", &case, &got, &r.want, r.std());
    }
}

#[test]
fn fp16_models_match_onnxruntime() {
    // onnxconverter-common (f32 IO, f16 inside), PyTorch model.half() (f16 IO, fp16 Gemm
    // rewritten to MatMul + Add before tract sees it), and the repository's FashionUNet after
    // model.half(). `--precision f32` computes them in f32 with every kernel set; `auto` does
    // too except with FEAT_FP16 and tract's kernels, where it computes in f16: that run is
    // checked against the f16 limits, and `auto` is not run again where it is the f32 plan.
    // (tract sees no FEAT_FP16 under qemu-user, A76 included: there, as on x86, every
    // kernel set's auto is the f32 plan; the f16 branch runs on FEAT_FP16 hardware.)
    for (file, stem) in [
        ("tiny_unet_fp16.onnx", "tiny_unet_fp16"),
        ("tiny_unet_fp16_half.onnx", "tiny_unet_fp16_half"),
        (
            "repo:models/fashion/fashion-fp16-half.onnx",
            "fashion_fp16_half",
        ),
    ] {
        let r = Reference::load(stem);
        let std = r.std();
        for kernels in kernel_choices() {
            let case = format!("{stem} {}", kernels.name());
            let f32_plan = load_with(file, r.n, Precision::F32, kernels);
            assert_eq!(f32_plan.compute, "f32", "{case}");
            let got = run_on(&f32_plan, &r);
            assert_within("FP16_AS_F32", &case, &got, &r.want, std, FP16_AS_F32);
            let auto = load_with(file, r.n, Precision::Auto, kernels);
            assert_eq!(auto.compute, auto_compute(kernels), "{case}: auto");
            if auto.compute == "f16" {
                let got = run_on(&auto, &r);
                assert_within("F16_COMPUTE", &case, &got, &r.want, std, F16_COMPUTE);
            } else {
                eprintln!(
                    "{case}: auto not run: it is the f32 plan here (FEAT_FP16 {}, kernels {})",
                    cpu_has_fp16(),
                    kernels.name()
                );
            }
        }
    }
}

#[test]
fn forced_f16_arithmetic_leaves_every_convolution_to_tract() {
    // `--precision f16` computes the float16 graph in f16 (tract's kernels; emulated without
    // FEAT_FP16): our f32 convolutions must stay out of it with every kernel set, the result
    // stays within f16 rounding of onnxruntime's, and it is not the f32 result.
    let file = "tiny_unet_fp16.onnx";
    let r = Reference::load("tiny_unet_fp16");
    let std = r.std();
    for kernels in kernel_choices() {
        let case = format!("tiny_unet_fp16 {}", kernels.name());
        let m = load_with(file, r.n, Precision::F16, kernels);
        assert_eq!(m.compute, "f16", "{case}");
        assert_eq!(
            (m.direct_convs, m.winograd_convs),
            (0, 0),
            "{case}: {}",
            m.kernels
        );
        let f16 = run_on(&m, &r);
        assert_within("F16_COMPUTE", &case, &f16, &r.want, std, F16_COMPUTE);
        let f32 = run_on(&load_with(file, r.n, Precision::F32, kernels), &r);
        let (max_gap, mean_gap, _) = scaled_diff(&f16, &f32, std);
        eprintln!("MEASURE F16_MIN_MEAN_GAP {case}: max {max_gap:.3e} mean {mean_gap:.3e}");
        assert!(
            mean_gap >= F16_MIN_MEAN_GAP,
            "{case}: mean |f16 − f32| / std {mean_gap} < {F16_MIN_MEAN_GAP}: f16 did not run"
        );
    }
}

#[test]
fn int8_models_match_onnxruntime() {
    // QDQ (value_info with a symbolic batch ignored): tract runs the dequantized graph in f32,
    // and the final QuantizeLinear → DequantizeLinear lands on onnxruntime's values exactly
    // (measured bit-identical with every kernel set, x86 and qemu A72/A76).
    let r = Reference::load("tiny_unet_int8_qdq");
    for kernels in kernel_choices() {
        let m = load_with("tiny_unet_int8_qdq.onnx", r.n, Precision::Auto, kernels);
        let got = run_on(&m, &r);
        assert_bits(
            "INT8_QDQ",
            &format!("tiny_unet_int8_qdq {}", kernels.name()),
            &got,
            &r.want,
            TINY_UNET_INT8_EPS_SCALE,
        );
    }
    // QOperator (com.microsoft QLinearAdd, QLinearConcat and QGemm rewritten to standard ops;
    // QLinearConv stays integer).
    let r = Reference::load("tiny_unet_int8_qop");
    for kernels in kernel_choices() {
        let m = load_with("tiny_unet_int8_qop.onnx", r.n, Precision::Auto, kernels);
        let got = run_on(&m, &r);
        assert_within(
            "INT8_QOP_STEPS",
            &format!("tiny_unet_int8_qop {}", kernels.name()),
            &got,
            &r.want,
            TINY_UNET_INT8_EPS_SCALE,
            INT8_QOP_STEPS,
        );
    }
}

/// tests/fixtures/models/digits_qdq_default.onnx (make_qdq_default.py): onnxruntime's QDQ
/// export of the bundled digit model with every default (Q/DQ pairs also around Add, Concat,
/// Pad, Reshape, Unsqueeze, Gemm and ConvTranspose outputs). It loads, its convolutions run on
/// our 8-bit kernels (39 of 39), and it lands within [`QDQ_DEFAULT_STEPS`] of onnxruntime's
/// optimized session, two images at t = 150 and 800; with our kernels it is bit-identical to
/// onnxruntime without graph optimizations (the ONNX definition, node by node).
#[test]
fn default_qdq_export_of_the_digit_model_loads_and_matches_onnxruntime() {
    let stem = "digits_qdq_default";
    let r = Reference::load(stem);
    let path = fixture(&format!("ort/{stem}_unoptimized_eps.npy"));
    let (_, unoptimized) = edge_sample::npy::read_f32(&path).unwrap();
    for kernels in kernel_choices() {
        let m = load_with_quant_convs(stem, r.n, kernels, 39);
        let got = run_on(&m, &r);
        assert_within(
            "QDQ_DEFAULT_STEPS",
            &format!("{stem} {}", kernels.name()),
            &got,
            &r.want,
            DIGITS_QDQ_DEFAULT_EPS_SCALE,
            QDQ_DEFAULT_STEPS,
        );
        let case = format!("{stem} {} vs onnxruntime unoptimized", kernels.name());
        if kernels == Kernels::Tract {
            let (want, scale) = (&unoptimized, DIGITS_QDQ_DEFAULT_EPS_SCALE);
            assert_within(
                "QDQ_DEFAULT_STEPS",
                &case,
                &got,
                want,
                scale,
                QDQ_DEFAULT_STEPS,
            );
        } else {
            // Every node as the ONNX definition says, integer sums exact: the same bits.
            let scale = DIGITS_QDQ_DEFAULT_EPS_SCALE;
            assert_bits("QDQ_DEFAULT", &case, &got, &unoptimized, scale);
        }
    }
}

#[test]
fn qoperator_rewrite_removes_every_contrib_op() {
    let m = load("models/tiny_unet_int8_qop.onnx", 1);
    let joined = m.rewrites.join("; ");
    for op in ["QLinearAdd", "QLinearConcat", "QGemm"] {
        assert!(joined.contains(op), "{op} not rewritten: {joined}");
    }
    let half = load("models/tiny_unet_fp16_half.onnx", 1);
    assert!(
        half.rewrites.iter().any(|r| r.contains("Gemm")),
        "{:?}",
        half.rewrites
    );
    // auto: f16 arithmetic only with FEAT_FP16 and tract's own convolutions (ours are f32).
    assert_eq!(half.compute, auto_compute(edge_sample::settings::kernels()));
}

/// tests/fixtures/models/qop_{op}.onnx (make_qop_ops.py): x → QuantizeLinear → the contrib op
/// → DequantizeLinear (+ a timestep term), whose output scale is `scale`: the rewrite must
/// have replaced the op, and every kernel set must give onnxruntime's own implementation's
/// output bit for bit (measured: 0 steps apart for all six ops, x86 tract/portable/AVX2/
/// AVX-512, qemu A72 and A76 tract/portable/NEON).
fn check_contrib_op(op: &str, scale: f32) {
    check_rewritten(
        &format!("qop_{op}"),
        &format!("1× {op} (com.microsoft) rewritten"),
        scale,
    );
}

/// tests/fixtures/models/{stem}.onnx against onnxruntime, bit for bit in every kernel set,
/// with `rewrite` the one rewrite applied.
fn check_rewritten(stem: &str, rewrite: &str, scale: f32) {
    let r = Reference::load(stem);
    for kernels in kernel_choices() {
        let m = load_with(&format!("{stem}.onnx"), r.n, Precision::Auto, kernels);
        assert_eq!(m.rewrites, vec![rewrite.to_string()], "{stem}");
        let got = run_on(&m, &r);
        assert_bits(
            "CONTRIB_OP",
            &format!("{stem} {}", kernels.name()),
            &got,
            &r.want,
            scale,
        );
    }
}

/// tests/fixtures/models/qconv_{case}.onnx (make_qconv.py): standard QLinearConv nodes, run by
/// our 8-bit kernels in every kernel set (tract's own integer convolution as well), against
/// onnxruntime's QLinearConv bit for bit: exact i32 sums, then onnxruntime's requantization
/// (f32 scale x_scale · w_scale / y_scale, clamp, round half to even). Measured: 0 steps
/// apart in all four cases, x86 tract/portable/AVX2/VNNI.
#[test]
fn qlinear_convs_run_on_our_int8_kernels_and_match_onnxruntime() {
    // (case, QLinearConv nodes, output scale of the last one: the unit of the differences)
    for (case, convs, scale) in [
        ("3x3_1x1_u8", 2, 0.03),
        ("3x3_s8_min_weight", 2, 0.03),
        ("2x2_stride2", 1, 0.04),
        ("3x3_stride2_pad1", 1, 0.06),
    ] {
        let stem = format!("qconv_{case}");
        let r = Reference::load(&stem);
        for kernels in kernel_choices() {
            let m = load_with_quant_convs(&stem, r.n, kernels, convs);
            let got = run_on(&m, &r);
            assert_bits(
                "QLINEAR_CONV",
                &format!("{stem} {} ({})", kernels.name(), m.kernels),
                &got,
                &r.want,
                scale,
            );
        }
    }
}

/// tests/fixtures/models/qdq_conv_{case}.onnx (make_qdq_conv.py): QDQ convolutions whose
/// output feeds float operations (a residual Add, Relu, Reshape), made `ConvInteger` → bias →
/// cast → scale by the loader and run by our 8-bit kernels storing f32. Two checks:
/// - against tract's own lowering of the same rewritten graph (its integer convolution, then
///   its Add, Cast and Mul): bit for bit, as the fused store does the same operations;
/// - against onnxruntime, which convolves the dequantized tensors in float:
///   [`QDQ_FLOAT_CONV`].
#[test]
fn qdq_convs_with_float_output_run_on_our_int8_kernels() {
    for (case, convs) in [
        ("residual_u8", 1),
        ("relu_s8_per_channel", 2),
        ("stride2_reshape", 1),
    ] {
        let stem = format!("qdq_conv_{case}");
        let r = Reference::load(&stem);
        let std = r.std();
        let tract = load_with(
            &format!("{stem}.onnx"),
            r.n,
            Precision::Auto,
            Kernels::Tract,
        );
        assert!(
            tract.rewrites.iter().any(|w| w.contains("float output")),
            "{stem}: {:?}",
            tract.rewrites
        );
        let tract_out = run_on(&tract, &r);
        for kernels in kernel_choices() {
            let m = load_with_quant_convs(&stem, r.n, kernels, convs);
            let got = run_on(&m, &r);
            let case = format!("{stem} {} ({})", kernels.name(), m.kernels);
            assert_within("QDQ_FLOAT_CONV", &case, &got, &r.want, std, QDQ_FLOAT_CONV);
            let same = got
                .iter()
                .zip(&tract_out)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{case}: not bit-identical to tract's ConvInteger → Add → Cast → Mul"
            );
        }
    }
}

/// QLinearMatMul of two activations, computed in f32 between DequantizeLinear and
/// QuantizeLinear (onnxruntime: exact integer sums, then requantized).
#[test]
fn qlinear_matmul_of_two_activations_is_rewritten_and_matches_onnxruntime() {
    check_rewritten(
        "qop_QLinearMatMul",
        "1× QLinearMatMul (two activations, the product in f32) rewritten",
        40.0 / 255.0,
    );
}

#[test]
fn qlinear_mul_is_rewritten_and_matches_onnxruntime() {
    check_contrib_op("QLinearMul", 12.0 / 255.0);
}

#[test]
fn qlinear_sigmoid_is_rewritten_and_matches_onnxruntime() {
    check_contrib_op("QLinearSigmoid", 1.0 / 255.0);
}

#[test]
fn qlinear_leaky_relu_is_rewritten_and_matches_onnxruntime() {
    check_contrib_op("QLinearLeakyRelu", 5.0 / 255.0);
}

#[test]
fn qlinear_average_pool_is_rewritten_and_matches_onnxruntime() {
    check_contrib_op("QLinearAveragePool", 3.0 / 255.0);
}

#[test]
fn qlinear_global_average_pool_is_rewritten_and_matches_onnxruntime() {
    check_contrib_op("QLinearGlobalAveragePool", 1.0 / 255.0);
}

#[test]
fn qlinear_softmax_is_rewritten_and_matches_onnxruntime() {
    check_contrib_op("QLinearSoftmax", 1.0 / 256.0);
}

/// The QDQ form of the same softmax (DequantizeLinear → Softmax → QuantizeLinear): tract
/// folded the chain into a lookup table that saturated every output; the Softmax now reads a
/// dequantization by hand (measured: 0 steps apart, as for the contrib op).
#[test]
fn qdq_softmax_is_rewritten_and_matches_onnxruntime() {
    check_rewritten(
        "qdq_Softmax",
        "1× Softmax after DequantizeLinear (QDQ) rewritten",
        1.0 / 256.0,
    );
}

#[test]
fn our_kernels_replace_every_convolution_of_the_seed_unet() {
    // tiny_unet has the seed's layout: 39 Conv nodes (29 3×3, 7 1×1 and 3 2×2 stride-2
    // downsamplers) and 3 2×2 stride-2 ConvTranspose upsamplers: all 42 run on our kernels.
    for kernels in Kernels::all_supported() {
        let m = load_with("tiny_unet.onnx", 1, Precision::Auto, kernels);
        assert_eq!(m.direct_convs, 42, "{kernels:?}: {}", m.kernels);
    }
    let tract = load_with("tiny_unet.onnx", 1, Precision::Auto, Kernels::Tract);
    assert_eq!(tract.direct_convs, 0);
    assert_eq!(tract.kernels, "tract");
}

#[test]
fn our_kernels_match_tracts_own_lowering_on_the_fashion_unet() {
    // FashionUNet adds its time embedding right after each ResBlock's first conv; tract folds
    // that Add into the conv's bias, which our kernel then takes as a run-time input.
    let file = "repo:models/fashion/fashion.onnx";
    let reference = load_with(file, 2, Precision::Auto, Kernels::Tract);
    let chw: usize = reference.io.image_shape.iter().product();
    let x: Vec<f32> = (0..2 * chw)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let mut want = vec![0f32; 2 * chw];
    reference
        .denoiser()
        .unwrap()
        .run(&x, 500, &mut want)
        .unwrap();
    let std = std_of(&want);
    for kernels in Kernels::all_supported() {
        let m = load_with(file, 2, Precision::Auto, kernels);
        // The file's 36 3×3 stride-1 convs, 23 1×1 convs, 2 3×3 stride-2 downsamplers and
        // 2 2×2 stride-2 ConvTranspose upsamplers.
        assert_eq!(m.direct_convs, 63, "{kernels:?}: {}", m.kernels);
        // Each of its 41 GroupNorms (reshape → InstanceNormalization → reshape → Mul → Add,
        // and the SiLU after it) is one node of ours.
        assert_eq!(m.group_norms, 41, "{kernels:?}: {}", m.kernels);
        let mut got = vec![0f32; 2 * chw];
        m.denoiser().unwrap().run(&x, 500, &mut got).unwrap();
        assert_within(
            "FASHION_OURS_VS_TRACT",
            &format!("fashion {}", kernels.name()),
            &got,
            &want,
            std,
            FASHION_OURS_VS_TRACT,
        );
    }
}

#[test]
fn winograd_convolutions_match_onnxruntime_and_a_team_gives_the_same_bits() {
    // Forced Winograd F(2×2) and F(4×4) (every 3×3 stride-1 layer; `auto` keeps it to layers
    // of ≥ 32 channels and ≥ 64 pixels, which these small fixtures do not have): the
    // diffusers-style and the seed-style UNet against onnxruntime's direct convolutions.
    for stem in ["attn_unet", "tiny_unet"] {
        let r = Reference::load(stem);
        // Image 0 only, at its own timestep.
        let std = std_of(&r.want[..r.chw]);
        let t = r.ts[0];
        let algorithms = [
            (ConvAlgorithm::WinogradF2, "WINOGRAD_F2", WINOGRAD_F2),
            (ConvAlgorithm::WinogradF4, "WINOGRAD_F4", WINOGRAD_F4),
        ];
        for (kernels, (conv, constant, limit)) in Kernels::all_supported()
            .into_iter()
            .flat_map(|k| algorithms.map(|a| (k, a)))
        {
            let m = Model::load(
                &ModelSource::Path(model_path(&format!("{stem}.onnx"))),
                &LoadOptions {
                    batch: r.n,
                    kernels,
                    conv,
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(
                m.winograd_convs > 0,
                "{stem} {kernels:?} {conv:?}: {}",
                m.kernels
            );
            let mut one = vec![0f32; r.n * r.chw];
            m.denoiser().unwrap().run(&r.x, t, &mut one).unwrap();
            let mut team = vec![1f32; r.n * r.chw];
            m.denoiser_with_threads(3)
                .unwrap()
                .run(&r.x, t, &mut team)
                .unwrap();
            assert!(
                one.iter()
                    .zip(&team)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{stem} {kernels:?} {conv:?}: 3 threads differ from 1"
            );
            eprintln!(
                "{stem} {kernels:?} {conv:?}: {} Winograd convolutions",
                m.winograd_convs
            );
            assert_within(
                constant,
                &format!("{stem} {}", kernels.name()),
                &one[..r.chw],
                &r.want[..r.chw],
                std,
                limit,
            );
        }
    }
}

#[test]
fn attention_products_run_on_our_tiles_and_a_team_gives_the_same_bits() {
    // attn_unet.onnx (diffusers UNet2DModel, 2-head attention at 8×8 in four blocks): each
    // block's Q, K, V and out projections, Q·Kᵀ and softmax·V, plus the time embedding's and
    // every ResNet's time projection, are matrix products.
    let r = Reference::load("attn_unet");
    let std = std_of(&r.want[..r.chw]);
    let t = r.ts[0];
    for kernels in Kernels::all_supported() {
        let m = load_with("attn_unet.onnx", r.n, Precision::Auto, kernels);
        assert_eq!(m.matmuls, ATTN_UNET_MATMULS, "{kernels:?}: {}", m.kernels);
        assert_eq!(
            m.group_norms, ATTN_UNET_GROUP_NORMS,
            "{kernels:?}: {}",
            m.kernels
        );
        let mut one = vec![0f32; r.n * r.chw];
        m.denoiser().unwrap().run(&r.x, t, &mut one).unwrap();
        // A team splits the layers big enough to pay (here the batch-2 convolutions at 16×16;
        // the kernel tests split every shape).
        let mut team = vec![1f32; r.n * r.chw];
        let mut den = m.denoiser_with_threads(3).unwrap();
        for _ in 0..3 {
            den.run(&r.x, t, &mut team).unwrap();
            assert!(
                one.iter()
                    .zip(&team)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kernels:?}: 3 threads differ from 1"
            );
        }
        // Image 0 was computed at its own timestep by onnxruntime.
        assert_within(
            "FP32",
            &format!("attn_unet image 0 {}", kernels.name()),
            &one[..r.chw],
            &r.want[..r.chw],
            std,
            FP32,
        );
    }
}
