//! Matrix products on the convolution's register tiles: the attention products of a
//! diffusers UNet (Q·Kᵀ, softmax·V, the Q/K/V/out projections), which tract runs through its
//! generic packing matmul at 23–32 GMAC/s on these shapes (k = 32 per head: packing and
//! storing cost as much as the multiply-adds).
//!
//! `C[m, n] = Σₖ A[m, k] · B[k, n]` per batch entry, every operand at any element strides, so
//! transposed and head-interleaved views need no copy. The "strided" tiles broadcast A's
//! values straight from A (CB rows, one step along k per multiply-add), and read B's rows of
//! XT consecutive n in place when n is B's contiguous axis; otherwise (Kᵀ) each XT-wide tile of
//! B is gathered once into a packed copy and reused by every row block. Only the last row block
//! of a ragged m goes through a zero-padded copy of A, so no tile reads past an operand.
//!
//! Each output is one tile lane's sum over k in ascending order, one FMA per term (plain
//! multiply + add on the portable kernels): the same bits on every SIMD kernel set and thread
//! count.

use std::cell::RefCell;

use crate::isa::Isa;
use crate::scratch::aligned;
use crate::team::{share, Team, TEAM_MIN_MACS};
use crate::tile::{strided_tile_fn, TileGeometry, TILE_FLOATS};
use crate::view::DisjointMut;

/// A batched matrix product's sizes and strides (in elements).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MatMulShape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Per batch axis: length and the strides of A, B and C along it.
    pub batch: Vec<(usize, [usize; 3])>,
    /// A's strides along m and k.
    pub a: [usize; 2],
    /// B's strides along k and n.
    pub b: [usize; 2],
    /// C's strides along m and n.
    pub c: [usize; 2],
}

impl MatMulShape {
    /// Contiguous row-major `[batch…, m, k] · [batch…, k, n] → [batch…, m, n]`.
    pub fn contiguous(batch: &[usize], m: usize, k: usize, n: usize) -> MatMulShape {
        let mut strides = [m * k, k * n, m * n];
        let mut axes = Vec::new();
        for &len in batch.iter().rev() {
            axes.push((len, strides));
            strides = strides.map(|s| s * len);
        }
        axes.reverse();
        MatMulShape {
            m,
            k,
            n,
            batch: axes,
            a: [k, 1],
            b: [n, 1],
            c: [n, 1],
        }
    }

    /// A self-attention block's two products, `heads` heads of `d` interleaved in
    /// `[tokens, heads·d]` rows (Q, K and V after diffusers' head reshape): scores
    /// `S[h, q, t] = Σᵢ Q[q, h·d + i] K[t, h·d + i]` (B = Kᵀ, gathered) and output
    /// `O[q, h·d + i] = Σₜ P[h, q, t] V[t, h·d + i]` (B in place, C head-interleaved).
    pub fn attention(tokens: usize, heads: usize, d: usize) -> (MatMulShape, MatMulShape) {
        let row = heads * d;
        let qk = MatMulShape {
            m: tokens,
            k: d,
            n: tokens,
            batch: vec![(heads, [d, d, tokens * tokens])],
            a: [row, 1],
            b: [1, row],
            c: [tokens, 1],
        };
        let av = MatMulShape {
            m: tokens,
            k: tokens,
            n: d,
            batch: vec![(heads, [tokens * tokens, d, d])],
            a: [tokens, 1],
            b: [row, 1],
            c: [row, 1],
        };
        (qk, av)
    }

    pub fn batches(&self) -> usize {
        self.batch.iter().map(|b| b.0).product()
    }

    /// Offsets of batch entry `i` in A, B and C.
    fn offsets(&self, mut i: usize) -> [usize; 3] {
        let mut off = [0; 3];
        for &(len, strides) in self.batch.iter().rev() {
            let at = i % len;
            i /= len;
            for (o, s) in off.iter_mut().zip(strides) {
                *o += at * s;
            }
        }
        off
    }

    /// The same product with m and n (and A and B) exchanged: `Cᵀ = Bᵀ · Aᵀ`.
    fn transposed(&self) -> MatMulShape {
        MatMulShape {
            m: self.n,
            k: self.k,
            n: self.m,
            batch: self
                .batch
                .iter()
                .map(|&(len, [a, b, c])| (len, [b, a, c]))
                .collect(),
            a: [self.b[1], self.b[0]],
            b: [self.a[1], self.a[0]],
            c: [self.c[1], self.c[0]],
        }
    }

