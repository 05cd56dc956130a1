//! The register tiles every convolution and matrix product here runs on: CB output channels ×
//! XT positions accumulated in vector registers, for each kernel set (x86-64 AVX2 and
//! AVX-512, aarch64 NEON, portable Rust), and THE table of which tiles each set has
//! ([`tile_table!`]): [`Isa::tiles`] and the routine a layer runs ([`packed_tile_fn`],
//! [`strided_tile_fn`]) both read it, so they cannot disagree.

use crate::isa::Isa;

/// A tile shape of one kernel set with its two routines.
#[derive(Clone, Copy)]
pub(crate) struct TileEntry {
    /// Output channels.
    pub cb: usize,
    /// Positions.
    pub xt: usize,
    /// Weights packed `[ci][kh][kw][CB]` per channel block (convolutions).
    pub packed: Tile,
    /// Weights at the geometry's strides (matrix products).
    pub strided: Tile,
}

/// The one table of tiles: per kernel set, the architecture it is compiled for (none: every
/// one) and its tiles `(CB, XT) => routine[V]`, where the routine is generic over
/// `<CB, V, STRIDED>` (V: XT in vectors of the set's width, or XT itself for the portable
/// one). Generates [`shapes`] (every kernel set, whatever this CPU) and [`entries`] (the sets
/// compiled for this architecture, with their routines). The first tile listed loads least
/// per multiply-add: the choice between equally wasteful tiles.
macro_rules! tile_table {
    ($($isa:ident $([$arch:literal])? : $(($cb:literal, $xt:literal) => $($f:ident)::+ [$v:literal]),+ ;)+) => {
        /// The register tiles (output channels × positions) of `isa`.
        pub(crate) const fn shapes(isa: Isa) -> &'static [(usize, usize)] {
            match isa {
                $(Isa::$isa => &[$(($cb, $xt)),+],)+
            }
        }

        /// The tiles of `isa` with their routines; empty for a set not compiled for this
        /// architecture.
        pub(crate) fn entries(isa: Isa) -> &'static [TileEntry] {
            match isa {
                $(
                    $(#[cfg(target_arch = $arch)])?
                    Isa::$isa => &[$(TileEntry {
                        cb: $cb,
                        xt: $xt,
                        packed: $($f)::+::<$cb, $v, false>,
                        strided: $($f)::+::<$cb, $v, true>,
                    }),+],
                )+
                #[allow(unreachable_patterns)]
                _ => &[],
            }
        }
    };
}

tile_table! {
    Portable: (4, 16) => tile_portable[16], (8, 8) => tile_portable[8];
    Avx2 ["x86_64"]: (4, 16) => x86::tile_avx2[2], (8, 8) => x86::tile_avx2[1];
    Avx512 ["x86_64"]: (4, 64) => x86::tile_avx512[4], (8, 32) => x86::tile_avx512[2],
        (16, 16) => x86::tile_avx512[1];
    Neon ["aarch64"]: (4, 16) => arm::tile_neon[4], (8, 8) => arm::tile_neon[2];
}

/// The entry of `kernels` for `tile` = (channels, positions).
fn entry(kernels: Isa, tile: (usize, usize)) -> &'static TileEntry {
    entries(kernels)
        .iter()
        .find(|e| (e.cb, e.xt) == tile)
        .unwrap_or_else(|| panic!("{kernels:?} has no tile {tile:?} on this architecture"))
}

/// The strided register tile (weights read at any strides, for matrix products) of
/// `kernels` with `tile` = (channels, positions), one of `kernels`' tiles.
pub(crate) fn strided_tile_fn(kernels: Isa, tile: (usize, usize)) -> Tile {
    entry(kernels, tile).strided
}

/// The packed register tile (weights laid out `[ci][kh][kw][CB]` per channel block) of
/// `kernels` with `tile` = (channels, positions), one of `kernels`' tiles.
pub(crate) fn packed_tile_fn(kernels: Isa, tile: (usize, usize)) -> Tile {
    entry(kernels, tile).packed
}

/// Floats in the largest register tile (CB × XT).
pub(crate) const TILE_FLOATS: usize = 256;

/// Strides of the zero-bordered input and the kernel's extent, for one tile.
pub struct TileGeometry {
    /// Floats per input plane (one channel).
    pub(crate) plane: usize,
    /// Floats per padded row.
    pub(crate) row: usize,
    pub(crate) ci: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    /// Strided tiles only (matrix products): floats from one tap's weights to the next, and
    /// from one output channel's weight to the next. Packed tiles step CB and 1.
    pub(crate) w_tap: usize,
    pub(crate) w_ch: usize,
}

/// One register tile of CB channels × XT positions: `acc[j·XT + i]` = bias[j] + Σ over
/// (c, ky, kx), in that order, of `w[c][ky][kx][j] · input[c·plane + ky·row + kx + i]`, with
/// `input` at the tile's first position in plane 0 and `w` at the channel block's weights.
/// Every implementation sums in this order, one fused multiply-add per term (plain multiply and
/// add in the portable one), so results do not depend on the vector width.
pub(crate) type Tile = unsafe fn(*const f32, &TileGeometry, *const f32, *const f32, *mut f32);

