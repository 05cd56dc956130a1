//! Process-wide engine settings read from the environment, for A/B runs and tests:
//! `EDGE_SAMPLE_KERNELS` (who runs the heavy layers) and `EDGE_SAMPLE_CONV` (the algorithm of
//! the 3×3 stride-1 convolutions). Read once; an unusable value is reported once on stderr and
//! replaced by `auto`.

use std::sync::OnceLock;

use crate::denoiser::{ConvAlgorithm, Isa, Kernels};

/// Valid `EDGE_SAMPLE_KERNELS` values.
pub const KERNEL_NAMES: &str = "auto, tract, portable, avx2, avx512, neon";
/// Valid `EDGE_SAMPLE_CONV` values.
pub const CONV_NAMES: &str = "auto, direct, winograd, winograd-f2, winograd-f4";

/// `EDGE_SAMPLE_KERNELS` as a choice: `Ok(None)` for `auto` (or unset), an error naming the
/// valid values for an unknown one, or one this CPU cannot run.
pub fn parse_kernels(value: &str) -> Result<Option<Kernels>, String> {
    let kernels = match value {
        "" | "auto" => return Ok(None),
        "tract" => Kernels::Tract,
        name => match Isa::from_name(name) {
            Some(isa) if isa.is_supported() => Kernels::Ours(isa),
            Some(_) => return Err(format!("{name}: this CPU cannot run them")),
            None => return Err(format!("{value:?} is not one of {KERNEL_NAMES}")),
        },
    };
    Ok(Some(kernels))
}

/// `EDGE_SAMPLE_CONV` as an algorithm (`auto` or unset: `Auto`).
pub fn parse_conv(value: &str) -> Result<ConvAlgorithm, String> {
    Ok(match value {
        "" | "auto" => ConvAlgorithm::Auto,
        "direct" => ConvAlgorithm::Direct,
        "winograd" => ConvAlgorithm::Winograd,
        "winograd-f2" => ConvAlgorithm::WinogradF2,
        "winograd-f4" => ConvAlgorithm::WinogradF4,
        _ => return Err(format!("{value:?} is not one of {CONV_NAMES}")),
    })
}

/// The kernels for this process: `EDGE_SAMPLE_KERNELS`, else our best for this CPU.
pub fn kernels() -> Kernels {
    static CHOICE: OnceLock<Kernels> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let var = std::env::var("EDGE_SAMPLE_KERNELS").unwrap_or_default();
        parse_kernels(&var)
            .unwrap_or_else(|e| {
                eprintln!("warning: EDGE_SAMPLE_KERNELS={e}; using auto");
                None
            })
            .unwrap_or_else(Kernels::best)
    })
}

/// The 3×3 convolution algorithm for this process: `EDGE_SAMPLE_CONV`, else `Auto`.
pub fn conv_algorithm() -> ConvAlgorithm {
    static CHOICE: OnceLock<ConvAlgorithm> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let var = std::env::var("EDGE_SAMPLE_CONV").unwrap_or_default();
        parse_conv(&var).unwrap_or_else(|e| {
            eprintln!("warning: EDGE_SAMPLE_CONV={e}; using auto");
            ConvAlgorithm::Auto
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_their_choices() {
        assert_eq!(parse_kernels("auto"), Ok(None));
        assert_eq!(parse_kernels(""), Ok(None));
        assert_eq!(parse_kernels("tract"), Ok(Some(Kernels::Tract)));
        assert_eq!(
            parse_kernels("portable"),
            Ok(Some(Kernels::Ours(Isa::Portable)))
        );
        assert!(parse_kernels("sse9").unwrap_err().contains(KERNEL_NAMES));
        for isa in Isa::ALL {
            assert_eq!(
                parse_kernels(isa.name()).is_ok(),
                isa.is_supported(),
                "{isa:?}"
            );
        }
        assert_eq!(parse_conv("winograd-f4"), Ok(ConvAlgorithm::WinogradF4));
        assert_eq!(parse_conv(""), Ok(ConvAlgorithm::Auto));
        assert!(parse_conv("fft").unwrap_err().contains(CONV_NAMES));
    }
}
