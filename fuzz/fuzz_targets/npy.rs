//! The .npy reader on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    std::fs::write(&path, data).unwrap();
    let _ = edge_sample::npy::read_f32(&path);
    let _ = edge_sample::npy::read_f32_shaped(&path, &[1, 1, 28, 28], "fuzz");
    let _ = edge_sample::npy::read_i64(&path);
});
