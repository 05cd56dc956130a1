//! Helpers for the kernel tests (this crate's, and a caller's with the `testing` feature):
//! deterministic inputs, and the kernel sets a test must cover.
//!
//! A per-ISA test runs [`isas`] (or [`for_each_isa`]): every kernel set compiled for this
//! architecture that this CPU runs. A set the CPU lacks is reported on stderr as
//! `skipped: this CPU lacks avx512f` rather than passing silently, and fails the test instead
//! when the comma-separated list in `EDGE_SAMPLE_REQUIRE_KERNELS` names it (a CI runner that
//! must exercise AVX-512 sets `avx512,avx2,portable`; an ARM one `neon,portable`).

use crate::isa::Isa;
use crate::quant::DotIsa;

/// The environment variable naming the kernel sets the tests must run (see the module docs).
pub const REQUIRE_VAR: &str = "EDGE_SAMPLE_REQUIRE_KERNELS";

// How tests start a program (shared with the edge-sample crate's integration tests, which
// include the same file).
#[path = "test_runner.rs"]
mod test_runner;
pub use test_runner::{command, QEMU_RUNNER};

/// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The names `EDGE_SAMPLE_REQUIRE_KERNELS` lists. Panics on a name that is neither a float
/// kernel set's ([`Isa::name`]) nor an 8-bit one's ([`DotIsa::name`]).
fn required_names() -> Vec<String> {
    let list = std::env::var(REQUIRE_VAR).unwrap_or_default();
    let names: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    for n in &names {
        assert!(
            Isa::from_name(n).is_some() || DotIsa::from_name(n).is_some(),
            "{REQUIRE_VAR}: unknown kernel set {n:?} (known: {:?} and 8-bit {:?})",
            Isa::ALL.map(Isa::name),
            DotIsa::ALL.map(DotIsa::name)
        );
    }
    names
}

/// The float kernel sets `EDGE_SAMPLE_REQUIRE_KERNELS` names (none when unset or empty).
pub fn required_isas() -> Vec<Isa> {
    required_names()
        .iter()
        .filter_map(|n| Isa::from_name(n))
        .collect()
}

/// The 8-bit kernel sets `EDGE_SAMPLE_REQUIRE_KERNELS` names (`portable`, `avx2` and `neon`
/// name a float set and an 8-bit set at once).
pub fn required_dot_isas() -> Vec<DotIsa> {
    required_names()
        .iter()
        .filter_map(|n| DotIsa::from_name(n))
        .collect()
}

/// Every 8-bit kernel set this CPU runs. For each one of this architecture it lacks:
/// `skipped: this CPU lacks …` on stderr, or a panic when `EDGE_SAMPLE_REQUIRE_KERNELS` names
/// it (also when it names one of another architecture).
pub fn dot_isas() -> Vec<DotIsa> {
    let required = required_dot_isas();
    let test = std::thread::current()
        .name()
        .unwrap_or("kernel test")
        .to_string();
    let mut run = Vec::new();
    for isa in DotIsa::ALL {
        if isa.is_supported() {
            run.push(isa);
            continue;
        }
        let ours = matches!(
            (
                isa,
                cfg!(target_arch = "x86_64"),
                cfg!(target_arch = "aarch64")
            ),
            (DotIsa::Avx2 | DotIsa::Vnni, true, _) | (DotIsa::Neon | DotIsa::NeonDot, _, true)
        );
        assert!(
            !required.contains(&isa),
            "{test}: {REQUIRE_VAR} requires {} 8-bit kernels, which this {} lacks",
            isa.name(),
            if ours { "CPU" } else { "architecture" }
        );
        if ours {
            eprintln!("{test}: 8-bit {} skipped: this CPU lacks it", isa.name());
        }
    }
    run
}

/// The target features of `isa` this CPU lacks (all of them for a set of another
/// architecture).
pub fn missing_features(isa: Isa) -> Vec<&'static str> {
    let features = isa.target_features().split(',').filter(|f| !f.is_empty());
    if !isa.is_compiled() {
        return features.collect();
    }
    features.filter(|f| !detected(f)).collect()
}

