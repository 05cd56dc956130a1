//! Models compiled into the binary, so that the lone binary works on a board.
use crate::denoiser::ModelSource;
use crate::error::{Error, Result};

/// A bundled model.
pub struct Bundled {
    pub name: &'static str,
    pub description: &'static str,
    /// The file's precision.
    pub precision: &'static str,
    /// Measured sample quality (models/README.md): classifier confidence / class entropy / FD of
    /// 256 samples at the default 20 DPM-Solver++ steps, and real held-out data's confidence.
    pub quality: &'static str,
    pub bytes: &'static [u8],
}

/// The default model comes first.
pub static BUNDLED: &[Bundled] = &[
    Bundled {
        name: "digits",
        description: "MNIST digits, the seed tutorial's UNet (1×28×28), DDPM ε-prediction",
        precision: "fp32",
        quality: "confidence 0.938, entropy 0.988, FD 14.2 (real digits: 0.980, 0.998, 4.4)",
        bytes: include_bytes!("../models/digits/digits.onnx"),
    },
    Bundled {
        name: "fashion",
        description:
            "Fashion-MNIST clothes, GroupNorm UNet with 7×7 attention (1×28×28), DDPM ε-prediction",
        precision: "fp16 weights, f32 arithmetic (f16 with --precision f16)",
        quality: "confidence 0.801, entropy 0.957, FD 38.3 (real clothes: 0.882, 0.999, 3.7)",
        bytes: include_bytes!("../models/fashion/fashion-fp16.onnx"),
    },
];

pub fn names() -> String {
    BUNDLED
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--model` → a source: an existing file, else a bundled model's name.
pub fn resolve(spec: Option<&str>) -> Result<ModelSource> {
    let Some(spec) = spec else {
        let b = &BUNDLED[0];
        return Ok(ModelSource::Embedded {
            name: b.name,
            bytes: b.bytes,
        });
    };
    let path = std::path::Path::new(spec);
    if path.exists() {
        return Ok(ModelSource::Path(path.to_path_buf()));
    }
    if let Some(b) = BUNDLED.iter().find(|b| b.name == spec) {
        return Ok(ModelSource::Embedded {
            name: b.name,
            bytes: b.bytes,
        });
    }
    Err(Error::input(format!(
        "model '{spec}' is neither a file nor a bundled model (bundled: {})",
        names()
    )))
}

#[cfg(test)]
mod tests {
    use super::BUNDLED;

    /// The real data's scores each card quotes are those models/eval measured (real-stats-*.json).
    #[test]
    fn quality_lines_quote_the_measured_real_data() {
        for b in BUNDLED {
            let path = format!(
                "{}/models/eval/real-stats-{}.json",
                env!("CARGO_MANIFEST_DIR"),
                b.name
            );
            let stats: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let real = format!(
                ": {:.3}, {:.3}, ",
                stats["real_confidence"].as_f64().unwrap(),
                stats["real_entropy"].as_f64().unwrap()
            );
            assert!(
                b.quality.contains(&real),
                "{}: {} lacks {real}",
                b.name,
                b.quality
            );
        }
    }
}
