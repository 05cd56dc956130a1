//! The model loader with every check and rewrite, on arbitrary bytes as an ONNX file: it may
//! refuse, it must not panic, hang or allocate without bound.
#![no_main]
use edge_sample::denoiser::{Denoiser, LoadOptions, Model, ModelSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, data).unwrap();
    if let Ok(m) = Model::load(&ModelSource::Path(path), &LoadOptions::default()) {
        // A model that loads must also run one step on a zero image.
        let n: usize = m.io.image_shape.iter().product::<usize>() * m.batch;
        if let Ok(mut den) = m.denoiser() {
            let x = vec![0f32; n];
            let mut out = vec![0f32; n];
            let _ = den.run(&x, 1, &mut out);
        }
    }
});
