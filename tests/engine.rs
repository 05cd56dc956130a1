//! tract (through edge-sample's loader and rewrites) against onnxruntime on the same files:
//! tests/fixtures/make_models.py ran each model in onnxruntime (CPU, 1 thread) on inputs from
//! the noise stream and saved input, timesteps and output (tests/fixtures/ort/).
mod common;

use common::*;
use edge_sample::denoiser::{
    ConvAlgorithm, Denoiser, Kernels, LoadOptions, Model, ModelSource, Precision,
};

/// Matrix products of attn_unet.onnx that tract leaves as einsums after declutter (counted
/// from its graph: 4 attention blocks × 6, the time MLP's 3 (tract splits its first layer in
/// two) and the time projections of its 8 ResNet blocks).
const ATTN_UNET_MATMULS: usize = 4 * 6 + 3 + 8;

/// fp32 graphs: both engines compute in f32; differences are summation order (~1e-6).
const FP32_TOL: f32 = 1e-4;
/// fp16 weights computed in f32 by tract on CPUs without FEAT_FP16, vs onnxruntime's own
/// handling of the float16 graph: differences are f16 rounding of activations (measured on
/// x86: max 2.6e-3, mean 3.4e-4).
const FP16_TOL: f32 = 1e-2;
/// int8: QDQ graphs run as f32 on dequantized weights in tract but with integer kernels and
/// requantization in onnxruntime; a few quantization steps of the output (scale ≈ 0.03) apart
/// (measured on x86: QDQ identical, QOperator max 0.061, mean 0.013).
const INT8_MAX_TOL: f32 = 0.15;
/// f16 *arithmetic* (`--precision f16`: activations and sums in f16, 11-bit significands over
/// sums of up to 300 terms) vs onnxruntime's float16 graph (measured on x86: max 2.6e-2, mean
/// 4.5e-3 with tract's norms; 1.3e-2, 2.1e-3 with our fused norms' f32 statistics).
const F16_COMPUTE_MAX_TOL: f32 = 0.05;
const F16_COMPUTE_MEAN_TOL: f32 = 0.01;
const INT8_MEAN_TOL: f32 = 0.025;

struct Case {
    model: &'static str,
    max_tol: f32,
    mean_tol: f32,
}

fn read_t(path: &std::path::Path) -> Vec<f64> {
    match edge_sample::npy::read_i64(path) {
        Ok((_, v)) => v.into_iter().map(|t| t as f64).collect(),
        Err(_) => edge_sample::npy::read_f32(path)
            .unwrap()
            .1
            .into_iter()
            .map(|t| t as f64)
            .collect(),
    }
}

/// tract's own lowering, and every set of our convolution / layer-norm kernels this CPU runs
/// (portable, AVX2, AVX-512, NEON): each is checked against onnxruntime on its own.
fn kernel_choices() -> Vec<Kernels> {
    let mut k = vec![Kernels::Tract];
    k.extend(Kernels::all_supported());
    k
}

fn check(case: &Case, precision: Precision) {
    for kernels in kernel_choices() {
        check_with(case, precision, kernels);
    }
}

fn check_with(case: &Case, precision: Precision, kernels: Kernels) -> (f32, f32) {
    let stem = case.model.trim_end_matches(".onnx");
    let (xshape, x) = edge_sample::npy::read_f32(&fixture(&format!("ort/{stem}_x.npy"))).unwrap();
    let (_, want) = edge_sample::npy::read_f32(&fixture(&format!("ort/{stem}_eps.npy"))).unwrap();
    let ts = read_t(&fixture(&format!("ort/{stem}_t.npy")));
    let n = xshape[0];
    let chw: usize = xshape[1..].iter().product();
    let model = Model::load(
        &ModelSource::Path(fixture(&format!("models/{}", case.model))),
        &LoadOptions {
            batch: n,
            precision,
            kernels,
            ..Default::default()
        },
    )
    .unwrap();
    let mut den = model.denoiser().unwrap();
    assert_eq!(den.batch(), n, "{}: plan batch", case.model);
    // One timestep per call: run the whole batch at image i's t and keep image i (images of a
    // batch do not interact in these networks).
    let mut got = vec![0f32; n * chw];
    let mut out = vec![0f32; n * chw];
    for i in 0..n {
        let t = if ts.len() == n { ts[i] } else { ts[0] };
        den.run(&x, t as usize, &mut out).unwrap();
        got[i * chw..(i + 1) * chw].copy_from_slice(&out[i * chw..(i + 1) * chw]);
    }
    let (max, at) = max_abs_diff(&got, &want);
    let mean = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / got.len() as f32;
    eprintln!(
        "{} ({precision}, compute {}, kernels {}): max |tract − ort| {max:.2e}, mean {mean:.2e}",
        case.model, model.compute, model.kernels
    );
    assert!(
        max <= case.max_tol && mean <= case.mean_tol,
        "{} ({kernels:?}): max diff {max} at {at} (tract {}, ort {}), mean {mean}; tolerances {} / {}",
        case.model,
        got[at],
        want[at],
        case.max_tol,
        case.mean_tol
    );
    (max, mean)
}

