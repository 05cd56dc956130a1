//! Four-lane shuffles for splitting a row into column phases and interleaving them back (the
//! Winograd layers' input split and output scatter: [`deinterleave`], [`store_interleaved`]). Written element by element in portable
//! Rust, these compiled to scalar loads, inserts and blends (perf on a 64→64 16×16 layer:
//! the output scatter a fifth of the layer), so they use the baseline vector instructions of
//! each architecture directly: SSE on x86-64 (VEX-encoded inside the AVX functions that inline
//! them), NEON on aarch64; elsewhere the plain definition. They only move values: every
//! version gives the same bits.

#[cfg(target_arch = "aarch64")]
use core::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

/// `out[i][j] = r[j][i]`.
#[inline(always)]
pub fn transpose4(r: [[f32; 4]; 4]) -> [[f32; 4]; 4] {
    let mut out = [[0.0f32; 4]; 4];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64; loads and stores of whole arrays.
    unsafe {
        let ld = |v: &[f32; 4]| _mm_loadu_ps(v.as_ptr());
        let (r0, r1, r2, r3) = (ld(&r[0]), ld(&r[1]), ld(&r[2]), ld(&r[3]));
        let (t0, t1) = (_mm_unpacklo_ps(r0, r1), _mm_unpacklo_ps(r2, r3));
        let (t2, t3) = (_mm_unpackhi_ps(r0, r1), _mm_unpackhi_ps(r2, r3));
        _mm_storeu_ps(out[0].as_mut_ptr(), _mm_movelh_ps(t0, t1));
        _mm_storeu_ps(out[1].as_mut_ptr(), _mm_movehl_ps(t1, t0));
        _mm_storeu_ps(out[2].as_mut_ptr(), _mm_movelh_ps(t2, t3));
        _mm_storeu_ps(out[3].as_mut_ptr(), _mm_movehl_ps(t3, t2));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is part of aarch64; loads and stores of whole arrays.
    unsafe {
        let ld = |v: &[f32; 4]| vld1q_f32(v.as_ptr());
        let (r0, r1, r2, r3) = (ld(&r[0]), ld(&r[1]), ld(&r[2]), ld(&r[3]));
        let (t0, t1) = (vtrn1q_f32(r0, r1), vtrn2q_f32(r0, r1));
        let (t2, t3) = (vtrn1q_f32(r2, r3), vtrn2q_f32(r2, r3));
        let (t0, t1) = (vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t1));
        let (t2, t3) = (vreinterpretq_f64_f32(t2), vreinterpretq_f64_f32(t3));
        let st = |o: &mut [f32; 4], v| vst1q_f32(o.as_mut_ptr(), vreinterpretq_f32_f64(v));
        st(&mut out[0], vtrn1q_f64(t0, t2));
        st(&mut out[1], vtrn1q_f64(t1, t3));
        st(&mut out[2], vtrn2q_f64(t0, t2));
        st(&mut out[3], vtrn2q_f64(t1, t3));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    for (i, o) in out.iter_mut().enumerate() {
        for (j, v) in o.iter_mut().enumerate() {
            *v = r[j][i];
        }
    }
    out
}

/// The even and the odd values of `a` followed by `b`.
#[inline(always)]
pub fn unzip2(a: [f32; 4], b: [f32; 4]) -> [[f32; 4]; 2] {
    let mut out = [[0.0f32; 4]; 2];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `transpose4`.
    unsafe {
        let (a, b) = (_mm_loadu_ps(a.as_ptr()), _mm_loadu_ps(b.as_ptr()));
        _mm_storeu_ps(out[0].as_mut_ptr(), _mm_shuffle_ps::<0x88>(a, b));
        _mm_storeu_ps(out[1].as_mut_ptr(), _mm_shuffle_ps::<0xdd>(a, b));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as in `transpose4`.
    unsafe {
        let (a, b) = (vld1q_f32(a.as_ptr()), vld1q_f32(b.as_ptr()));
        vst1q_f32(out[0].as_mut_ptr(), vuzp1q_f32(a, b));
        vst1q_f32(out[1].as_mut_ptr(), vuzp2q_f32(a, b));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        out = [[a[0], a[2], b[0], b[2]], [a[1], a[3], b[1], b[3]]];
    }
    out
}

/// Four values from `s` (a slice of at least 4).
#[inline(always)]
fn four(s: &[f32]) -> [f32; 4] {
    s[..4].try_into().unwrap()
}

/// The M phases of N consecutive values (N = 8 or 16, M = 2 or 4): `out[e][g]` = `x[M·g + e]`
/// for g < N / M (the rest of `out[e]` is unspecified).
#[inline(always)]
pub fn deinterleave<const M: usize, const N: usize>(x: &[f32; N]) -> [[f32; 8]; M] {
    let mut out = [[0.0f32; 8]; M];
    match (M, N) {
        (4, _) => {
            let z = [0.0f32; 4];
            let hi = |k: usize| if N == 16 { four(&x[4 * k..]) } else { z };
            let t = transpose4([four(x), four(&x[4..]), hi(2), hi(3)]);
            for (o, t) in out.iter_mut().zip(t) {
                o[..4].copy_from_slice(&t);
            }
        }
        (2, _) => {
            for h in 0..N / 8 {
                let [ev, od] = unzip2(four(&x[8 * h..]), four(&x[8 * h + 4..]));
                out[0][4 * h..4 * h + 4].copy_from_slice(&ev);
                out[1][4 * h..4 * h + 4].copy_from_slice(&od);
            }
        }
        _ => unreachable!("{M} phases"),
    }
    out
}

/// The inverse of [`deinterleave`] with a bias and an optional ReLU on the way out, N outputs
/// (N = 8 or 16, M = 2 or 4): `dst[M·g + e]` = `f(src[e][i + g])` for g < N / M, where
/// `f(v)` = `v + b`, then `max(·, 0)` if `relu`. Loads, shuffles and stores are explicit
/// vector instructions: written as array code the compiler merged the shuffles with the bias
/// and split the stores into scalar ones.
#[inline(always)]
pub fn store_interleaved<const M: usize, const N: usize>(
    src: &[&[f32]; M],
    i: usize,
    b: f32,
    relu: bool,
    dst: &mut [f32; N],
) {
    assert!(
        (M == 2 || M == 4) && (N == 8 || N == 16) && src.iter().all(|s| i + N / M <= s.len()),
        "{M} phases, {N} outputs"
    );
    let src: [*const f32; M] = std::array::from_fn(|e| src[e][i..].as_ptr());
    let out = dst.as_mut_ptr();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64; every load reads N / M values of a source (checked) and
    // every store writes within `dst`.
    unsafe {
        let (bv, zero) = (_mm_set1_ps(b), _mm_setzero_ps());
        let fin = |v: __m128| {
            let v = _mm_add_ps(v, bv);
            if relu {
                _mm_max_ps(v, zero)
            } else {
                v
            }
        };
        if M == 4 {
            // Four tiles (N = 16) or two (N = 8, the upper halves zero and not stored).
            let ld = |e: usize| match N {
                16 => _mm_loadu_ps(src[e]),
                _ => _mm_castpd_ps(_mm_load_sd(src[e] as *const f64)),
            };
            let (r0, r1, r2, r3) = (ld(0), ld(1 % M), ld(2 % M), ld(3 % M));
            let (t0, t1) = (_mm_unpacklo_ps(r0, r1), _mm_unpacklo_ps(r2, r3));
            let (t2, t3) = (_mm_unpackhi_ps(r0, r1), _mm_unpackhi_ps(r2, r3));
            _mm_storeu_ps(out, fin(_mm_movelh_ps(t0, t1)));
            _mm_storeu_ps(out.add(4), fin(_mm_movehl_ps(t1, t0)));
            if N == 16 {
                _mm_storeu_ps(out.add(8), fin(_mm_movelh_ps(t2, t3)));
                _mm_storeu_ps(out.add(12), fin(_mm_movehl_ps(t3, t2)));
            }
        } else {
            for h in 0..N / 8 {
                let (a, c) = (
                    _mm_loadu_ps(src[0].add(4 * h)),
                    _mm_loadu_ps(src[1].add(4 * h)),
                );
                _mm_storeu_ps(out.add(8 * h), fin(_mm_unpacklo_ps(a, c)));
                _mm_storeu_ps(out.add(8 * h + 4), fin(_mm_unpackhi_ps(a, c)));
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is part of aarch64; loads and stores as on x86-64.
    unsafe {
        let bv = vdupq_n_f32(b);
        // vmaxnm: the number when one side is NaN, as f32::max.
        let fin = |v: float32x4_t| {
            let v = vaddq_f32(v, bv);
            if relu {
                vmaxnmq_f32(v, vdupq_n_f32(0.0))
            } else {
                v
            }
        };
        if M == 4 {
            if N == 16 {
                let v = float32x4x4_t(
                    fin(vld1q_f32(src[0])),
                    fin(vld1q_f32(src[1 % M])),
                    fin(vld1q_f32(src[2 % M])),
                    fin(vld1q_f32(src[3 % M])),
                );
                vst4q_f32(out, v);
            } else {
                let f2 =
                    |p: *const f32| vget_low_f32(fin(vcombine_f32(vld1_f32(p), vdup_n_f32(0.0))));
                let v = float32x2x4_t(f2(src[0]), f2(src[1 % M]), f2(src[2 % M]), f2(src[3 % M]));
                vst4_f32(out, v);
            }
        } else {
            for h in 0..N / 8 {
                let v = float32x4x2_t(
                    fin(vld1q_f32(src[0].add(4 * h))),
                    fin(vld1q_f32(src[1].add(4 * h))),
                );
                vst2q_f32(out.add(8 * h), v);
            }
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    for g in 0..N / M {
        for e in 0..M {
            // SAFETY: within the checked sources.
            let v = unsafe { *src[e].add(g) } + b;
            dst[M * g + e] = if relu { v.max(0.0) } else { v };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp<const N: usize>() -> [f32; N] {
        std::array::from_fn(|i| i as f32 + 0.5)
    }

    #[test]
    fn transpose_and_unzip_move_values_as_defined() {
        let r: [[f32; 4]; 4] = std::array::from_fn(|i| std::array::from_fn(|j| (4 * i + j) as f32));
        let t = transpose4(r);
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(t[i][j], r[j][i]);
            }
        }
        let (a, b) = ([0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]);
        assert_eq!(unzip2(a, b), [[0.0, 2.0, 4.0, 6.0], [1.0, 3.0, 5.0, 7.0]]);
    }

    fn check<const M: usize, const N: usize>() {
        let x = ramp::<N>();
        let p = deinterleave::<M, N>(&x);
        for e in 0..M {
            for g in 0..N / M {
                assert_eq!(p[e][g], x[M * g + e], "M {M} N {N} phase {e} value {g}");
            }
        }
        let src: [&[f32]; M] = std::array::from_fn(|e| &p[e][..]);
        let mut back = [0.0f32; N];
        store_interleaved::<M, N>(&src, 0, 0.0, false, &mut back);
        assert_eq!(back, x, "M {M} N {N}");
        // With a bias and ReLU, from an offset into the sources.
        let shifted: [Vec<f32>; M] = std::array::from_fn(|e| {
            let mut v = vec![7.0f32; 3];
            v.extend(p[e][..N / M].iter().map(|v| v - 10.0));
            v
        });
        let src: [&[f32]; M] = std::array::from_fn(|e| &shifted[e][..]);
        store_interleaved::<M, N>(&src, 3, 2.0, true, &mut back);
        for (k, (got, x)) in back.iter().zip(x).enumerate() {
            assert_eq!(*got, (x - 8.0).max(0.0), "M {M} N {N} output {k}");
        }
    }

    #[test]
    fn phases_round_trip() {
        check::<2, 8>();
        check::<2, 16>();
        check::<4, 8>();
        check::<4, 16>();
    }
}
