//! Helpers shared by the integration tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use edge_sample::denoiser::{LoadOptions, Model, ModelSource};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(rel: &str) -> PathBuf {
    fixtures().join(rel)
}

pub fn load(rel: &str, batch: usize) -> Model {
    Model::load(
        &ModelSource::Path(fixture(rel)),
        &LoadOptions {
            batch,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {rel}: {e}"))
}

/// Largest |a − b| and where it occurs (NaN counts as the largest).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut worst = (0.0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        if d.is_nan() {
            return (f32::NAN, i);
        }
        if d > worst.0 {
            worst = (d, i);
        }
    }
    worst
}

/// True when running under qemu (the CI's aarch64 leg): long cases are thinned there.
pub fn emulated() -> bool {
    std::env::var_os("EDGE_SAMPLE_EMULATED").is_some()
}

// The kernel crate's rule for starting a program from a test (directly, through
// `EDGE_SAMPLE_RUNNER`, or through qemu under `EDGE_SAMPLE_EMULATED` on aarch64).
#[path = "../../kernels/src/test_runner.rs"]
mod test_runner;

/// The binary, started as [`test_runner::command`] starts programs.
pub fn binary() -> std::process::Command {
    test_runner::command(std::path::Path::new(env!("CARGO_BIN_EXE_edge-sample")))
}

/// Runs the binary in `dir`, asserting it succeeded.
pub fn run_ok(dir: &Path, args: &[&str]) -> std::process::Output {
    let o = binary()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn edge-sample");
    assert!(
        o.status.success(),
        "edge-sample {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A PNG as (width, height, RGB bytes).
pub fn read_rgb(path: &Path) -> (usize, usize, Vec<u8>) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    (img.width() as usize, img.height() as usize, img.into_raw())
}

/// Runs the binary in `dir` (success or not).
pub fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    binary()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn edge-sample")
}

/// A failure: the exit code, one line on stderr naming the problem, no panic.
pub fn assert_fails(o: &std::process::Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
}
