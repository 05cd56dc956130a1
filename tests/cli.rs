//! The real binary on real files: the main job, its outputs, and every bad input.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{assert_fails, fixture};

fn command() -> Command {
    common::binary()
}

fn run(dir: &Path, args: &[&str]) -> Output {
    command()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn edge-sample")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fx(rel: &str) -> String {
    fixture(rel).display().to_string()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn no_arguments_writes_a_grid_of_the_default_model() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let png = dir.path().join("edge-sample.png");
    // 16 images of 28×28 on a 4×4 grid with 2-pixel gaps: 122 pixels, upscaled by the
    // smallest integer that makes it at least 480 wide (4: 488), pixel for pixel the
    // `--scale 1` sheet's.
    let (w, h, big) = common::read_rgb(&png);
    assert_eq!((w, h), (4 * 122, 4 * 122));
    let o = run(dir.path(), &["--quiet", "--scale", "1", "-o", "raw.png"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (rw, rh, raw) = common::read_rgb(&dir.path().join("raw.png"));
    std::fs::remove_file(dir.path().join("raw.png")).unwrap();
    assert_eq!((rw, rh), (122, 122));
    for y in 0..h {
        for x in 0..w {
            let (b, r) = (3 * (y * w + x), 3 * ((y / 4) * rw + x / 4));
            assert_eq!(big[b..b + 3], raw[r..r + 3], "pixel ({x}, {y})");
        }
    }
    let bytes = std::fs::read(&png).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("parameters"), "no parameters chunk");
    assert!(
        text.contains("sampler: dpmpp-2m, steps: 20, seed: 42"),
        "parameters chunk content"
    );
    assert_eq!(
        files_in(dir.path()),
        vec!["edge-sample.png"],
        "temporary files left behind"
    );
}

#[test]
fn same_seed_same_images_other_seed_other_images() {
    let dir = tempfile::tempdir().unwrap();
    let m = fx("models/tiny_unet.onnx");
    for (name, seed) in [("a.npy", "5"), ("b.npy", "5"), ("c.npy", "6")] {
        let o = run(
            dir.path(),
            &[
                "-q",
                "-m",
                &m,
                "--seed",
                seed,
                "-n",
                "3",
                "--steps",
                "5",
                "--save-npy",
                name,
                "-o",
                "g.png",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let read = |n: &str| edge_sample::npy::read_f32(&dir.path().join(n)).unwrap();
    let (shape, a) = read("a.npy");
    assert_eq!(shape, vec![3, 1, 28, 28]);
    assert_eq!(a, read("b.npy").1);
    assert_ne!(a, read("c.npy").1);
    // Image i does not depend on how many images were asked for, nor on the thread count.
    let o = run(
        dir.path(),
        &[
            "-q",
            "-m",
            &m,
            "--seed",
            "5",
            "-n",
            "1",
            "--steps",
            "5",
            "-j",
            "1",
            "--save-npy",
            "d.npy",
            "-o",
            "g.png",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read("d.npy").1, a[..784].to_vec());
}

#[test]
fn init_noise_file_reproduces_the_seeded_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut x = vec![0f32; 2 * 784];
    for i in 0..2 {
        edge_sample::noise::NoiseStream::new(9, i as u64).fill(&mut x[i * 784..(i + 1) * 784]);
    }
    edge_sample::npy::write_f32(&dir.path().join("xT.npy"), &[2, 1, 28, 28], &x).unwrap();
    let m = fx("models/tiny_unet.onnx");
    let common = ["-q", "-m", &m, "-n", "2", "--steps", "4", "-o", "g.png"];
    let o = run(
        dir.path(),
        &[&common[..], &["--seed", "9", "--save-npy", "a.npy"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        dir.path(),
        &[
            &common[..],
            &[
                "--seed",
                "1",
                "--init-noise",
                "xT.npy",
                "--save-npy",
                "b.npy",
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let a = edge_sample::npy::read_f32(&dir.path().join("a.npy")).unwrap();
    let b = edge_sample::npy::read_f32(&dir.path().join("b.npy")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn out_dir_writes_one_png_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        dir.path(),
        &[
            "-q",
            "-m",
            &fx("models/tiny_unet.onnx"),
            "-n",
            "3",
            "--steps",
            "2",
            "--out-dir",
            "imgs",
            "--scale",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        files_in(&dir.path().join("imgs")),
        vec!["0000.png", "0001.png", "0002.png"]
    );
    let img = image::open(dir.path().join("imgs/0001.png")).unwrap();
    assert_eq!((img.width(), img.height()), (56, 56));
    assert!(!dir.path().join("edge-sample.png").exists());
}

/// `--precision f16` where the CPU has no FP16 arithmetic runs tract's f16 kernels emulated
/// (hundreds of times slower on x86): one warning line says so before the run, even with -q;
/// on an FP16 CPU, and with f32, none.
#[test]
fn f16_without_fp16_arithmetic_warns_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = fx("models/tiny_unet.onnx");
    let warned = |precision: &str| {
        let o = run(
            dir.path(),
            &[
                "-q",
                "-m",
                &tiny,
                "--precision",
                precision,
                "-n",
                "1",
                "--steps",
                "1",
                "-o",
                "p.png",
            ],
        );
        assert!(o.status.success(), "{precision}: {}", stderr(&o));
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
        assert!(lines.len() <= 1, "{precision}: {err}");
        lines.first().map(|l| l.to_string())
    };
    let f16 = warned("f16");
    if edge_sample::denoiser::tract::cpu_has_fp16() {
        assert_eq!(f16, None);
    } else {
        let line = f16.expect("no warning for emulated f16");
        assert!(
            line.contains("no FP16 arithmetic")
                && line.contains("emulated")
                && line.contains("--precision auto"),
            "{line}"
        );
    }
    assert_eq!(warned("f32"), None);
}

/// The names of the environment variables the program's source reads (`var("…")`,
/// `var_os("…")` anywhere under src/).
fn environment_read_by_src() -> Vec<String> {
    fn walk(dir: &Path, names: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for pat in ["var(\"", "var_os(\""] {
                    for (at, _) in text.match_indices(pat) {
                        let rest = &text[at + pat.len()..];
                        let name = &rest[..rest.find('"').unwrap()];
                        if !name.is_empty() && !names.iter().any(|n| n == name) {
                            names.push(name.to_string());
                        }
                    }
                }
            }
        }
    }
    let mut names = vec![];
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut names,
    );
    names
}

#[test]
fn help_lists_the_environment_and_a_missing_argument_shows_usage() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    let env = &help[help
        .find("\nEnvironment:\n")
        .expect("an Environment section")..];
    let names = environment_read_by_src();
    assert!(names.len() >= 5, "found only {names:?}");
    for name in names {
        assert!(
            env.contains(&format!("{name}=")),
            "--help does not explain {name}"
        );
    }
    // clap's whole message: which argument, and the usage line (not just its first line).
    let o = run(dir.path(), &["info"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("<MODEL>") && err.contains("Usage: edge-sample info <MODEL>"),
        "{err}"
    );
}

#[test]
fn summary_line_reports_timing() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        dir.path(),
        &[
            "-m",
            &fx("models/tiny_unet.onnx"),
            "-n",
            "2",
            "--steps",
            "3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("2 images, 3 steps in")
            && out.contains("ms per network call")
            && out.contains("images/s"),
        "{out}"
    );
}

/// One variant run's samples (--save-npy) and picture (-o), checked for shape and content:
/// the grid PNG of 3 images (2×2 cells of `side` px with 2-px gaps) in the model's channels,
/// finite samples, each image far from constant, no two images alike (mean |Δ| > 0.25: a third
/// of the least measured, sidecar's 0.87; tiny UNet 3.7, rgb16 ≈ 200).
fn variant_run(dir: &Path, model: &str, chw: [usize; 3], min_levels: usize) -> Vec<f32> {
    let stem = Path::new(model)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (npy, png) = (format!("{stem}.npy"), format!("{stem}.png"));
    let o = run(
        dir,
        &[
            "-q",
            "-m",
            &fx(model),
            "-n",
            "3",
            "--steps",
            "3",
            "--seed",
            "21",
            "-o",
            &png,
            "--scale",
            "1",
            "--save-npy",
            &npy,
        ],
    );
    assert!(o.status.success(), "{model}: {}", stderr(&o));
    let [c, h, w] = chw;
    let (shape, x) = edge_sample::npy::read_f32(&dir.join(&npy)).unwrap();
    assert_eq!(shape, vec![3, c, h, w], "{model}: samples' shape");
    assert!(
        x.iter().all(|v| v.is_finite()),
        "{model}: non-finite samples"
    );
    let img = image::open(dir.join(&png)).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (2 * w as u32 + 6, 2 * h as u32 + 6),
        "{model}: grid size"
    );
    assert_eq!(
        img.color().channel_count() as usize,
        if c == 3 { 3 } else { 1 },
        "{model}: PNG channels"
    );
    let raw = img.to_rgb8();
    for k in 0..3 {
        let (x0, y0) = (2 + (k % 2) * (w + 2), 2 + (k / 2) * (h + 2));
        let levels: std::collections::BTreeSet<[u8; 3]> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| raw.get_pixel((x0 + x) as u32, (y0 + y) as u32).0)
            .collect();
        assert!(
            levels.len() >= min_levels,
            "{model}: image {k} has {} distinct colours (constant or nearly)",
            levels.len()
        );
    }
    let n = c * h * w;
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let mean_diff = x[a * n..(a + 1) * n]
            .iter()
            .zip(&x[b * n..(b + 1) * n])
            .map(|(p, q)| (p - q).abs() as f64)
            .sum::<f64>()
            / n as f64;
        assert!(
            mean_diff > 0.25,
            "{model}: images {a} and {b} alike (mean |Δ| {mean_diff})"
        );
    }
    x
}

/// The tiny UNet's precision variants against its fp32 model on the same seed and start:
/// img2img from tests/fixtures/init_digit.png at strength 0.2 (10 steps → 2 dpmpp-2m steps
/// from t ≈ 200, 3 images). Plain sampling is no yardstick here: the lightly trained tiny UNet's
/// samples reach ±70 (std 5), and sampling from pure noise amplifies the int8 models' ε error
/// (≤ 0.06) by up to √(1−ᾱ)/√ᾱ ≈ 156 at t = 999 (measured max |Δ| 76 at 3 steps).
/// (model, max |Δ| limit, mean |Δ| limit); measured max / mean |Δ|, identical on x86 avx512,
/// avx2 and portable kernels, and under qemu (neon, Cortex-A72) the same to 3 digits:
/// fp16 and fp16-half 9.77e-4 / 2.36e-4 (qemu 9.76e-4 / 2.35e-4); int8 QDQ 1.72e-1 / 3.03e-2;
/// int8 QOperator 1.05e-1 / 1.82e-2. Images of one run differ from each other by a mean |Δ| of
/// 0.13. Limits ≈ 3× (ratios 3.1 / 3.0, 2.9 / 3.0, 2.8 / 3.0).
const VARIANT_LIMITS: [(&str, f32, f64); 4] = [
    ("models/tiny_unet_fp16.onnx", 3e-3, 7e-4),
    ("models/tiny_unet_fp16_half.onnx", 3e-3, 7e-4),
    ("models/tiny_unet_int8_qdq.onnx", 0.5, 0.09),
    ("models/tiny_unet_int8_qop.onnx", 0.3, 0.055),
];

/// img2img samples of `model` (see VARIANT_LIMITS).
fn img2img(dir: &Path, model: &str) -> Vec<f32> {
    let npy = format!(
        "i2i-{}.npy",
        Path::new(model).file_stem().unwrap().to_string_lossy()
    );
    let o = run(
        dir,
        &[
            "-q",
            "-m",
            &fx(model),
            "-n",
            "3",
            "--steps",
            "10",
            "--seed",
            "21",
            "--init-image",
            &fx("init_digit.png"),
            "--strength",
            "0.2",
            "-o",
            "i2i.png",
            "--save-npy",
            &npy,
        ],
    );
    assert!(o.status.success(), "{model}: {}", stderr(&o));
    let (shape, x) = edge_sample::npy::read_f32(&dir.join(&npy)).unwrap();
    assert_eq!(shape, vec![3, 1, 28, 28]);
    x
}

#[test]
fn every_model_variant_samples() {
    let dir = tempfile::tempdir().unwrap();
    // Every variant samples from noise: the picture's size and channels, finite samples,
    // images far from constant and unlike each other.
    // (model, C×H×W, fewest distinct colours in any of its 3 images): a third of the measured
    // fewest (tiny UNet variants 98..134, sidecar 129; the untrained random-weight input
    // variants saturate, values up to ±900: rgb16 9, gray12 2, i.e. "not constant").
    for (m, chw, min_levels) in [
        ("models/tiny_unet.onnx", [1, 28, 28], 32),
        ("models/tiny_unet_fp16.onnx", [1, 28, 28], 32),
        ("models/tiny_unet_fp16_half.onnx", [1, 28, 28], 32),
        ("models/tiny_unet_int8_qdq.onnx", [1, 28, 28], 32),
        ("models/tiny_unet_int8_qop.onnx", [1, 28, 28], 32),
        ("models/rgb16_tfloat_scalar.onnx", [3, 16, 16], 3),
        ("models/rgb16_tfloat_n.onnx", [3, 16, 16], 3),
        ("models/gray12_tint_1.onnx", [1, 12, 12], 2),
        ("models/sidecar.onnx", [1, 16, 16], 43),
    ] {
        variant_run(dir.path(), m, chw, min_levels);
    }
    // The precision variants stay close to fp32 where the comparison can tell.
    let fp32 = img2img(dir.path(), "models/tiny_unet.onnx");
    let mut failures = vec![];
    for (m, max_limit, mean_limit) in VARIANT_LIMITS {
        let x = img2img(dir.path(), m);
        let max = x
            .iter()
            .zip(&fp32)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let mean = x
            .iter()
            .zip(&fp32)
            .map(|(a, b)| (a - b).abs() as f64)
            .sum::<f64>()
            / x.len() as f64;
        eprintln!("{m}: vs fp32 max |Δ| {max:.3e}, mean |Δ| {mean:.3e}");
        if max > max_limit || mean > mean_limit {
            failures.push(format!(
                "{m}: max |Δ| {max} (limit {max_limit}), mean |Δ| {mean} (limit {mean_limit})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// tract 0.23.9's AMX int8 kernel read past its packed operand and crashed (SIGSEGV) on this
/// model with one image on one thread, on CPUs with AMX (the loader now turns AMX off).
#[test]
fn int8_qoperator_model_samples_one_image_on_one_thread() {
    let dir = tempfile::tempdir().unwrap();
    for threads in ["1", "2"] {
        let m = fx("models/tiny_unet_int8_qop.onnx");
        let args = [
            "-q", "-m", &m, "-n", "1", "-j", threads, "--steps", "3", "-o", "g.png",
        ];
        let o = run(dir.path(), &args);
        assert!(
            o.status.success(),
            "-j {threads}: {:?} {}",
            o.status,
            stderr(&o)
        );
    }
}

#[test]
fn info_reports_what_was_detected() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["info", &fx("models/tiny_unet.onnx")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "tiny-unet",
        "int64",
        "int64 [N,1]",
        "epsilon",
        "linear T=1000",
        "[metadata]",
        "loading took",
    ] {
        assert!(out.contains(needle), "'{needle}' missing in:\n{out}");
    }
    let o = run(dir.path(), &["info", &fx("models/sidecar.onnx")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("sidecar-test") && out.contains("[sidecar]") && out.contains("v_prediction"),
        "{out}"
    );
    let o = run(dir.path(), &["info", &fx("models/tiny_unet_int8_qop.onnx")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("QOperator") && out.contains("rewritten"),
        "{out}{}",
        stderr(&o)
    );
}

#[test]
fn bench_prints_latency_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        dir.path(),
        &[
            "bench",
            "-m",
            &fx("models/tiny_unet.onnx"),
            "-n",
            "2",
            "--steps",
            "2",
            "--runs",
            "1",
            "--profile",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("median") && out.contains("images/s") && out.contains("peak memory"),
        "{out}"
    );
    // The profile names the model's own nodes and its shares add up to the whole call.
    assert!(
        out.contains("by operator:") && out.contains("costliest nodes:"),
        "{out}"
    );
    assert!(out.contains("Conv"), "node names from the model: {out}");
    let share: f64 = out
        .lines()
        .skip_while(|l| !l.contains("by operator:"))
        .skip(1)
        .take_while(|l| !l.contains("costliest"))
        .filter_map(|l| {
            l.trim_end()
                .strip_suffix('%')?
                .split_whitespace()
                .last()?
                .parse::<f64>()
                .ok()
        })
        .sum();
    assert!(
        (share - 100.0).abs() < 0.5,
        "operator shares sum to {share} %: {out}"
    );
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tiny = fx("models/tiny_unet.onnx");
    std::fs::write(d.join("noise.txt"), "not numpy").unwrap();
    edge_sample::npy::write_f32(&d.join("wrong.npy"), &[1, 1, 8, 8], &[0.0; 64]).unwrap();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec!["-m".into(), "missing.onnx".into()],
            2,
            "neither a file nor a bundled model",
        ),
        (
            vec!["-m".into(), fx("models/truncated.onnx")],
            2,
            "not a valid ONNX",
        ),
        (
            vec!["-m".into(), fx("models/not_onnx.onnx")],
            2,
            "not a valid ONNX",
        ),
        (
            vec!["-m".into(), fx("models/not_denoiser.onnx")],
            2,
            "not a denoiser",
        ),
        (
            vec!["-m".into(), fx("models/wrong_output.onnx")],
            2,
            "not a denoiser",
        ),
        (
            vec!["-m".into(), fx("models/nan_output.onnx")],
            1,
            "not finite",
        ),
        (vec!["--steps".into(), "0".into()], 2, "--steps"),
        (
            vec!["--steps".into(), "1001".into()],
            2,
            "1000 training timesteps",
        ),
        (
            vec!["--sampler".into(), "lms".into()],
            2,
            "ddpm, ddim, euler, euler-a, heun, dpmpp-2m, dpmpp-3m",
        ),
        (
            vec!["--sigmas".into(), "karras".into(), "-s".into(), "ddim".into()],
            2,
            "--sigmas karras does not apply to ddim (samplers that take it: euler, heun, dpmpp-2m, dpmpp-3m)",
        ),
        (
            vec!["--sigmas".into(), "beta".into()],
            2,
            "default, karras, exponential",
        ),
        (vec!["--num".into(), "0".into()], 2, "--num"),
        (vec!["--eta".into(), "-0.5".into()], 2, "--eta must be >= 0"),
        (
            vec!["--spacing".into(), "odd".into()],
            2,
            "leading, trailing, linspace",
        ),
        (
            vec![
                "-m".into(),
                tiny.clone(),
                "--init-noise".into(),
                "noise.txt".into(),
            ],
            2,
            "noise.txt",
        ),
        (
            vec![
                "-m".into(),
                tiny.clone(),
                "--init-noise".into(),
                "wrong.npy".into(),
            ],
            2,
            "expected [16, 1, 28, 28]",
        ),
        (
            vec![
                "-m".into(),
                tiny.clone(),
                "--init-noise".into(),
                "absent.npy".into(),
            ],
            2,
            "absent.npy",
        ),
        (
            vec![
                "-m".into(),
                tiny.clone(),
                "--init-image".into(),
                "absent.png".into(),
            ],
            2,
            "absent.png",
        ),
        (
            vec![
                "-m".into(),
                tiny.clone(),
                "--init-image".into(),
                fx("init_digit.png"),
                "--strength".into(),
                "0".into(),
            ],
            2,
            "--strength",
        ),
        (
            vec!["-o".into(), "/nonexistent-dir/x.png".into()],
            2,
            "cannot write /nonexistent-dir/x.png",
        ),
        (
            vec!["--save-npy".into(), "/nonexistent-dir/x.npy".into()],
            2,
            "cannot write",
        ),
        (
            vec!["-m".into(), tiny.clone(), "--precision".into(), "f8".into()],
            2,
            "auto, f32, f16",
        ),
    ];
    for (args, code, needle) in cases {
        let mut full: Vec<String> = vec!["-q".into()];
        full.extend(args.iter().cloned());
        if !args.iter().any(|a| a == "-o") {
            full.extend(["-o".to_string(), "out.png".to_string()]);
        }
        let refs: Vec<&str> = full.iter().map(|s| s.as_str()).collect();
        let o = run(d, &refs);
        assert_fails(&o, code, needle);
        assert!(!d.join("out.png").exists(), "{args:?} left an output file");
        let leftovers: Vec<String> = files_in(d)
            .into_iter()
            .filter(|f| f.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{args:?} left {leftovers:?}");
    }
}
