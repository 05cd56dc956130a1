//! The instruction sets our kernels are compiled for, detected at run time.

/// A kernel set: the same routines compiled for one vector unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust: no SIMD target features, separate multiply and add.
    Portable,
    /// x86-64 AVX2 + FMA (256-bit).
    Avx2,
    /// x86-64 AVX-512F (512-bit, 32 registers).
    Avx512,
    /// aarch64 NEON with FMA (128-bit, lane-indexed multiply-add).
    Neon,
}

impl Isa {
    /// Every kernel set, whatever this CPU runs.
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// Whether this CPU can run these kernels.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            // The features of `target_features!` below, one by one.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            _ => false,
        }
    }

    /// The fastest kernel set this CPU runs.
    pub fn best() -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|k| k.is_supported())
            .unwrap_or(Isa::Portable)
    }

    /// Every kernel set this CPU runs (for tests and A/B runs).
    pub fn all_supported() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|k| k.is_supported()).collect()
    }

    /// The set's short name, as `EDGE_SAMPLE_KERNELS` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// The set named `name` (see [`Isa::name`]).
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|k| k.name() == name)
    }

    /// A short description for logs and `bench`.
    pub fn describe(self) -> &'static str {
        match self {
            Isa::Portable => "edge-sample portable",
            Isa::Avx2 => "edge-sample avx2+fma",
            Isa::Avx512 => "edge-sample avx512",
            Isa::Neon => "edge-sample neon",
        }
    }

    /// The target features these kernels are compiled with (comma-separated, as
    /// `#[target_feature(enable = …)]` takes them; what [`Isa::is_supported`] checks):
    /// `"avx2,fma"`, `"avx512f,fma"`, `"neon"` (part of aarch64), `""` (portable).
    pub const fn target_features(self) -> &'static str {
        match self {
            Isa::Portable => "",
            Isa::Avx2 => "avx2,fma",
            Isa::Avx512 => "avx512f,fma",
            Isa::Neon => "neon",
        }
    }

    /// Whether the vectors are 16 floats wide (AVX-512).
    pub fn wide(self) -> bool {
        self == Isa::Avx512
    }

    /// The register tiles (output channels × positions) these kernels have.
    /// From the one table of tiles ([`crate::tile`]), whatever this CPU runs.
    pub fn tiles(self) -> &'static [(usize, usize)] {
        crate::tile::shapes(self)
    }

    /// Whether this build has these kernels (for this architecture), whether or not this CPU
    /// runs them.
    pub const fn is_compiled(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 | Isa::Avx512 => cfg!(target_arch = "x86_64"),
            Isa::Neon => cfg!(target_arch = "aarch64"),
        }
    }
}

/// `$item` compiled for kernel set `$set` (`Avx2`, `Avx512`, `Neon`): the one place the
/// `#[target_feature]` strings are written, the same as [`Isa::target_features`]. On another
/// architecture the item is plain Rust (never called: [`Isa::is_supported`] is false there).
macro_rules! target_features {
    (Avx2, $item:item) => {
        #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
        $item
    };
    (Avx512, $item:item) => {
        #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,fma"))]
        $item
    };
    (Neon, $item:item) => {
        #[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
        $item
    };
}
pub(crate) use target_features;

/// Per-ISA entry points and their dispatch, in one expression:
///
/// ```text
/// dispatch!(isa, [Avx512, Avx2], (x: &mut [f32], inner: usize) { softmax_impl(x, inner) })
/// ```
///
/// compiles the body (normally a call of an `#[inline(always)]` function, which it inlines)
/// once per listed set with that set's [`target_features!`], and once without, and runs the
/// build of `isa` when `isa` is listed and this CPU supports it, otherwise the plain one. The
/// arguments are passed by name: the caller has locals of those names. Sets not listed run
/// the plain build (NEON is part of aarch64's baseline: plain Rust there already uses it).
macro_rules! dispatch {
    ($isa:expr, [$($set:ident),+], ($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $crate::isa::dispatch!(@go $isa, [$($set),+], ($($arg: $ty),*), ($($arg),*), (), $body)
    };
    ($isa:expr, [$($set:ident),+], ($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $crate::isa::dispatch!(@go $isa, [$($set),+], ($($arg: $ty),*), ($($arg),*), $ret, $body)
    };
    (@go $isa:expr, [$($set:ident),+], $params:tt, $args:tt, $ret:ty, $body:block) => {{
        $(
            $crate::isa::target_features! { $set,
                #[allow(non_snake_case)]
                unsafe fn $set $params -> $ret $body
            }
        )+
        #[inline(always)]
        fn portable $params -> $ret $body
        match $isa {
            $(
                isa @ $crate::isa::Isa::$set if isa.is_supported() => {
                    // SAFETY: this CPU has the set's target features (checked just above).
                    unsafe { $set $args }
                }
            )+
            _ => portable $args,
        }
    }};
}
pub(crate) use dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_environment_spellings_and_round_trip() {
        // The spellings EDGE_SAMPLE_KERNELS and EDGE_SAMPLE_REQUIRE_KERNELS take.
        let names: Vec<&str> = Isa::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["portable", "avx2", "avx512", "neon"]);
        for k in Isa::ALL {
            assert_eq!(Isa::from_name(k.name()), Some(k));
            assert!(k.describe().starts_with("edge-sample "), "{}", k.describe());
        }
        assert_eq!(Isa::from_name("sse2"), None);
        let described: std::collections::HashSet<&str> =
            Isa::ALL.iter().map(|k| k.describe()).collect();
        assert_eq!(described.len(), Isa::ALL.len(), "descriptions must differ");
    }

    #[test]
    fn features_and_widths_are_the_documented_ones() {
        let features: Vec<&str> = Isa::ALL.iter().map(|k| k.target_features()).collect();
        assert_eq!(features, ["", "avx2,fma", "avx512f,fma", "neon"]);
        let wide: Vec<bool> = Isa::ALL.iter().map(|k| k.wide()).collect();
        assert_eq!(wide, [false, false, true, false]);
        // What is_supported checks is what the features say, on this CPU.
        #[cfg(target_arch = "x86_64")]
        for k in [Isa::Avx2, Isa::Avx512] {
            let detected = k.target_features().split(',').all(|f| match f {
                "avx2" => std::arch::is_x86_feature_detected!("avx2"),
                "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                "fma" => std::arch::is_x86_feature_detected!("fma"),
                _ => false,
            });
            assert_eq!(k.is_supported(), detected, "{k:?}");
        }
        assert!(Isa::Portable.is_supported());
        assert_eq!(Isa::Neon.is_supported(), cfg!(target_arch = "aarch64"));
    }
}