/// The tile in plain Rust.
///
/// # Safety
/// `input`, `w`, `bias` and `acc` must cover the tile's reads and writes (see [`Tile`]).
pub(crate) unsafe fn tile_portable<const CB: usize, const XT: usize, const STRIDED: bool>(
    input: *const f32,
    g: &TileGeometry,
    w: *const f32,
    bias: *const f32,
    acc: *mut f32,
) {
    // SAFETY: `acc` holds CB × XT floats and `bias` CB (caller).
    let acc = unsafe { &mut *(acc as *mut [[f32; XT]; CB]) };
    // SAFETY: as above.
    let bias = unsafe { &*(bias as *const [f32; CB]) };
    for (a, b) in acc.iter_mut().zip(bias) {
        *a = [*b; XT];
    }
    let mut wt = w;
    for c in 0..g.ci {
        for ky in 0..g.kh {
            // SAFETY: the tile's reads are inside `input` (caller).
            let row = unsafe { input.add(c * g.plane + ky * g.row) };
            for kx in 0..g.kw {
                // SAFETY: as above: XT floats from tap (ky, kx).
                let r = unsafe { &*(row.add(kx) as *const [f32; XT]) };
                for (j, aj) in acc.iter_mut().enumerate() {
                    // SAFETY: this tap's weight of channel j, inside `w` (caller).
                    let wj = unsafe { *wt.add(if STRIDED { j * g.w_ch } else { j }) };
                    for (a, x) in aj.iter_mut().zip(r) {
                        *a += wj * x;
                    }
                }
                // SAFETY: the next tap's weights (one past the last tap's at most).
                wt = unsafe { wt.add(if STRIDED { g.w_tap } else { CB }) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2 / AVX-512 tiles: CB × V vector accumulators (16 of them at most), V unaligned
    //! position loads and CB weight broadcasts per tap.
    use super::TileGeometry;
    use std::arch::x86_64::*;

    /// One x86 tile function: CB × V vector accumulators of LANES floats, V unaligned position
    /// loads and CB weight broadcasts per tap; 3×3 and 1×1 kernels get their tap loops unrolled.
    macro_rules! x86_tile {
        ($name:ident, $set:ident, $lanes:literal, $zero:ident, $set1:ident, $load:ident,
         $fma:ident, $store:ident) => {
            crate::isa::target_features! { $set,
                /// # Safety
                #[doc = concat!("CPU features of `Isa::", stringify!($set), "` present; pointers as")]
                #[doc = concat!("[`super::Tile`] for CB × ", $lanes, "V floats.")]
                pub unsafe fn $name<const CB: usize, const V: usize, const STRIDED: bool>(
                    input: *const f32,
                    g: &TileGeometry,
                    w: *const f32,
                    bias: *const f32,
                    acc: *mut f32,
                ) {
                    #[inline(always)]
                    unsafe fn body<const CB: usize, const V: usize, const STRIDED: bool>(
                        input: *const f32,
                        g: &TileGeometry,
                        w: *const f32,
                        bias: *const f32,
                        acc: *mut f32,
                        kh: usize,
                        kw: usize,
                    ) {
                        // SAFETY: the tile's reads and writes are inside the pointers'
                        // buffers, and the CPU has the features (caller).
                        unsafe {
                            let mut a = [[$zero(); V]; CB];
                            for (j, aj) in a.iter_mut().enumerate() {
                                *aj = [$set1(*bias.add(j)); V];
                            }
                            let mut wt = w;
                            for c in 0..g.ci {
                                for ky in 0..kh {
                                    let row = input.add(c * g.plane + ky * g.row);
                                    for kx in 0..kw {
                                        let mut r = [$zero(); V];
                                        for (v, rv) in r.iter_mut().enumerate() {
                                            *rv = $load(row.add(kx + $lanes * v));
                                        }
                                        for (j, aj) in a.iter_mut().enumerate() {
                                            let wj =
                                                $set1(*wt.add(if STRIDED { j * g.w_ch } else { j }));
                                            for v in 0..V {
                                                aj[v] = $fma(wj, r[v], aj[v]);
                                            }
                                        }
                                        wt = wt.add(if STRIDED { g.w_tap } else { CB });
                                    }
                                }
                            }
                            for (j, aj) in a.iter().enumerate() {
                                for (v, av) in aj.iter().enumerate() {
                                    $store(acc.add(j * $lanes * V + $lanes * v), *av);
                                }
                            }
                        }
                    }
                    // SAFETY: the caller's.
                    unsafe {
                        if g.kh == 3 && g.kw == 3 {
                            body::<CB, V, STRIDED>(input, g, w, bias, acc, 3, 3)
                        } else if g.kh == 1 && g.kw == 1 {
                            body::<CB, V, STRIDED>(input, g, w, bias, acc, 1, 1)
                        } else {
                            body::<CB, V, STRIDED>(input, g, w, bias, acc, g.kh, g.kw)
                        }
                    }
                }
            }
        };
    }

    x86_tile!(
        tile_avx2,
        Avx2,
        8,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    );
    x86_tile!(
        tile_avx512,
        Avx512,
        16,
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    );
}

#[cfg(target_arch = "aarch64")]
mod arm {
    //! NEON tiles: CB × Q q-register accumulators (16 at most), Q position loads shared by the
    //! CB channels, weights loaded four at a time and applied with lane-indexed FMA.
    use super::TileGeometry;
    use std::arch::aarch64::*;

    /// `acc + r · w[lane]`; `lane` is a constant after the tile's loops unroll.
    #[inline(always)]
    unsafe fn fma_lane(
        acc: float32x4_t,
        r: float32x4_t,
        w: float32x4_t,
        lane: usize,
    ) -> float32x4_t {
        // SAFETY: NEON is part of aarch64.
        unsafe {
            match lane {
                0 => vfmaq_laneq_f32::<0>(acc, r, w),
                1 => vfmaq_laneq_f32::<1>(acc, r, w),
                2 => vfmaq_laneq_f32::<2>(acc, r, w),
                _ => vfmaq_laneq_f32::<3>(acc, r, w),
            }
        }
    }

    /// # Safety
    /// Pointers as [`super::Tile`] for CB × 4Q floats; CB a multiple of 4.
    pub unsafe fn tile_neon<const CB: usize, const Q: usize, const STRIDED: bool>(
        input: *const f32,
        g: &TileGeometry,
        w: *const f32,
        bias: *const f32,
        acc: *mut f32,
    ) {
        // 3×3 and 1×1 with the tap loops unrolled; any other kernel size with loops.
        // SAFETY: the caller's.
        unsafe {
            if g.kh == 3 && g.kw == 3 {
                body::<CB, Q, STRIDED>(input, g, w, bias, acc, 3, 3)
            } else if g.kh == 1 && g.kw == 1 {
                body::<CB, Q, STRIDED>(input, g, w, bias, acc, 1, 1)
            } else {
                body::<CB, Q, STRIDED>(input, g, w, bias, acc, g.kh, g.kw)
            }
        }
    }

    #[inline(always)]
    unsafe fn body<const CB: usize, const Q: usize, const STRIDED: bool>(
        input: *const f32,
        g: &TileGeometry,
        w: *const f32,
        bias: *const f32,
        acc: *mut f32,
        kh: usize,
        kw: usize,
    ) {
        // SAFETY: the tile's reads and writes are inside the pointers' buffers (caller);
        // NEON is part of aarch64.
        unsafe {
            let mut a = [[vdupq_n_f32(0.0); Q]; CB];
            for (j, aj) in a.iter_mut().enumerate() {
                *aj = [vdupq_n_f32(*bias.add(j)); Q];
            }
            let mut wt = w;
            for c in 0..g.ci {
                for ky in 0..kh {
                    let row = input.add(c * g.plane + ky * g.row);
                    for kx in 0..kw {
                        let p = row.add(kx);
                        let mut r = [vdupq_n_f32(0.0); Q];
                        for (q, rq) in r.iter_mut().enumerate() {
                            *rq = vld1q_f32(p.add(4 * q));
                        }
                        for (j, aj) in a.iter_mut().enumerate() {
                            if STRIDED {
                                let wj = vdupq_n_f32(*wt.add(j * g.w_ch));
                                for q in 0..Q {
                                    aj[q] = vfmaq_f32(aj[q], r[q], wj);
                                }
                            } else {
                                let wv = vld1q_f32(wt.add(j / 4 * 4));
                                for q in 0..Q {
                                    aj[q] = fma_lane(aj[q], r[q], wv, j % 4);
                                }
                            }
                        }
                        wt = wt.add(if STRIDED { g.w_tap } else { CB });
                    }
                }
            }
            for (j, aj) in a.iter().enumerate() {
                for (q, aq) in aj.iter().enumerate() {
                    vst1q_f32(acc.add(j * 4 * Q + 4 * q), *aq);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_compiled_here_has_a_routine_for_each_of_its_tiles() {
        for isa in Isa::ALL {
            let compiled: Vec<_> = entries(isa).iter().map(|e| (e.cb, e.xt)).collect();
            assert!(
                compiled.is_empty() || compiled == isa.tiles(),
                "{isa:?}: {compiled:?}"
            );
            assert_eq!(compiled.is_empty(), !isa.is_compiled(), "{isa:?}");
            for &(cb, xt) in isa.tiles() {
                assert!(cb * xt <= TILE_FLOATS, "{isa:?} {cb}×{xt}");
            }
        }
    }
}