    /// Highest element index read or written, plus one, in A, B and C.
    fn extents(&self) -> [usize; 3] {
        let mut ext = [1; 3];
        for &(len, strides) in &self.batch {
            for (e, s) in ext.iter_mut().zip(strides) {
                *e += (len - 1) * s;
            }
        }
        ext[0] += (self.m - 1) * self.a[0] + (self.k - 1) * self.a[1];
        ext[1] += (self.k - 1) * self.b[0] + (self.n - 1) * self.b[1];
        ext[2] += (self.m - 1) * self.c[0] + (self.n - 1) * self.c[1];
        ext
    }
}

/// A matrix product planned for one kernel set: tile chosen, operands' roles fixed.
#[derive(Debug, Clone, PartialEq)]
pub struct MatMul {
    /// As run: C's n axis is its contiguous one whenever either is.
    shape: MatMulShape,
    /// Whether `shape` is the caller's product transposed (A and B given in swapped roles).
    swapped: bool,
    pub kernels: Isa,
    cb: usize,
    xt: usize,
    /// B's tiles packed ahead of time (B a constant): `[batch][n tile][k][XT]`.
    packed_b: Option<std::sync::Arc<Vec<f32>>>,
}

/// Zero bias for the tiles.
static ZEROS: [f32; 16] = [0.0; 16];

