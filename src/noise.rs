//! The seeded Gaussian stream: platform-independent, seekable, one stream per image.
//!
//! Each image `i` of a run with seed `s` draws from its own stream, so image `i` is the same
//! whatever `--num`, batch size or thread count produced it. The stream is counter-based
//! (SplitMix64's finaliser on a Weyl sequence) and turned into normals by Box–Muller with
//! `libm`'s correctly portable `log`/`sin`/`cos`, so x86 and ARM produce identical bits.
//! tests/fixtures/make_parity.py reimplements it in NumPy; a golden file pins both.
//!
//! ```text
//! key(seed, image) = mix(seed ^ mix(image + GOLDEN))
//! word(n)          = mix(key + (n + 1) · GOLDEN)
//! u1 = ((word(2k) >> 11) + 1) · 2⁻⁵³ ∈ (0, 1],   u2 = (word(2k+1) >> 11) · 2⁻⁵³
//! z[2k] = √(−2 ln u1) · cos(2π u2),   z[2k+1] = √(−2 ln u1) · sin(2π u2)
//! ```

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (Steele, Lea & Flood 2014).
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One image's stream of standard normal f32 values.
#[derive(Clone, Debug)]
pub struct NoiseStream {
    key: u64,
    /// Index of the next Gaussian to hand out.
    next: u64,
}

impl NoiseStream {
    pub fn new(seed: u64, image: u64) -> NoiseStream {
        NoiseStream {
            key: mix(seed ^ mix(image.wrapping_add(GOLDEN))),
            next: 0,
        }
    }

    /// The raw 64-bit word `n` of this stream.
    #[inline]
    pub fn word(&self, n: u64) -> u64 {
        mix(self
            .key
            .wrapping_add(n.wrapping_add(1).wrapping_mul(GOLDEN)))
    }

    /// The Gaussian at position `k` of the stream.
    #[inline]
    pub fn gaussian_at(&self, k: u64) -> f64 {
        let pair = k / 2;
        let u1 = ((self.word(2 * pair) >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.word(2 * pair + 1) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let theta = 2.0 * core::f64::consts::PI * u2;
        if k.is_multiple_of(2) {
            r * libm::cos(theta)
        } else {
            r * libm::sin(theta)
        }
    }

    /// Fills `out` with the next `out.len()` values. Allocation-free.
    pub fn fill(&mut self, out: &mut [f32]) {
        let mut k = self.next;
        let mut i = 0;
        // An odd start takes the second half of a pair alone.
        if k % 2 == 1 && i < out.len() {
            out[i] = self.gaussian_at(k) as f32;
            i += 1;
            k += 1;
        }
        while i + 1 < out.len() {
            let u1 = ((self.word(k) >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
            let u2 = (self.word(k + 1) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            let r = libm::sqrt(-2.0 * libm::log(u1));
            let (s, c) = libm::sincos(2.0 * core::f64::consts::PI * u2);
            out[i] = (r * c) as f32;
            out[i + 1] = (r * s) as f32;
            i += 2;
            k += 2;
        }
        if i < out.len() {
            out[i] = self.gaussian_at(k) as f32;
            k += 1;
        }
        self.next = k;
    }

    /// Number of values drawn so far.
    pub fn position(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_the_same_however_it_is_chunked() {
        let mut a = NoiseStream::new(42, 3);
        let mut whole = vec![0f32; 101];
        a.fill(&mut whole);
        let mut b = NoiseStream::new(42, 3);
        let mut parts = vec![0f32; 101];
        let (p1, rest) = parts.split_at_mut(7);
        let (p2, p3) = rest.split_at_mut(50);
        b.fill(p1);
        b.fill(p2);
        b.fill(p3);
        assert_eq!(whole, parts);
        for (k, v) in whole.iter().enumerate() {
            assert_eq!(*v, a_fresh_at(k as u64));
        }
        fn a_fresh_at(k: u64) -> f32 {
            NoiseStream::new(42, 3).gaussian_at(k) as f32
        }
    }

    #[test]
    fn streams_differ_by_seed_and_image() {
        let z = |s, i| NoiseStream::new(s, i).gaussian_at(0);
        assert_ne!(z(1, 0), z(2, 0));
        assert_ne!(z(1, 0), z(1, 1));
    }

    /// Moments of 200 000 draws: mean 0 ± 5σ/√n, variance 1 ± 5·√(2/n), kurtosis ≈ 3.
    #[test]
    fn draws_are_standard_normal() {
        let n = 200_000;
        let mut v = vec![0f32; n];
        NoiseStream::new(7, 0).fill(&mut v);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt =
            v.iter().map(|&x| (x as f64 - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        let se = 1.0 / (n as f64).sqrt();
        assert!(mean.abs() < 5.0 * se, "mean {mean}");
        assert!((var - 1.0).abs() < 5.0 * (2.0f64).sqrt() * se, "var {var}");
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
    }
}