#[test]
fn fp32_models_match_onnxruntime() {
    for model in [
        "tiny_unet.onnx",
        "tiny_unet_v.onnx",
        "gaussian_denoiser.onnx",
        "rgb16_tfloat_scalar.onnx",
        "rgb16_tfloat_n.onnx",
        "gray12_tint_1.onnx",
        "gray12_tint_b4.onnx",
        "sidecar.onnx",
        "attn_unet.onnx",
    ] {
        check(
            &Case {
                model,
                max_tol: FP32_TOL,
                mean_tol: FP32_TOL,
            },
            Precision::Auto,
        );
    }
}

#[test]
fn fp16_models_match_onnxruntime() {
    // onnxconverter-common (f32 IO, f16 inside) and PyTorch model.half() (f16 IO, fp16 Gemm
    // rewritten to MatMul + Add before tract sees it).
    for model in ["tiny_unet_fp16.onnx", "tiny_unet_fp16_half.onnx"] {
        for precision in [Precision::Auto, Precision::F32] {
            check(
                &Case {
                    model,
                    max_tol: FP16_TOL,
                    mean_tol: FP16_TOL / 10.0,
                },
                precision,
            );
        }
    }
}

#[test]
fn forced_f16_arithmetic_leaves_every_convolution_to_tract() {
    // `--precision f16` computes the float16 graph in f16 (tract's kernels; emulated without
    // FEAT_FP16): our f32 convolutions must stay out of it with every kernel set, and the
    // result stays within f16 rounding of onnxruntime's.
    for kernels in kernel_choices() {
        check_with(
            &Case {
                model: "tiny_unet_fp16.onnx",
                max_tol: F16_COMPUTE_MAX_TOL,
                mean_tol: F16_COMPUTE_MEAN_TOL,
            },
            Precision::F16,
            kernels,
        );
    }
}

