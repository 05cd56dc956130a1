//! 3×3 stride-1 convolutions by Winograd's minimal filtering, F(2×2, 3×3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2×2 block of outputs comes from the 4×4 input patch under it: the patch is transformed
//! (`V = Bᵀ·d·B`, additions only), multiplied element by element with the transformed kernel
//! (`U = G·g·Gᵀ`, computed once at load), summed over input channels, and transformed back
//! (`Y = Aᵀ·M·A`, additions only). The sum over input channels at each of the 16 transformed
//! positions is a matrix product (`co × ci` by `ci × tiles`), run on the same register tiles
//! as the direct kernel's 1×1 layers: 16 multiply-adds per 4 outputs instead of 36, so the
//! large 3×3 layers of a UNet do 2.25× fewer.
//!
//! Each call first copies every input plane zero-bordered and split into its even and odd
//! columns, so that a run of tiles reads each patch column as a plain vector. Tiles of 2×2
//! outputs are numbered across the whole batch (image, tile row, tile column) and cut into
//! chunks of XT, the register tile's width: a chunk's patches are transformed into a buffer
//! (`16 × ci × XT`), the products run ξ by ξ over every block of CB output channels (one ξ's
//! patches and weights stay in L1 meanwhile), and each block's 16 results are transformed back
//! into the output, adding the bias and applying ReLU. A team splits the planes, then the chunks
//! (or a lone chunk's channel blocks).
//!
//! Every kernel set runs the same additions in the same order and the same fused multiply-adds
//! in the products, so AVX2, AVX-512 and NEON give the same bits, as the direct kernel does;
//! the results differ from the direct kernel's by rounding (see the tests' bound).
//! `EDGE_SAMPLE_CONV` picks: `auto` (where it pays), `direct` (never), `winograd` (every 3×3
//! stride-1 layer).

use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;

use super::kernels::{
    packed_tile_fn, ConvShape, Kernels, TileGeometry, TEAM_MIN_MACS, TILE_FLOATS,
};
use super::team::{share, SharedMut, Team};

/// Transformed positions per tile (the 4×4 patch's).
const XI: usize = 16;

/// Widest register tile, in tiles of 2×2 outputs (the stack buffers' size).
const MAX_XT: usize = 64;

/// Fewest input and output channels, and output pixels, for which the transforms pay: below
/// them the 16 small products per tile and the transforms cost more than the 36 multiply-adds
/// they replace (`cargo bench --bench denoiser -- winograd`: 20→20 on 14×14 runs 15 µs direct,
/// 20 µs here; 64→64 on 8×8 51 → 36 µs; 64→64 on 32×32 536 → 374 µs, AVX-512).
pub const MIN_CHANNELS: usize = 32;
pub const MIN_PIXELS: usize = 64;

/// Which algorithm runs the 3×3 stride-1 convolutions our kernels take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// Winograd where it pays ([`suits`]), the direct kernel elsewhere.
    Auto,
    /// The direct kernel everywhere.
    Direct,
    /// Winograd for every 3×3 stride-1 layer, however small (A/B runs and tests).
    Winograd,
}

impl ConvAlgorithm {
    pub const NAMES: &'static str = "auto, direct, winograd";

    /// `EDGE_SAMPLE_CONV`, else `Auto`; an unknown value is reported once and replaced by
    /// `Auto`.
    pub fn selected() -> ConvAlgorithm {
        static CHOICE: OnceLock<ConvAlgorithm> = OnceLock::new();
        *CHOICE.get_or_init(|| {
            let var = std::env::var("EDGE_SAMPLE_CONV").unwrap_or_default();
            match var.as_str() {
                "" | "auto" => ConvAlgorithm::Auto,
                "direct" => ConvAlgorithm::Direct,
                "winograd" => ConvAlgorithm::Winograd,
                _ => {
                    eprintln!(
                        "warning: EDGE_SAMPLE_CONV={var:?} is not one of {}; using auto",
                        ConvAlgorithm::NAMES
                    );
                    ConvAlgorithm::Auto
                }
            }
        })
    }

    /// Whether a stride-1 convolution of `shape` runs by Winograd.
    pub fn uses_winograd(self, shape: &ConvShape) -> bool {
        let applies = shape.is_valid() && shape.kh == 3 && shape.kw == 3;
        match self {
            ConvAlgorithm::Auto => applies && suits(shape),
            ConvAlgorithm::Direct => false,
            ConvAlgorithm::Winograd => applies,
        }
    }
}