/// Whether this CPU has target feature `f` (one of [`Isa::target_features`]').
fn detected(f: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match f {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            _ => panic!("no detection for feature {f:?}"),
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        match f {
            "neon" => std::arch::is_aarch64_feature_detected!("neon"),
            _ => panic!("no detection for feature {f:?}"),
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        panic!("no detection for feature {f:?}")
    }
}

/// Every kernel set compiled for this architecture that this CPU runs, in [`Isa::ALL`]'s
/// order. For each one it lacks: `skipped: this CPU lacks …` on stderr, or a panic when
/// `EDGE_SAMPLE_REQUIRE_KERNELS` names it. A required set of another architecture panics too.
pub fn isas() -> Vec<Isa> {
    let required = required_isas();
    let test = std::thread::current()
        .name()
        .unwrap_or("kernel test")
        .to_string();
    for &isa in &required {
        assert!(
            isa.is_compiled(),
            "{test}: {REQUIRE_VAR} requires {} kernels, which this architecture does not build",
            isa.name()
        );
    }
    let mut run = Vec::new();
    for isa in Isa::ALL.into_iter().filter(|i| i.is_compiled()) {
        if isa.is_supported() {
            run.push(isa);
            continue;
        }
        let lacks = missing_features(isa).join(", ");
        assert!(
            !required.contains(&isa),
            "{test}: {REQUIRE_VAR} requires {} kernels, but this CPU lacks {lacks}",
            isa.name()
        );
        eprintln!("{test}: {} skipped: this CPU lacks {lacks}", isa.name());
    }
    run
}

/// `f(isa)` for every set of [`isas`].
pub fn for_each_isa(mut f: impl FnMut(Isa)) {
    for isa in isas() {
        f(isa)
    }
}

/// Per-element errors of a kernel's outputs, each divided by that element's own error scale
/// (for a sum, Σ|terms|: the scale of its rounding error): the largest and the mean ratio.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Errors {
    /// The largest |got − want| / scale (infinite for a NaN, or for an error where the scale
    /// is 0).
    pub max: f64,
    /// The mean |got − want| / scale over the elements compared.
    pub mean: f64,
    /// The element of the largest ratio.
    pub at: usize,
    /// How many elements were compared.
    pub count: usize,
}

impl Errors {
    /// `|got[i] − want[i]| / scale[i]` over every element: `got` the kernel's outputs, `want`
    /// the reference's, `scale` each element's error scale (all of one length).
    pub fn of<W: Copy + Into<f64>, S: Copy + Into<f64>>(
        got: &[f32],
        want: &[W],
        scale: &[S],
    ) -> Errors {
        assert_eq!(got.len(), want.len(), "outputs vs reference: lengths");
        assert_eq!(got.len(), scale.len(), "outputs vs scales: lengths");
        let mut e = Errors::default();
        let mut sum = 0.0;
        for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
            let (w, s): (f64, f64) = (w.into(), s.into());
            let err = (g as f64 - w).abs();
            let ratio = if err == 0.0 {
                0.0
            } else if err.is_nan() || s == 0.0 {
                f64::INFINITY
            } else {
                err / s
            };
            if ratio > e.max || i == 0 {
                e.max = ratio;
                e.at = i;
            }
            sum += ratio;
        }
        e.count = got.len();
        e.mean = if e.count == 0 {
            0.0
        } else {
            sum / e.count as f64
        };
        e
    }

    /// The worse of two measurements: the larger max (with its element) and the larger mean.
    pub fn worst(self, other: Errors) -> Errors {
        let mut w = if other.max > self.max { other } else { self };
        w.mean = self.mean.max(other.mean);
        w.count = self.count + other.count;
        w
    }
}

/// `|v|` of every value (the inputs of a reference run that gives each output's Σ|terms|).
pub fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_supported_is_the_target_features_detected() {
        for isa in Isa::ALL.into_iter().filter(|i| i.is_compiled()) {
            assert_eq!(
                isa.is_supported(),
                missing_features(isa).is_empty(),
                "{isa:?}: {:?}",
                isa.target_features()
            );
        }
    }

    #[test]
    fn the_sets_run_are_the_supported_ones() {
        assert_eq!(isas(), Isa::all_supported());
    }
}