thread_local! {
    /// Packed tiles of B (k × XT) and the padded last row block of A (k × CB).
    static PACKED_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PADDED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl MatMul {
    /// `kernels` must be one of ours and supported by this CPU; m, k, n ≥ 1.
    pub fn new(shape: MatMulShape, kernels: Isa) -> MatMul {
        assert!(shape.m > 0 && shape.k > 0 && shape.n > 0, "{shape:?}");
        assert!(kernels.is_supported());
        // Tiles store rows of consecutive n: make n C's unit-stride axis when m is.
        let swapped = shape.c[1] != 1 && shape.c[0] == 1;
        let shape = if swapped { shape.transposed() } else { shape };
        let (m, n) = (shape.m, shape.n);
        let (cb, xt) = *kernels
            .tiles()
            .iter()
            .min_by_key(|(cb, xt)| m.div_ceil(*cb) * cb * n.div_ceil(*xt) * xt)
            .unwrap();
        MatMul {
            shape,
            swapped,
            kernels,
            cb,
            xt,
            packed_b: None,
        }
    }

    /// Which input (0: A, 1: B, as given to [`MatMul::run`]) the tiles read as positions.
    pub fn positions_input(&self) -> usize {
        if self.swapped {
            0
        } else {
            1
        }
    }

    /// Packs input [`MatMul::positions_input`], a constant, once: `run` then ignores what it
    /// is given for it.
    pub fn with_constant_positions(mut self, value: &[f32]) -> MatMul {
        let s = &self.shape;
        let xt = self.xt;
        let ntiles = s.n.div_ceil(xt);
        let mut packed = vec![0.0f32; s.batches() * ntiles * s.k * xt];
        for (i, tile) in packed.chunks_exact_mut(s.k * xt).enumerate() {
            let (batch, nt) = (i / ntiles, i % ntiles);
            self.pack_b(value, s.offsets(batch)[1], nt * xt, tile);
        }
        self.packed_b = Some(std::sync::Arc::new(packed));
        self
    }

    /// B's k × XT tile from column `n0` (zeros past n) into `dst`.
    fn pack_b(&self, b: &[f32], ob: usize, n0: usize, dst: &mut [f32]) {
        let (s, xt) = (&self.shape, self.xt);
        let nn = xt.min(s.n - n0);
        if s.b[0] == 1 {
            // k contiguous (a transposed B): read runs along k.
            dst.fill(0.0);
            for i in 0..nn {
                let col = &b[ob + (n0 + i) * s.b[1]..][..s.k];
                for (k, v) in col.iter().enumerate() {
                    dst[k * xt + i] = *v;
                }
            }
        } else {
            for k in 0..s.k {
                let row = &mut dst[k * xt..][..xt];
                for (i, v) in row[..nn].iter_mut().enumerate() {
                    *v = b[ob + k * s.b[0] + (n0 + i) * s.b[1]];
                }
                row[nn..].fill(0.0);
            }
        }
    }

    /// One line: sizes and tile.
    pub fn describe(&self) -> String {
        let s = &self.shape;
        format!(
            "{}×{}×{} (m×k×n) × {} batch, tile ({}, {}), B {}",
            s.m,
            s.k,
            s.n,
            s.batches(),
            self.cb,
            self.xt,
            match (&self.packed_b, s.b[1] == 1) {
                (Some(_), _) => "packed once",
                (None, true) => "in place",
                (None, false) => "packed per call",
            }
        )
    }

    /// `c = a · b` as shaped at construction; slices must cover their strided extents.
    pub fn run(&self, team: Option<&Team>, a: &[f32], b: &[f32], c: &mut [f32]) {
        self.run_split(team, TEAM_MIN_MACS, a, b, c)
    }

    /// [`MatMul::run`], splitting products of at least `min_macs` multiply-adds.
    fn run_split(&self, team: Option<&Team>, min_macs: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (a, b) = if self.swapped { (b, a) } else { (a, b) };
        let s = &self.shape;
        let [ea, eb, ec] = s.extents();
        assert!(
            a.len() >= ea && (self.packed_b.is_some() || b.len() >= eb) && c.len() >= ec,
            "operands for {s:?}"
        );
        let (mblocks, ntiles) = (s.m.div_ceil(self.cb), s.n.div_ceil(self.xt));
        let items = s.batches() * ntiles * mblocks;
        let macs = s.batches() * s.m * s.k * s.n;
        let team = team.filter(|t| t.threads() > 1 && macs >= min_macs);
        let parts = team.map_or(1, Team::threads);
        let out = DisjointMut::new(c);
        // Items ordered (batch, n tile, m block): each part packs a B tile once for a run of
        // row blocks.
        let part = |p: usize| {
            // SAFETY: parts write disjoint (batch, tile, block) outputs; reads are inside the
            // extents checked above.
            unsafe { self.items(a, b, out, share(items, p, parts)) }
        };
        match team {
            Some(team) => team.run(parts, &part),
            None => part(0),
        }
    }

    /// # Safety
    /// `a`, `b` and `out` cover the shape's extents; no other thread writes these items'
    /// outputs meanwhile.
    unsafe fn items(
        &self,
        a: &[f32],
        b: &[f32],
        out: DisjointMut<'_, f32>,
        items: std::ops::Range<usize>,
    ) {
        let s = &self.shape;
        let (cb, xt) = (self.cb, self.xt);
        let (mblocks, ntiles) = (s.m.div_ceil(cb), s.n.div_ceil(xt));
        let tile = strided_tile_fn(self.kernels, (cb, xt));
        let mut acc = [0.0f32; TILE_FLOATS];
        PACKED_B.with(|pb| {
            PADDED_A.with(|pa| {
                let (mut pb, mut pa) = (pb.borrow_mut(), pa.borrow_mut());
                let (pb, pa) = (aligned(&mut pb, s.k * xt), aligned(&mut pa, s.k * cb));
                let mut current: Option<(usize, usize)> = None;
                for item in items {
                    let (bt, mb) = (item / mblocks, item % mblocks);
                    let (batch, nt) = (bt / ntiles, bt % ntiles);
                    let [oa, ob, oc] = s.offsets(batch);
                    let (n0, m0) = (nt * xt, mb * cb);
                    let (nn, mm) = (xt.min(s.n - n0), cb.min(s.m - m0));
                    // B's tile: packed ahead of time, or in place when n is contiguous and
                    // the tile whole, or packed now.
                    let in_place = s.b[1] == 1 && nn == xt;
                    let (input, plane) = match (&self.packed_b, in_place) {
                        (Some(p), _) => (p[(batch * ntiles + nt) * s.k * xt..].as_ptr(), xt),
                        (None, true) => (b[ob + n0..].as_ptr(), s.b[0]),
                        (None, false) => {
                            if current != Some((batch, nt)) {
                                self.pack_b(b, ob, n0, &mut pb[..s.k * xt]);
                                current = Some((batch, nt));
                            }
                            (pb.as_ptr(), xt)
                        }
                    };
                    // A's rows: in place unless the block is ragged.
                    let (w, w_tap, w_ch) = if mm == cb {
                        (a[oa + m0 * s.a[0]..].as_ptr(), s.a[1], s.a[0])
                    } else {
                        for k in 0..s.k {
                            for j in 0..cb {
                                pa[k * cb + j] = match j < mm {
                                    true => a[oa + (m0 + j) * s.a[0] + k * s.a[1]],
                                    false => 0.0,
                                };
                            }
                        }
                        (pa.as_ptr(), cb, 1)
                    };
                    let geo = TileGeometry {
                        plane,
                        row: 0,
                        ci: s.k,
                        kh: 1,
                        kw: 1,
                        w_tap,
                        w_ch,
                    };
                    // SAFETY: the tile reads k rows of xt floats from `input` (whole in-place
                    // tiles, or the packed copy) and k × cb weights at the strides given
                    // (whole row blocks, or the padded copy); `acc` holds cb × xt floats; the
                    // kernel set was checked at construction.
                    unsafe { tile(input, &geo, w, ZEROS.as_ptr(), acc.as_mut_ptr()) };
                    for j in 0..mm {
                        let row = oc + (m0 + j) * s.c[0] + n0 * s.c[1];
                        let src = &acc[j * xt..][..nn];
                        if s.c[1] == 1 {
                            // SAFETY: inside C's extent, this item's outputs (caller).
                            unsafe { out.slice_mut(row..row + nn) }.copy_from_slice(src);
                        } else {
                            for (i, v) in src.iter().enumerate() {
                                let at = row + i * s.c[1];
                                // SAFETY: as above.
                                let dst = unsafe { out.slice_mut(at..at + 1) };
                                dst[0] = *v;
                            }
                        }
                    }
                }
            })
        });
    }
}

/// `C = A·B` per batch entry in f64 from the definition, at the shape's strides; C given
/// zeroed of the right extent.
pub fn matmul_reference(s: &MatMulShape, a: &[f32], b: &[f32], c: &mut [f32]) {
    for batch in 0..s.batches() {
        let [oa, ob, oc] = s.offsets(batch);
        for m in 0..s.m {
            for n in 0..s.n {
                let sum: f64 = (0..s.k)
                    .map(|k| {
                        a[oa + m * s.a[0] + k * s.a[1]] as f64
                            * b[ob + k * s.b[0] + n * s.b[1]] as f64
                    })
                    .sum();
                c[oc + m * s.c[0] + n * s.c[1]] = sum as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{isas, values, Errors};

    /// Largest |fast − reference| of an entry of C over its own error scale Σ|a·b| (the sum of
    /// the absolute values of the terms it adds: an f32 sum's rounding is at most γ_k·Σ|a·b|,
    /// γ_k ≈ k·2⁻²⁴, k ≤ 64 here). Measured worst (x86-64 AVX-512, AVX2, portable; aarch64
    /// NEON, portable under qemu Cortex-A72): 2.36e-7 (contiguous, every set), 1.68e-7
    /// (attention views, portable; 1.59e-7 SIMD).
    const MATMUL_MAX_TOL: f64 = 7e-7;
    /// The same ratio's mean over C's entries. Measured worst (as above): 2.12e-8 (contiguous,
    /// portable; 1.68e-8 SIMD), 1.90e-8 (attention views, portable; 1.75e-8 SIMD).
    const MATMUL_MEAN_TOL: f64 = 6.5e-8;

    /// Checks every kernel set on `shape`; the worst errors of each.
    fn check(shape: &MatMulShape, what: &str) -> Vec<(Isa, Errors)> {
        let mut per_set = Vec::new();
        let [ea, eb, ec] = shape.extents();
        let a = values(ea, 7);
        let b = values(eb, 8);
        // Σ|a·b| bounds the rounding of each sum.
        let abs_a: Vec<f32> = a.iter().map(|v| v.abs()).collect();
        let abs_b: Vec<f32> = b.iter().map(|v| v.abs()).collect();
        let mut scale = vec![0.0f32; ec];
        matmul_reference(shape, &abs_a, &abs_b, &mut scale);
        let team = Team::new(3).unwrap();
        let mut first: Option<Vec<f32>> = None;
        for kernels in isas() {
            let mut worst = Errors::default();
            let plain = MatMul::new(shape.clone(), kernels);
            let constant = match plain.positions_input() {
                0 => &a,
                _ => &b,
            };
            let packed = plain.clone().with_constant_positions(constant);
            for (mm, threads) in [(&plain, None), (&plain, Some(&team)), (&packed, None)] {
                let mut got = vec![f32::NAN; ec];
                // Entries outside C's strided positions stay NaN in both.
                let mut want_nan = vec![f32::NAN; ec];
                mm.run_split(threads, 0, &a, &b, &mut got);
                matmul_reference(shape, &a, &b, &mut want_nan);
                // C's entries (the others stay NaN in both).
                let (mut g, mut w, mut sc) = (vec![], vec![], vec![]);
                for (i, ((&gi, &wi), &si)) in got.iter().zip(&want_nan).zip(&scale).enumerate() {
                    if wi.is_nan() {
                        assert!(gi.is_nan(), "{what} {kernels:?}: wrote outside C at {i}");
                    } else {
                        g.push(gi);
                        w.push(wi);
                        sc.push(si);
                    }
                }
                let e = Errors::of(&g, &w, &sc);
                assert!(
                    e.max <= MATMUL_MAX_TOL && e.mean <= MATMUL_MEAN_TOL,
                    "{what} {kernels:?} threads {}: max |error|/Σ|a·b| {:.2e} ({} vs {}), \
                     mean {:.2e}",
                    threads.is_some(),
                    e.max,
                    g[e.at],
                    w[e.at],
                    e.mean
                );
                worst = worst.worst(e);
                // Same bits on every SIMD kernel set and thread count.
                if kernels != Isa::Portable {
                    match &first {
                        None => first = Some(got),
                        Some(f) => {
                            assert!(
                                f.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()
                                    || (x.is_nan() && y.is_nan())),
                                "{what}: {kernels:?} differs from the first SIMD set"
                            )
                        }
                    }
                }
            }
            per_set.push((kernels, worst));
        }
        per_set
    }

    /// Prints each kernel set's worst over `checks` (and the limits).
    fn report(test: &str, checks: &[Vec<(Isa, Errors)>]) {
        for (i, (kernels, _)) in checks[0].iter().enumerate() {
            let w = checks
                .iter()
                .fold(Errors::default(), |w, c| w.worst(c[i].1));
            eprintln!(
                "{test} {kernels:?}: measured |error|/Σ|a·b| max {:.2e} mean {:.2e} \
                 (limits {MATMUL_MAX_TOL:e}, {MATMUL_MEAN_TOL:e})",
                w.max, w.mean
            );
        }
    }

    #[test]
    fn contiguous_products_match_the_reference() {
        let mut checks = Vec::new();
        for (m, k, n) in [
            (1, 1, 1),
            (5, 3, 7),
            (64, 64, 64),
            (37, 19, 70),
            (256, 32, 48),
        ] {
            let shape = MatMulShape::contiguous(&[], m, k, n);
            checks.push(check(&shape, &format!("{m}×{k}×{n}")));
        }
        let batched = MatMulShape::contiguous(&[2, 3], 9, 5, 17);
        checks.push(check(&batched, "batched 2×3"));
        report("contiguous", &checks);
    }

    #[test]
    fn attention_views_match_the_reference() {
        let (qk, av) = MatMulShape::attention(40, 2, 32);
        let mut checks = vec![check(&qk, "Q·Kᵀ"), check(&av, "P·V")];
        // C with m contiguous: run transposed.
        let cm = MatMulShape {
            m: 33,
            k: 16,
            n: 20,
            batch: vec![],
            a: [16, 1],
            b: [20, 1],
            c: [1, 33],
        };
        checks.push(check(&cm, "C column-major"));
        // Neither of C's axes contiguous: scattered stores.
        let scattered = MatMulShape {
            m: 6,
            k: 4,
            n: 5,
            batch: vec![],
            a: [1, 6],
            b: [1, 4],
            c: [10, 2],
        };
        checks.push(check(&scattered, "C strided"));
        // B with neither axis contiguous (every other column of wider rows): packed per call.
        let b_strided = MatMulShape {
            m: 7,
            k: 5,
            n: 6,
            batch: vec![],
            a: [5, 1],
            b: [14, 2],
            c: [6, 1],
        };
        checks.push(check(&b_strided, "B strided"));
        report("attention views", &checks);
    }

    /// `Σ f(i)·g(i)` over `0..k` in f64 and `Σ |f(i)·g(i)|` (its rounding scale).
    fn dot(k: usize, f: impl Fn(usize) -> f32, g: impl Fn(usize) -> f32) -> (f32, f32) {
        let (sum, abs) = (0..k).fold((0.0f64, 0.0f64), |(s, a), i| {
            let t = f(i) as f64 * g(i) as f64;
            (s + t, a + t.abs())
        });
        (sum as f32, abs as f32)
    }

    /// Every kernel set's `run` of `shape` on exactly-sized operands against `want` (values and
    /// error scales written from the layout's own definition, not from `shape`'s strides).
    fn check_layout(shape: &MatMulShape, a: &[f32], b: &[f32], want: &[(f32, f32)], what: &str) {
        let (w, sc): (Vec<f32>, Vec<f32>) = want.iter().copied().unzip();
        for kernels in isas() {
            let mut got = vec![f32::NAN; want.len()];
            MatMul::new(shape.clone(), kernels).run(None, a, b, &mut got);
            let e = Errors::of(&got, &w, &sc);
            assert!(
                e.max <= MATMUL_MAX_TOL && e.mean <= MATMUL_MEAN_TOL,
                "{what} {kernels:?}: max |error|/Σ|a·b| {:.2e} at {} ({} vs {}), mean {:.2e}",
                e.max,
                e.at,
                got[e.at],
                w[e.at],
                e.mean
            );
        }
    }

    #[test]
    fn contiguous_and_attention_shapes_lay_out_their_operands_as_documented() {
        // Row-major [2, 4, m, k] · [2, 4, k, n] → [2, 4, m, n]: operands of exactly that size,
        // every entry of C written (2 and 4 share a factor: a batch index taken in the wrong
        // order along the axes would miss entries, not just permute them).
        let (m, k, n) = (9, 5, 17);
        let shape = MatMulShape::contiguous(&[2, 4], m, k, n);
        assert_eq!(shape.batches(), 8);
        assert_eq!(shape.extents(), [8 * m * k, 8 * k * n, 8 * m * n]);
        let (a, b) = (values(8 * m * k, 7), values(8 * k * n, 8));
        let mut want = vec![];
        for e in 0..8 {
            for i in 0..m {
                for j in 0..n {
                    want.push(dot(
                        k,
                        |t| a[(e * m + i) * k + t],
                        |t| b[(e * k + t) * n + j],
                    ));
                }
            }
        }
        check_layout(&shape, &a, &b, &want, "row-major [2, 4]");
        // Attention: Q, K, V as [tokens, heads·d] rows; S as [heads, tokens, tokens]; O as
        // [tokens, heads·d].
        let (tokens, heads, d) = (12, 3, 8);
        let row = heads * d;
        let (qk, av) = MatMulShape::attention(tokens, heads, d);
        let (q, kt, v) = (
            values(tokens * row, 1),
            values(tokens * row, 2),
            values(tokens * row, 3),
        );
        let mut scores = vec![];
        for h in 0..heads {
            for i in 0..tokens {
                for t in 0..tokens {
                    scores.push(dot(
                        d,
                        |c| q[i * row + h * d + c],
                        |c| kt[t * row + h * d + c],
                    ));
                }
            }
        }
        check_layout(&qk, &q, &kt, &scores, "attention Q·Kᵀ");
        let p = values(heads * tokens * tokens, 4);
        let mut out = vec![(0.0, 0.0); tokens * row];
        for h in 0..heads {
            for i in 0..tokens {
                for c in 0..d {
                    out[i * row + h * d + c] = dot(
                        tokens,
                        |t| p[(h * tokens + i) * tokens + t],
                        |t| v[t * row + h * d + c],
                    );
                }
            }
        }
        check_layout(&av, &p, &v, &out, "attention P·V");
    }

    #[test]
    fn describe_names_the_sizes_the_tile_and_how_b_is_read() {
        let shape = MatMulShape::contiguous(&[3], 4, 5, 6);
        let mm = MatMul::new(shape, Isa::Portable);
        let d = mm.describe();
        let (cb, xt) = (mm.cb, mm.xt);
        assert_eq!(
            d,
            format!("4×5×6 (m×k×n) × 3 batch, tile ({cb}, {xt}), B in place")
        );
        let b = values(3 * 5 * 6, 1);
        assert!(mm
            .with_constant_positions(&b)
            .describe()
            .ends_with("B packed once"));
        let (qk, _) = MatMulShape::attention(8, 2, 4);
        assert!(MatMul::new(qk, Isa::Portable)
            .describe()
            .ends_with("B packed per call"));
    }
}