/// Whether a 3×3 stride-1 convolution is large enough in channels and pixels to gain from
/// Winograd.
pub fn suits(shape: &ConvShape) -> bool {
    shape.ci >= MIN_CHANNELS
        && shape.co >= MIN_CHANNELS
        && shape.out_h() * shape.out_w() >= MIN_PIXELS
}

/// A 3×3 stride-1 convolution with its kernels transformed for F(2×2, 3×3).
#[derive(Debug, Clone, PartialEq)]
pub struct WinogradConv {
    pub shape: ConvShape,
    pub kernels: Kernels,
    cb: usize,
    xt: usize,
    /// `[ξ][co / CB][ci][CB]`: `U = G·g·Gᵀ` at position ξ = 4·row + column, per channel block
    /// as the direct kernel's 1×1 weights; output channels padded with zeros.
    u: Vec<f32>,
    /// Per output channel, padded like `u`.
    bias: Vec<f32>,
}

impl WinogradConv {
    /// `weights` in OIHW order (`co × ci × 3 × 3`), `bias` per output channel (or empty).
    /// `kernels` must be one of ours (not `Tract`) and supported by this CPU.
    pub fn new(shape: ConvShape, weights: &[f32], bias: &[f32], kernels: Kernels) -> Self {
        // The tile that wastes least on padding channels and tiles of one image (ties: the
        // first listed, which loads least per multiply-add).
        let tiles = tiles_per_image(&shape);
        let tile = *kernels
            .tiles()
            .iter()
            .min_by_key(|(cb, xt)| shape.co.div_ceil(*cb) * cb * tiles.div_ceil(*xt) * xt)
            .unwrap();
        Self::with_tile(shape, weights, bias, kernels, tile)
    }

    /// As [`WinogradConv::new`] with a given tile, one of `kernels`' tiles.
    pub fn with_tile(
        shape: ConvShape,
        weights: &[f32],
        bias: &[f32],
        kernels: Kernels,
        (cb, xt): (usize, usize),
    ) -> Self {
        assert!(
            shape.is_valid() && shape.kh == 3 && shape.kw == 3,
            "not a 3×3 convolution: {shape:?}"
        );
        assert!(
            kernels != Kernels::Tract && kernels.is_supported(),
            "{kernels:?}"
        );
        assert!(
            kernels.tiles().contains(&(cb, xt)) && xt <= MAX_XT,
            "{kernels:?} has no tile {cb}×{xt}"
        );
        let ConvShape { ci, co, .. } = shape;
        assert_eq!(weights.len(), co * ci * 9, "weights for {shape:?}");
        assert!(bias.is_empty() || bias.len() == co, "bias for {shape:?}");
        let blocks = co.div_ceil(cb);
        let mut u = vec![0.0f32; XI * blocks * ci * cb];
        for o in 0..co {
            for c in 0..ci {
                let g = &weights[(o * ci + c) * 9..][..9];
                for (xi, v) in transform_kernel(g).into_iter().enumerate() {
                    u[((xi * blocks + o / cb) * ci + c) * cb + o % cb] = v;
                }
            }
        }
        let mut b = vec![0.0f32; blocks * cb];
        b[..bias.len()].copy_from_slice(bias);
        WinogradConv {
            shape,
            kernels,
            cb,
            xt,
            u,
            bias: b,
        }
    }

    /// Floats from one ξ's `ci × XT` transformed patches to the next's in a chunk's buffer:
    /// 16 more than needed, so that the 16 rows a patch is written to are not a multiple of
    /// 4 KiB apart (measured: the stores' 4 KiB aliasing slowed the transform ~2×).
    fn xi_stride(&self) -> usize {
        self.shape.ci * self.xt + 16
    }

    /// The register tile of the products: (output channels, tiles of 2×2 outputs).
    pub fn tile(&self) -> (usize, usize) {
        (self.cb, self.xt)
    }

    /// `x`: `n × ci × h × w`; `out`: `n × co × out_h × out_w`; `relu`: max(·, 0) on the way out;
    /// `bias`: computed at run time, replacing the packed one: `co` values for every image, or
    /// `n × co`.
    pub fn run_with_bias(&self, x: &[f32], out: &mut [f32], relu: bool, bias: Option<&[f32]>) {
        self.run_on(None, x, out, relu, bias)
    }

    /// As [`WinogradConv::run_with_bias`], split between the threads of `team`. Same bits as
    /// one thread: every output is computed whole by one thread, in the same order.
    pub fn run_on(
        &self,
        team: Option<&Team>,
        x: &[f32],
        out: &mut [f32],
        relu: bool,
        bias: Option<&[f32]>,
    ) {
        self.run_split(team, TEAM_MIN_MACS, x, out, relu, bias)
    }

