//! Process-wide engine settings read from the environment, for A/B runs and tests:
//! `EDGE_SAMPLE_KERNELS` (who runs the heavy layers), `EDGE_SAMPLE_CONV` (the algorithm of
//! the 3×3 stride-1 convolutions) and `EDGE_SAMPLE_LOAD_MEMORY_MB` (the heap a model's load
//! may take). Read once; an unusable value is reported once on stderr and
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

/// The heap a model's load may take by default: this much, plus [`LOAD_MEMORY_PER_BYTE`] times
/// the file's size. Measured: the bundled models need 6–17 MiB (3.6× the file for fp32, 8× for
/// the int8 QOperator file); a file under 1 MB stays under 256 MB of memory in all.
pub const LOAD_MEMORY_BASE: usize = 192 << 20;
pub const LOAD_MEMORY_PER_BYTE: usize = 8;

/// `EDGE_SAMPLE_LOAD_MEMORY_MB` as bytes (`None`: unset; an error for anything but a positive
/// whole number).
pub fn parse_load_memory(value: &str) -> Result<Option<usize>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<usize>() {
        Ok(mb) if mb > 0 => Ok(Some(mb.saturating_mul(1 << 20))),
        _ => Err(format!("{value:?} is not a positive number of MiB")),
    }
}

/// The heap a model file of `file_bytes` may take while it loads: `EDGE_SAMPLE_LOAD_MEMORY_MB`
/// if set, else [`LOAD_MEMORY_BASE`] + [`LOAD_MEMORY_PER_BYTE`] × `file_bytes`.
pub fn load_memory(file_bytes: usize) -> usize {
    static CHOICE: OnceLock<Option<usize>> = OnceLock::new();
    let set = *CHOICE.get_or_init(|| {
        let var = std::env::var("EDGE_SAMPLE_LOAD_MEMORY_MB").unwrap_or_default();
        parse_load_memory(&var).unwrap_or_else(|e| {
            eprintln!("warning: EDGE_SAMPLE_LOAD_MEMORY_MB={e}; using the default");
            None
        })
    });
    set.unwrap_or_else(|| {
        LOAD_MEMORY_BASE.saturating_add(LOAD_MEMORY_PER_BYTE.saturating_mul(file_bytes))
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

    #[test]
    fn load_memory_is_a_positive_number_of_mib() {
        assert_eq!(parse_load_memory(""), Ok(None));
        assert_eq!(parse_load_memory("300"), Ok(Some(300 << 20)));
        for bad in ["0", "-1", "1.5", "lots"] {
            assert!(parse_load_memory(bad).unwrap_err().contains(bad), "{bad}");
        }
        assert_eq!(load_memory(1000), LOAD_MEMORY_BASE + 8000);
    }
}
