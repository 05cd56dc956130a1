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