#[test]
fn int8_models_match_onnxruntime() {
    // QDQ (value_info with a symbolic batch ignored) and QOperator (com.microsoft QLinearAdd,
    // QLinearConcat and QGemm rewritten to standard ops; QLinearConv stays integer).
    for model in ["tiny_unet_int8_qdq.onnx", "tiny_unet_int8_qop.onnx"] {
        check(
            &Case {
                model,
                max_tol: INT8_MAX_TOL,
                mean_tol: INT8_MEAN_TOL,
            },
            Precision::Auto,
        );
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
    let tract_f16 = edge_sample::denoiser::tract::cpu_has_fp16()
        && edge_sample::settings::kernels() == Kernels::Tract;
    assert_eq!(half.compute, if tract_f16 { "f16" } else { "f32" });
}

#[test]
fn our_kernels_replace_every_convolution_of_the_seed_unet() {
    // tiny_unet has the seed's layout: 39 Conv nodes (29 3×3, 7 1×1 and 3 2×2 stride-2
    // downsamplers) and 3 2×2 stride-2 ConvTranspose upsamplers: all 42 run on our kernels.
    for kernels in Kernels::all_supported() {
        let m = Model::load(
            &ModelSource::Path(fixture("models/tiny_unet.onnx")),
            &LoadOptions {
                kernels,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.direct_convs, 42, "{kernels:?}: {}", m.kernels);
    }
    let tract = Model::load(
        &ModelSource::Path(fixture("models/tiny_unet.onnx")),
        &LoadOptions {
            kernels: Kernels::Tract,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(tract.direct_convs, 0);
    assert_eq!(tract.kernels, "tract");
}

#[test]
fn our_kernels_match_tracts_own_lowering_on_the_fashion_unet() {
    // FashionUNet adds its time embedding right after each ResBlock's first conv; tract folds
    // that Add into the conv's bias, which our kernel then takes as a run-time input.
    let load = |kernels| {
        Model::load(
            &ModelSource::Path(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("models/fashion/fashion.onnx"),
            ),
            &LoadOptions {
                batch: 2,
                kernels,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let reference = load(Kernels::Tract);
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
    for kernels in Kernels::all_supported() {
        let m = load(kernels);
        // The file's 36 3×3 stride-1 convs, 23 1×1 convs, 2 3×3 stride-2 downsamplers and
        // 2 2×2 stride-2 ConvTranspose upsamplers.
        assert_eq!(m.direct_convs, 63, "{kernels:?}: {}", m.kernels);
        let mut got = vec![0f32; 2 * chw];
        m.denoiser().unwrap().run(&x, 500, &mut got).unwrap();
        let (max, at) = max_abs_diff(&got, &want);
        eprintln!("fashion, {kernels:?} vs tract: max |diff| {max:.2e}");
        assert!(
            max <= FP32_TOL,
            "{kernels:?}: {} vs tract {} at {at}",
            got[at],
            want[at]
        );
    }
}

#[test]
fn winograd_convolutions_match_onnxruntime_and_a_team_gives_the_same_bits() {
    // Forced Winograd F(2×2) and F(4×4) (every 3×3 stride-1 layer; `auto` keeps it to layers of ≥ 32 channels
    // and ≥ 64 pixels, which these small fixtures do not have): the diffusers-style and the
    // seed-style UNet against onnxruntime's direct convolutions.
    for stem in ["attn_unet", "tiny_unet"] {
        let (xshape, x) =
            edge_sample::npy::read_f32(&fixture(&format!("ort/{stem}_x.npy"))).unwrap();
        let (_, want) =
            edge_sample::npy::read_f32(&fixture(&format!("ort/{stem}_eps.npy"))).unwrap();
        let t = read_t(&fixture(&format!("ort/{stem}_t.npy")))[0] as usize;
        let n = xshape[0];
        let chw: usize = xshape[1..].iter().product();
        let algorithms = [ConvAlgorithm::WinogradF2, ConvAlgorithm::WinogradF4];
        for (kernels, conv) in Kernels::all_supported()
            .into_iter()
            .flat_map(|k| algorithms.map(|a| (k, a)))
        {
            let m = Model::load(
                &ModelSource::Path(fixture(&format!("models/{stem}.onnx"))),
                &LoadOptions {
                    batch: n,
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
            let mut one = vec![0f32; n * chw];
            m.denoiser().unwrap().run(&x, t, &mut one).unwrap();
            let mut team = vec![1f32; n * chw];
            m.denoiser_with_threads(3)
                .unwrap()
                .run(&x, t, &mut team)
                .unwrap();
            assert!(
                one.iter()
                    .zip(&team)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{stem} {kernels:?} {conv:?}: 3 threads differ from 1"
            );
            let (max, at) = max_abs_diff(&one[..chw], &want[..chw]);
            eprintln!(
                "{stem} {kernels:?} {conv:?}: {} Winograd convolutions, max |diff| vs onnxruntime {max:.2e}",
                m.winograd_convs
            );
            assert!(
                max <= FP32_TOL,
                "{stem} {kernels:?} {conv:?}: {} vs onnxruntime {} at {at}",
                one[at],
                want[at]
            );
        }
    }
}

#[test]
fn attention_products_run_on_our_tiles_and_a_team_gives_the_same_bits() {
    // attn_unet.onnx (diffusers UNet2DModel, 2-head attention at 8×8 in four blocks): each
    // block's Q, K, V and out projections, Q·Kᵀ and softmax·V, plus the time embedding's and
    // every ResNet's time projection, are matrix products.
    let stem = "attn_unet";
    let (xshape, x) = edge_sample::npy::read_f32(&fixture(&format!("ort/{stem}_x.npy"))).unwrap();
    let (_, want) = edge_sample::npy::read_f32(&fixture(&format!("ort/{stem}_eps.npy"))).unwrap();
    let t = read_t(&fixture(&format!("ort/{stem}_t.npy")))[0] as usize;
    let n = xshape[0];
    let chw: usize = xshape[1..].iter().product();
    for kernels in Kernels::all_supported() {
        let m = Model::load(
            &ModelSource::Path(fixture("models/attn_unet.onnx")),
            &LoadOptions {
                batch: n,
                kernels,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.matmuls, ATTN_UNET_MATMULS, "{kernels:?}: {}", m.kernels);
        let mut one = vec![0f32; n * chw];
        m.denoiser().unwrap().run(&x, t, &mut one).unwrap();
        // A team splits the layers big enough to pay (here the batch-2 convolutions at 16×16;
        // the kernel tests split every shape).
        let mut team = vec![1f32; n * chw];
        let mut den = m.denoiser_with_threads(3).unwrap();
        for _ in 0..3 {
            den.run(&x, t, &mut team).unwrap();
            assert!(
                one.iter()
                    .zip(&team)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kernels:?}: 3 threads differ from 1"
            );
        }
        // Image 0 was computed at its own timestep by onnxruntime.
        let (max, at) = max_abs_diff(&one[..chw], &want[..chw]);
        assert!(
            max <= FP32_TOL,
            "{kernels:?}: {} vs onnxruntime {} at {at}",
            one[at],
            want[at]
        );
    }
}