    /// [`WinogradConv::run_on`], splitting layers of at least `min_macs` multiply-adds.
    fn run_split(
        &self,
        team: Option<&Team>,
        min_macs: usize,
        x: &[f32],
        out: &mut [f32],
        relu: bool,
        bias: Option<&[f32]>,
    ) {
        let s = &self.shape;
        let n = s.images(x, out, bias);
        let chunks = (n * tiles_per_image(s)).div_ceil(self.xt);
        let blocks = self.bias.len() / self.cb;
        let macs = n * tiles_per_image(s) * XI * s.ci * s.co;
        let team = team.filter(|t| t.threads() > 1 && macs >= min_macs);
        let threads = team.map_or(1, Team::threads);
        let planes = n * s.ci;
        let ed_len = planes * 2 * self.half_plane();
        EVEN_ODD.with(|ed| {
            let mut ed = ed.borrow_mut();
            if ed.len() < ed_len {
                ed.resize(ed_len, 0.0);
            }
            let ed = &mut ed[..ed_len];
            // Every input plane zero-bordered and split into even and odd columns.
            let dst = SharedMut(ed.as_mut_ptr());
            let prep = |p: usize, parts: usize| {
                // Safety: disjoint planes per part.
                unsafe { self.split_columns(x, dst, share(planes, p, parts)) }
            };
            match team {
                Some(team) => team.run(threads, &|p| prep(p, threads)),
                None => prep(0, 1),
            }
            let job = Job {
                conv: self,
                ed,
                out: SharedMut(out.as_mut_ptr()),
                relu,
                bias,
                n,
            };
            // Per thread: a chunk's transformed patches, and its products.
            let (v_len, acc_len) = (XI * self.xi_stride(), XI * self.bias.len() * self.xt);
            let with_v = |f: &mut dyn FnMut(&mut [f32], &mut [f32])| {
                BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    if b.len() < v_len + acc_len {
                        b.resize(v_len + acc_len, 0.0);
                    }
                    let (v, acc) = b.split_at_mut(v_len);
                    f(v, &mut acc[..acc_len])
                })
            };
            match team {
                // Whole chunks per thread when they share out evenly enough.
                Some(team) if chunks.is_multiple_of(threads) || chunks >= 4 * threads => {
                    team.run(threads, &|p| {
                        with_v(&mut |v, acc| {
                            for chunk in share(chunks, p, threads) {
                                job.transform_input(chunk, v);
                                // Safety: this part's chunks only.
                                unsafe { job.multiply(v, acc, chunk, 0..blocks) };
                            }
                        })
                    });
                }
                // Otherwise the caller transforms each chunk and the team splits its blocks.
                Some(team) => with_v(&mut |v, acc| {
                    for chunk in 0..chunks {
                        job.transform_input(chunk, v);
                        let v: &[f32] = v;
                        let accs = SharedMut(acc.as_mut_ptr());
                        // Safety: disjoint channel blocks of this chunk per part, each with
                        // its own part of `acc`.
                        team.run(threads, &|p| unsafe {
                            let part = share(blocks, p, threads);
                            let acc = std::slice::from_raw_parts_mut(
                                accs.at(XI * part.start * self.cb * self.xt),
                                XI * part.len() * self.cb * self.xt,
                            );
                            job.multiply(v, acc, chunk, part)
                        });
                    }
                }),
                None => with_v(&mut |v, acc| {
                    for chunk in 0..chunks {
                        job.transform_input(chunk, v);
                        // Safety: one thread writes everything.
                        unsafe { job.multiply(v, acc, chunk, 0..blocks) };
                    }
                }),
            }
        })
    }

    /// Rows and columns of an input plane with its zero border, as the tiles read it: 2·th + 2
    /// rows of 2·tw + 2 (≥ the padded size; the extra is zeros under odd-sized outputs).
    fn bordered(&self) -> (usize, usize) {
        let s = &self.shape;
        (2 * s.out_h().div_ceil(2) + 2, 2 * s.out_w().div_ceil(2) + 2)
    }

    /// Floats of the even (or the odd) columns of one bordered plane.
    fn half_plane(&self) -> usize {
        let (rows, cols) = self.bordered();
        rows * cols / 2
    }

    /// For planes `planes` (image · ci + channel) of `x`: the bordered plane's even columns
    /// then its odd ones, at `dst` + plane · 2 · half_plane.
    ///
    /// # Safety
    /// `dst` holds every plane's; no other thread writes these planes meanwhile.
    unsafe fn split_columns(&self, x: &[f32], dst: SharedMut, planes: Range<usize>) {
        // Safety: the kernels were checked to run on this CPU at load; the rest is the
        // caller's.
        unsafe {
            match self.kernels {
                #[cfg(target_arch = "x86_64")]
                Kernels::Avx512 => self.split_columns_avx512(x, dst, planes),
                #[cfg(target_arch = "x86_64")]
                Kernels::Avx2 => self.split_columns_avx2(x, dst, planes),
                _ => self.split_columns_impl(x, dst, planes),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn split_columns_avx512(&self, x: &[f32], dst: SharedMut, planes: Range<usize>) {
        unsafe { self.split_columns_impl(x, dst, planes) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn split_columns_avx2(&self, x: &[f32], dst: SharedMut, planes: Range<usize>) {
        unsafe { self.split_columns_impl(x, dst, planes) }
    }

    #[inline(always)]
    unsafe fn split_columns_impl(&self, x: &[f32], dst: SharedMut, planes: Range<usize>) {
        let s = &self.shape;
        let (half, hc) = (self.half_plane(), self.bordered().1 / 2);
        let left = s.pad[1];
        for plane in planes {
            let src = &x[plane * s.h * s.w..][..s.h * s.w];
            // Safety: this plane's 2 · half floats (caller).
            let out = unsafe { std::slice::from_raw_parts_mut(dst.at(plane * 2 * half), 2 * half) };
            out.fill(0.0);
            let (even, odd) = out.split_at_mut(half);
            for (y, xr) in src.chunks_exact(s.w).enumerate() {
                let r = y + s.pad[0];
                let (er, or) = (&mut even[r * hc..][..hc], &mut odd[r * hc..][..hc]);
                // Input column i is bordered column left + i: even[(left + i) / 2] when that
                // is even, else odd[(left + i) / 2]. Walk the input in pairs starting at an
                // even bordered column.
                let skip = left % 2;
                if skip == 1 {
                    or[left / 2] = xr[0];
                }
                let m0 = left.div_ceil(2);
                let pairs = xr[skip..].chunks_exact(2);
                let tail = pairs.remainder();
                for ((e, o), p) in er[m0..].iter_mut().zip(&mut or[m0..]).zip(pairs) {
                    *e = p[0];
                    *o = p[1];
                }
                if let [last] = tail {
                    er[m0 + (s.w - skip) / 2] = *last;
                }
            }
        }
    }
}

/// Tiles of 2×2 outputs per image.
fn tiles_per_image(s: &ConvShape) -> usize {
    s.out_h().div_ceil(2) * s.out_w().div_ceil(2)
}

/// `G·g·Gᵀ` of one 3×3 kernel (row-major), as 16 values row-major, computed in f64 and rounded
/// once. G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
fn transform_kernel(g: &[f32]) -> [f32; XI] {
    let g = |r: usize, c: usize| g[r * 3 + c] as f64;
    let gt = |v: [f64; 3]| {
        [
            v[0],
            (v[0] + v[1] + v[2]) / 2.0,
            (v[0] - v[1] + v[2]) / 2.0,
            v[2],
        ]
    };
    // G·g: 4 rows of 3, column by column.
    let cols: [[f64; 4]; 3] = std::array::from_fn(|c| gt([g(0, c), g(1, c), g(2, c)]));
    let mut u = [0.0f32; XI];
    for r in 0..4 {
        let row = gt([cols[0][r], cols[1][r], cols[2][r]]);
        for (c, v) in row.into_iter().enumerate() {
            u[r * 4 + c] = v as f32;
        }
    }
    u
}

/// One call's data, shared by the parts of a team.
struct Job<'a> {
    conv: &'a WinogradConv,
    /// Every input plane bordered and split into even and odd columns
    /// ([`WinogradConv::split_columns`]).
    ed: &'a [f32],
    out: SharedMut,
    relu: bool,
    bias: Option<&'a [f32]>,
    n: usize,
}

/// A run of tiles in one tile row of one image: `len` tiles from column `tx0`, at position
/// `pos` of the chunk.
#[derive(Clone, Copy, Default)]
struct Run {
    image: usize,
    ty: usize,
    tx0: usize,
    len: usize,
    pos: usize,
}

impl<'a> Job<'a> {
    /// The chunk's tiles, row run by row run.
    fn runs(&self, chunk: usize) -> impl Iterator<Item = Run> {
        let s = &self.conv.shape;
        let xt = self.conv.xt;
        let tw = s.out_w().div_ceil(2);
        let per_image = tiles_per_image(s);
        let g0 = chunk * xt;
        let g1 = (g0 + xt).min(self.n * per_image);
        let mut g = g0;
        std::iter::from_fn(move || {
            (g < g1).then(|| {
                let (image, t) = (g / per_image, g % per_image);
                let (ty, tx0) = (t / tw, t % tw);
                let len = (tw - tx0).min(g1 - g);
                let run = Run {
                    image,
                    ty,
                    tx0,
                    len,
                    pos: g - g0,
                };
                g += len;
                run
            })
        })
    }

    /// `v[ξ][c][i]` = `Bᵀ·d·B` at ξ of the chunk's tile i's 4×4 patch of channel c (zero
    /// outside the image). Positions past the chunk's last tile are left as they were (their
    /// products are computed and dropped).
    fn transform_input(&self, chunk: usize, v: &mut [f32]) {
        match self.conv.kernels {
            // Safety: the kernels were checked to run on this CPU at load.
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx512 => unsafe { self.transform_input_avx512(chunk, v) },
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2 => unsafe { self.transform_input_avx2(chunk, v) },
            _ => self.transform_input_impl(chunk, v),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_input_avx512(&self, chunk: usize, v: &mut [f32]) {
        self.transform_input_impl(chunk, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transform_input_avx2(&self, chunk: usize, v: &mut [f32]) {
        self.transform_input_impl(chunk, v)
    }

    #[inline(always)]
    fn transform_input_impl(&self, chunk: usize, v: &mut [f32]) {
        let ed: &'a [f32] = self.ed;
        let conv = self.conv;
        let (ci, xt, xi_stride) = (conv.shape.ci, conv.xt, conv.xi_stride());
        let half = conv.half_plane();
        let cols = conv.bordered().1 / 2;
        for run in self.runs(chunk) {
            for c in 0..ci {
                let plane = &ed[(run.image * ci + c) * 2 * half..][..2 * half];
                let (even, odd) = plane.split_at(half);
                // Tile tx's patch rows 2·ty .. 2·ty + 3, columns 2·tx .. 2·tx + 3: even[tx],
                // odd[tx], even[tx + 1], odd[tx + 1] of each bordered row.
                let rows = |half: &'a [f32]| -> [&'a [f32]; 4] {
                    std::array::from_fn(|r| {
                        &half[(2 * run.ty + r) * cols + run.tx0..][..run.len + 1]
                    })
                };
                let (even, odd) = (rows(even), rows(odd));
                let at = c * xt + run.pos;
                // Blocks of 16, 8, 4 and 1 tiles: fixed-size arrays the compiler turns into
                // whole vectors (runs are 4–16 tiles long, too short for a vectorised loop).
                let mut i = 0;
                while i < run.len {
                    i += match run.len - i {
                        16.. => patches_to_v::<16>(&even, &odd, i, v, at + i, xi_stride),
                        8.. => patches_to_v::<8>(&even, &odd, i, v, at + i, xi_stride),
                        4.. => patches_to_v::<4>(&even, &odd, i, v, at + i, xi_stride),
                        _ => patches_to_v::<1>(&even, &odd, i, v, at + i, xi_stride),
                    };
                }
            }
        }
    }

    /// The products of the chunk's transformed patches `v` for channel blocks `blocks`,
    /// transformed back into the output with bias and ReLU.
    ///
    /// # Safety
    /// No other thread writes these blocks' outputs of this chunk's tiles meanwhile.
    unsafe fn multiply(&self, v: &[f32], acc: &mut [f32], chunk: usize, blocks: Range<usize>) {
        // Safety: the kernels were checked to run on this CPU at load; the rest is the
        // caller's.
        unsafe {
            match self.conv.kernels {
                #[cfg(target_arch = "x86_64")]
                Kernels::Avx512 => self.multiply_avx512(v, acc, chunk, blocks),
                #[cfg(target_arch = "x86_64")]
                Kernels::Avx2 => self.multiply_avx2(v, acc, chunk, blocks),
                _ => self.multiply_impl(v, acc, chunk, blocks),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn multiply_avx512(
        &self,
        v: &[f32],
        acc: &mut [f32],
        chunk: usize,
        blocks: Range<usize>,
    ) {
        unsafe { self.multiply_impl(v, acc, chunk, blocks) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn multiply_avx2(&self, v: &[f32], acc: &mut [f32], chunk: usize, blocks: Range<usize>) {
        unsafe { self.multiply_impl(v, acc, chunk, blocks) }
    }

    #[inline(always)]
    unsafe fn multiply_impl(&self, v: &[f32], acc: &mut [f32], chunk: usize, blocks: Range<usize>) {
        let conv = self.conv;
        let s = &conv.shape;
        let (cb, xt, ci) = (conv.cb, conv.xt, s.ci);
        let all_blocks = conv.bias.len() / cb;
        let (ho, wo) = (s.out_h(), s.out_w());
        let tile = packed_tile_fn(conv.kernels, (cb, xt));
        let geo = TileGeometry {
            plane: xt,
            row: xt,
            ci,
            kh: 1,
            kw: 1,
            w_tap: cb,
            w_ch: 1,
        };
        static ZEROS: [f32; TILE_FLOATS] = [0.0; TILE_FLOATS];
        let mut y = [[0.0f32; MAX_XT]; 4];
        debug_assert!(cb * xt <= TILE_FLOATS && cb <= TILE_FLOATS);
        debug_assert!(v.len() >= XI * conv.xi_stride());
        let runs = self.runs(chunk).collect::<RunList>();
        // The products ξ by ξ, every block of the range: one ξ's patches (ci × xt) and
        // weights stay in L1 while the blocks use them (block by block, all 16 ξ, read the
        // chunk's patches from L2 once per block: measured 1.5× slower on 64→64 32×32).
        // `acc[(ξ · blocks + b) · cb · xt ..]` holds block b's tile at ξ.
        let nb = blocks.len();
        debug_assert!(acc.len() >= XI * nb * cb * xt);
        for xi in 0..XI {
            for (b, blk) in blocks.clone().enumerate() {
                // Safety: reads ci × xt floats of v at ξ and ci × cb weights, writes cb × xt
                // floats of acc; the kernels were checked to run on this CPU at load.
                unsafe {
                    tile(
                        v[xi * conv.xi_stride()..].as_ptr(),
                        &geo,
                        conv.u[(xi * all_blocks + blk) * ci * cb..].as_ptr(),
                        ZEROS.as_ptr(),
                        acc[(xi * nb + b) * cb * xt..].as_mut_ptr(),
                    )
                };
            }
        }
        for (bi, blk) in blocks.enumerate() {
            for j in 0..cb.min(s.co - blk * cb) {
                let o = blk * cb + j;
                // Aᵀ·M·A for every tile of the chunk: y[0], y[1] the top row of each 2×2
                // block, y[2], y[3] the bottom one.
                let mut m: [&[f32]; XI] = [&[]; XI];
                for (xi, mx) in m.iter_mut().enumerate() {
                    *mx = &acc[((xi * nb + bi) * cb + j) * xt..][..xt];
                }
                for i in 0..xt {
                    // Column l of Aᵀ·M: (m0 + m1 + m2, m1 − m2 − m3) down column l.
                    let col = |l: usize| {
                        let (m0, m1, m2, m3) = (m[l][i], m[4 + l][i], m[8 + l][i], m[12 + l][i]);
                        (m0 + m1 + m2, m1 - m2 - m3)
                    };
                    let ((t0, b0), (t1, b1), (t2, b2), (t3, b3)) = (col(0), col(1), col(2), col(3));
                    y[0][i] = t0 + t1 + t2;
                    y[1][i] = t1 - t2 - t3;
                    y[2][i] = b0 + b1 + b2;
                    y[3][i] = b1 - b2 - b3;
                }
                for run in runs.iter() {
                    let b = match self.bias {
                        None => conv.bias[o],
                        Some(b) if b.len() == s.co => b[o],
                        Some(b) => b[run.image * s.co + o],
                    };
                    let plane = (run.image * s.co + o) * ho * wo;
                    for (a, [left, right]) in [[0, 1], [2, 3]].into_iter().enumerate() {
                        let oy = 2 * run.ty + a;
                        if oy >= ho {
                            continue;
                        }
                        let x0 = 2 * run.tx0;
                        let width = (2 * run.len).min(wo - x0);
                        // Safety: row oy of output channel o of this image, columns of this
                        // run's tiles: this part's (caller).
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(self.out.at(plane + oy * wo + x0), width)
                        };
                        let yl = &y[left][run.pos..][..run.len];
                        let yr = &y[right][run.pos..][..run.len];
                        let pairs = dst.chunks_exact_mut(2);
                        let last = (width % 2 == 1).then(|| yl[run.len - 1] + b);
                        if self.relu {
                            for ((d, l), r) in pairs.zip(yl).zip(yr) {
                                d[0] = (l + b).max(0.0);
                                d[1] = (r + b).max(0.0);
                            }
                        } else {
                            for ((d, l), r) in pairs.zip(yl).zip(yr) {
                                d[0] = l + b;
                                d[1] = r + b;
                            }
                        }
                        if let Some(v) = last {
                            dst[width - 1] = if self.relu { v.max(0.0) } else { v };
                        }
                    }
                }
            }
        }
    }
}

/// A chunk's runs (at most one per tile).
struct RunList {
    runs: [Run; MAX_XT],
    len: usize,
}

impl FromIterator<Run> for RunList {
    fn from_iter<I: IntoIterator<Item = Run>>(iter: I) -> Self {
        let mut list = RunList {
            runs: [Run::default(); MAX_XT],
            len: 0,
        };
        for run in iter {
            list.runs[list.len] = run;
            list.len += 1;
        }
        list
    }
}

impl RunList {
    fn iter(&self) -> impl Iterator<Item = &Run> {
        self.runs[..self.len].iter()
    }
}

/// `Bᵀ·d·B` of L consecutive tiles of one channel, stored at `v[first + ξ·stride ..][..L]`:
/// `even[r]` / `odd[r]` are patch row r's even / odd bordered columns from the run's first
/// tile, tile `i0 + j`'s columns being even[i0 + j], odd[i0 + j], even[i0 + j + 1],
/// odd[i0 + j + 1]. The patch's rows are combined first (d0 − d2, d1 + d2, d2 − d1, d1 − d3),
/// then each result's columns the same way: every path and CPU gives the same bits. Returns L.
#[inline(always)]
fn patches_to_v<const L: usize>(
    even: &[&[f32]; 4],
    odd: &[&[f32]; 4],
    i0: usize,
    v: &mut [f32],
    first: usize,
    stride: usize,
) -> usize {
    // d[r][q]: patch row r, column q, L tiles.
    let mut d = [[[0.0f32; L]; 4]; 4];
    for r in 0..4 {
        let (e, o) = (&even[r][i0..][..L + 1], &odd[r][i0..][..L + 1]);
        d[r][0].copy_from_slice(&e[..L]);
        d[r][1].copy_from_slice(&o[..L]);
        d[r][2].copy_from_slice(&e[1..]);
        d[r][3].copy_from_slice(&o[1..]);
    }
    let mut t = [[[0.0f32; L]; 4]; 4];
    for q in 0..4 {
        for j in 0..L {
            t[0][q][j] = d[0][q][j] - d[2][q][j];
            t[1][q][j] = d[1][q][j] + d[2][q][j];
            t[2][q][j] = d[2][q][j] - d[1][q][j];
            t[3][q][j] = d[1][q][j] - d[3][q][j];
        }
    }
    for (k, tk) in t.iter().enumerate() {
        let mut u = [[0.0f32; L]; 4];
        for j in 0..L {
            u[0][j] = tk[0][j] - tk[2][j];
            u[1][j] = tk[1][j] + tk[2][j];
            u[2][j] = tk[2][j] - tk[1][j];
            u[3][j] = tk[1][j] - tk[3][j];
        }
        for (l, ul) in u.iter().enumerate() {
            v[first + (4 * k + l) * stride..][..L].copy_from_slice(ul);
        }
    }
    L
}

thread_local! {
    /// One chunk's transformed patches and products: grows to the largest layer once per
    /// thread.
    static BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Every input plane of a call, bordered and split into even and odd columns (the
    /// calling thread's, read by its team).
    static EVEN_ODD: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denoiser::kernels::conv_reference;
    use crate::denoiser::kernels::tests::values;

    /// Max |winograd − reference| per output, relative to the output's magnitude bound
    /// Σ|x||w| + |b|. The transforms add up to 4 inputs (Bᵀ·d·B: |V| ≤ 4·max|d|), the kernel
    /// transform scales by up to 9/4, and the inverse adds 9 products' sums, so each output's
    /// rounding is about 4·9/4·9 ≈ 80 ulps of the bound in the worst case where the direct
    /// kernel's is a few: 1e-5 relative is ≈ 84 ulps (f32 ε = 1.19e-7).
    const WINOGRAD_REL_TOL: f64 = 1e-5;

    fn shapes() -> Vec<ConvShape> {
        let s = |ci, co, h, w, p: [usize; 4]| ConvShape {
            ci,
            co,
            h,
            w,
            kh: 3,
            kw: 3,
            pad: p,
        };
        vec![
            s(16, 16, 8, 8, [1; 4]),       // one chunk of 16 tiles
            s(32, 20, 32, 32, [1; 4]),     // 256 tiles, a partial channel block
            s(17, 40, 7, 9, [1; 4]),       // odd sizes: the last tiles' second row/column dropped
            s(24, 16, 14, 14, [1; 4]),     // 49 tiles: a partial chunk
            s(16, 24, 6, 70, [1; 4]),      // tile rows longer than the widest chunk
            s(16, 16, 9, 11, [0; 4]),      // no padding
            s(16, 18, 5, 6, [2, 0, 1, 2]), // asymmetric padding
        ]
    }

    fn check(shape: ConvShape, n: usize, kernels: Kernels, tile: (usize, usize)) {
        let x = values(n * shape.ci * shape.h * shape.w, 1);
        let w = values(shape.co * shape.ci * 9, 2);
        let b = values(shape.co, 3);
        let want = conv_reference(&shape, &x, &w, &b);
        let conv = WinogradConv::with_tile(shape, &w, &b, kernels, tile);
        let mut got = vec![f32::NAN; want.len()];
        conv.run_with_bias(&x, &mut got, false, None);
        let bound = (shape.ci * 9 + 1) as f64;
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| ((*g - *w) as f64).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= WINOGRAD_REL_TOL * bound,
            "{shape:?} n={n} {kernels:?} {tile:?}: worst {worst:e} (bound {bound})"
        );
    }

    #[test]
    fn every_tile_of_every_kernel_set_matches_the_reference() {
        for kernels in Kernels::all_supported() {
            for &tile in kernels.tiles() {
                for s in shapes() {
                    check(s, 1, kernels, tile);
                }
                // Chunks that span images.
                check(shapes()[0], 5, kernels, tile);
                check(shapes()[2], 3, kernels, tile);
            }
        }
    }

    #[test]
    fn the_kernel_transform_is_g_g_gt() {
        // A delta at (1, 1) gives G's middle column (0, ½, ½, 0) squared.
        let mut g = [0.0f32; 9];
        g[4] = 1.0;
        let u = transform_kernel(&g);
        let col = [0.0, 0.5, -0.5, 0.0];
        for r in 0..4 {
            for c in 0..4 {
                assert_eq!(u[r * 4 + c], col[r] * col[c], "({r}, {c})");
            }
        }
        // All ones: G·1 = (1, 3/2, 1/2, 1) on each side.
        let u = transform_kernel(&[1.0; 9]);
        let s = [1.0, 1.5, 0.5, 1.0];
        for r in 0..4 {
            for c in 0..4 {
                assert_eq!(u[r * 4 + c], s[r] * s[c], "({r}, {c})");
            }
        }
    }

    #[test]
    fn relu_and_run_time_bias_per_image() {
        let s = shapes()[2];
        let n = 2;
        let x = values(n * s.ci * s.h * s.w, 31);
        let w = values(s.co * s.ci * 9, 32);
        let b = values(n * s.co, 33);
        let conv = WinogradConv::new(s, &w, &[], Kernels::best());
        let mut got = vec![f32::NAN; n * s.co * s.out_h() * s.out_w()];
        conv.run_with_bias(&x, &mut got, true, Some(&b));
        let bound = (s.ci * 9 + 1) as f64;
        let image = s.ci * s.h * s.w;
        let image_out = s.co * s.out_h() * s.out_w();
        for i in 0..n {
            let want = conv_reference(&s, &x[i * image..][..image], &w, &b[i * s.co..][..s.co]);
            for (g, w) in got[i * image_out..][..image_out].iter().zip(&want) {
                let w = w.max(0.0);
                assert!(
                    ((*g - w) as f64).abs() <= WINOGRAD_REL_TOL * bound,
                    "{g} vs {w}"
                );
                assert!(*g >= 0.0);
            }
        }
    }

    #[test]
    fn simd_kernel_sets_and_teams_give_the_same_bits() {
        let team = Team::new(3).unwrap();
        for s in shapes() {
            for n in [1, 4] {
                let x = values(n * s.ci * s.h * s.w, 41);
                let w = values(s.co * s.ci * 9, 42);
                let b = values(s.co, 43);
                let len = n * s.co * s.out_h() * s.out_w();
                let mut first: Option<Vec<f32>> = None;
                for k in Kernels::all_supported()
                    .into_iter()
                    .filter(|k| *k != Kernels::Portable)
                {
                    for &tile in k.tiles() {
                        let conv = WinogradConv::with_tile(s, &w, &b, k, tile);
                        let mut one = vec![0.0; len];
                        conv.run_with_bias(&x, &mut one, false, None);
                        let mut split = vec![0.0; len];
                        // Forced split: below the size at which a team is used by default.
                        conv.run_split(Some(&team), 0, &x, &mut split, false, None);
                        assert!(one == split, "{s:?} n={n} {k:?} {tile:?}: team differs");
                        match &first {
                            None => first = Some(one),
                            Some(f) => assert!(*f == one, "{s:?} n={n} {k:?} {tile:?} differs"),
                        }
                    }
                }
            }
        }
    }
}
