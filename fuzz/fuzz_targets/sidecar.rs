//! The sidecar JSON parser and the settings it feeds, on arbitrary text.
#![no_main]
use std::collections::BTreeMap;

use edge_sample::denoiser::info::parse_sidecar;
use edge_sample::denoiser::ModelInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(settings) = parse_sidecar(std::path::Path::new("m.json"), text) {
        let _ = ModelInfo::resolve("m.onnx", "m", &BTreeMap::new(), &settings);
    }
});
