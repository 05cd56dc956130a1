//! 3×3 stride-1 convolutions by Winograd's minimal filtering, F(2×2, 3×3) and F(4×4, 3×3)
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each m×m block of outputs comes from the (m+2)×(m+2) input patch under it: the patch is
//! transformed (`V = Bᵀ·d·B`), multiplied element by element with the transformed kernel
//! (`U = G·g·Gᵀ`, computed once at load), summed over input channels, and transformed back
//! (`Y = Aᵀ·M·A`). The sum over input channels at each of the (m+2)² transformed positions ξ is
//! a matrix product (`co × ci` by `ci × tiles`), run on the same register tiles as the direct
//! kernel's 1×1 layers: F(2×2) does 16 multiply-adds per 4 outputs instead of 36 (additions
//! only in its transforms), F(4×4) 36 per 16 instead of 144 (small integer factors in its
//! transforms, a few more ulps of rounding). [`OutputBlock::for_shape`] takes F(4×4) where a
//! plane's outputs are at least 16×16.
//!
//! Each call first copies every input plane zero-bordered and split into its m column phases
//! (bordered column j to phase j mod m), so that a run of tiles reads each patch column as a
//! plain vector. Tiles are numbered across the whole batch (image, tile row, tile column) and
//! cut into chunks of XT, the register tile's width: a chunk's patches are transformed into a
//! buffer (`(m+2)² × ci × XT`), the products run ξ by ξ over every block of CB output channels
//! (one ξ's patches and weights stay in L1 meanwhile), and each block's results are transformed
//! back into the output, adding the bias and applying ReLU. A team splits the planes, then the
//! chunks (or a lone chunk's input channels for the transform and its channel blocks for the
//! products).
//!
//! Every kernel set runs the same operations in the same order in the transforms (no
//! contraction into fused multiply-adds) and the same fused multiply-adds in the products, so
//! AVX2, AVX-512 and NEON give the same bits, as the direct kernel does; the results differ
//! from the direct kernel's by rounding (see the tests' bound). [`ConvAlgorithm`] picks:
//! `Auto` (where it pays), `Direct` (never), `Winograd`, `WinogradF2`, `WinogradF4` (every 3×3
//! stride-1 layer; the block by size, or forced).

use std::cell::RefCell;
use std::ops::Range;

use crate::conv::shape::ConvShape;
use crate::conv::shuffle::{deinterleave, store_interleaved};
use crate::isa::{dispatch, Isa};
use crate::scratch::aligned;
use crate::team::{share, Team, TEAM_MIN_MACS};
use crate::tile::{packed_tile_fn, TileGeometry, TILE_FLOATS};
use crate::view::DisjointMut;

/// Most transformed positions per tile (F(4×4, 3×3)'s 6×6 patch).
const MAX_XI: usize = 36;

/// Widest register tile, in Winograd tiles (the stack buffers' size).
const MAX_XT: usize = 64;

/// Fewest input and output channels, and output pixels, for which the transforms pay: below
/// them the small products per tile and the transforms cost more than the 9 multiply-adds per
/// output they replace (`cargo bench -p edge-sample-kernels --bench layers -- winograd`:
/// 20→20 on 14×14 runs 15 µs direct, 20 µs by F(2×2); 64→64 on 8×8 51 → 36 µs; 64→64 on
/// 32×32 536 → 374 µs, AVX-512).
pub const MIN_CHANNELS: usize = 32;
pub const MIN_PIXELS: usize = 64;

/// Fewest output rows and columns for which [`OutputBlock::F4x4`] beats F(2×2) (measured in
/// `cargo bench -p edge-sample-kernels --bench layers -- winograd`; on 8×8 the 4 tiles per
/// image leave most of a register tile's columns empty).
pub const MIN_F4_SIDE: usize = 16;

/// The block of outputs one Winograd tile computes: F(m×m, 3×3) from an (m+2)×(m+2) patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputBlock {
    /// F(2×2, 3×3): 16 products per 4 outputs (2.25× fewer than direct); transforms of
    /// additions only.
    F2x2,
    /// F(4×4, 3×3): 36 products per 16 outputs (4× fewer than direct); transforms with small
    /// integer factors, a few more ulps of rounding.
    F4x4,
}

impl OutputBlock {
    /// Side of the output block.
    pub const fn m(self) -> usize {
        match self {
            OutputBlock::F2x2 => 2,
            OutputBlock::F4x4 => 4,
        }
    }

    /// Side of the input patch (m + 2).
    const fn patch(self) -> usize {
        self.m() + 2
    }

    /// Transformed positions per tile.
    const fn xi(self) -> usize {
        self.patch() * self.patch()
    }

    /// The larger block where a plane's outputs fill its tiles well.
    pub fn for_shape(shape: &ConvShape) -> OutputBlock {
        if shape.out_h() >= MIN_F4_SIDE && shape.out_w() >= MIN_F4_SIDE {
            OutputBlock::F4x4
        } else {
            OutputBlock::F2x2
        }
    }

    /// "F(2×2, 3×3)" or "F(4×4, 3×3)".
    pub fn describe(self) -> &'static str {
        match self {
            OutputBlock::F2x2 => "F(2×2, 3×3)",
            OutputBlock::F4x4 => "F(4×4, 3×3)",
        }
    }

    /// The kernel transform's G (patch × 3).
    fn g(self) -> &'static [[f64; 3]] {
        const G2: [[f64; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        const G4: [[f64; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        match self {
            OutputBlock::F2x2 => &G2,
            OutputBlock::F4x4 => &G4,
        }
    }
}

/// Which algorithm runs the 3×3 stride-1 convolutions our kernels take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// Winograd where it pays ([`suits`]), with the block [`OutputBlock::for_shape`] picks;
    /// the direct kernel elsewhere.
    Auto,
    /// The direct kernel everywhere.
    Direct,
    /// Winograd for every 3×3 stride-1 layer, however small, block by size (A/B runs, tests).
    Winograd,
    /// Winograd F(2×2, 3×3) for every 3×3 stride-1 layer.
    WinogradF2,
    /// Winograd F(4×4, 3×3) for every 3×3 stride-1 layer.
    WinogradF4,
}

impl ConvAlgorithm {
    pub const NAMES: &'static str = "auto, direct, winograd, winograd-f2, winograd-f4";

    /// The Winograd block a stride-1 convolution of `shape` runs with, or `None` for the
    /// direct kernel.
    pub fn winograd(self, shape: &ConvShape) -> Option<OutputBlock> {
        let applies = shape.is_valid() && shape.is_stride_1() && shape.kh == 3 && shape.kw == 3;
        match self {
            _ if !applies => None,
            ConvAlgorithm::Auto => suits(shape).then(|| OutputBlock::for_shape(shape)),
            ConvAlgorithm::Direct => None,
            ConvAlgorithm::Winograd => Some(OutputBlock::for_shape(shape)),
            ConvAlgorithm::WinogradF2 => Some(OutputBlock::F2x2),
            ConvAlgorithm::WinogradF4 => Some(OutputBlock::F4x4),
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

/// A 3×3 stride-1 convolution with its kernels transformed for F(m×m, 3×3).
#[derive(Debug, Clone, PartialEq)]
pub struct WinogradConv {
    pub shape: ConvShape,
    pub kernels: Isa,
    block: OutputBlock,
    cb: usize,
    xt: usize,
    /// `[ξ][co / CB][ci][CB]`: `U = G·g·Gᵀ` at position ξ = patch·row + column, per channel
    /// block as the direct kernel's 1×1 weights; output channels padded with zeros.
    u: Vec<f32>,
    /// Per output channel, padded like `u`.
    bias: Vec<f32>,
}

impl WinogradConv {
    /// `weights` in OIHW order (`co × ci × 3 × 3`), `bias` per output channel (or empty).
    /// `kernels` must be supported by this CPU.
    pub fn new(
        shape: ConvShape,
        weights: &[f32],
        bias: &[f32],
        kernels: Isa,
        block: OutputBlock,
    ) -> Self {
        // The tile that wastes least on padding channels and tiles of one image; among those,
        // the first listed (which loads least per multiply-add) that cuts an image into at
        // least two chunks, so that a team of two takes whole chunks, each thread's patches
        // staying in its own core's cache (64→64 F(4×4) on 32×32: 4×64 in one chunk 280 µs,
        // 179 on two threads; 8×32 in two 267 and 164).
        let tiles = tiles_per_image(&shape, block);
        let tile = *kernels
            .tiles()
            .iter()
            .min_by_key(|(cb, xt)| {
                let waste = shape.co.div_ceil(*cb) * cb * tiles.div_ceil(*xt) * xt;
                (waste, tiles.div_ceil(*xt) < 2)
            })
            .unwrap();
        Self::with_tile(shape, weights, bias, kernels, block, tile)
    }

    /// As [`WinogradConv::new`] with a given tile, one of `kernels`' tiles.
    pub fn with_tile(
        shape: ConvShape,
        weights: &[f32],
        bias: &[f32],
        kernels: Isa,
        block: OutputBlock,
        (cb, xt): (usize, usize),
    ) -> Self {
        assert!(
            shape.is_valid() && shape.is_stride_1() && shape.kh == 3 && shape.kw == 3,
            "not a 3×3 stride-1 convolution: {shape:?}"
        );
        assert!(kernels.is_supported(), "{kernels:?}");
        assert!(
            kernels.tiles().contains(&(cb, xt)) && xt <= MAX_XT,
            "{kernels:?} has no tile {cb}×{xt}"
        );
        let ConvShape { ci, co, .. } = shape;
        assert_eq!(weights.len(), co * ci * 9, "weights for {shape:?}");
        assert!(bias.is_empty() || bias.len() == co, "bias for {shape:?}");
        let blocks = co.div_ceil(cb);
        let mut u = vec![0.0f32; block.xi() * blocks * ci * cb];
        for o in 0..co {
            for c in 0..ci {
                let g = &weights[(o * ci + c) * 9..][..9];
                let t = transform_kernel(g, block);
                for (xi, v) in t[..block.xi()].iter().enumerate() {
                    u[((xi * blocks + o / cb) * ci + c) * cb + o % cb] = *v;
                }
            }
        }
        let mut b = vec![0.0f32; blocks * cb];
        b[..bias.len()].copy_from_slice(bias);
        WinogradConv {
            shape,
            kernels,
            block,
            cb,
            xt,
            u,
            bias: b,
        }
    }

    /// Floats from one ξ's `ci × XT` transformed patches to the next's in a chunk's buffer:
    /// 16 more than needed, so that the rows a patch is written to are not a multiple of
    /// 4 KiB apart (measured: the stores' 4 KiB aliasing slowed the transform ~2×).
    fn xi_stride(&self) -> usize {
        self.shape.ci * self.xt + 16
    }

    /// The register tile of the products: (output channels, Winograd tiles).
    pub fn tile(&self) -> (usize, usize) {
        (self.cb, self.xt)
    }

    /// The output block of one Winograd tile.
    pub fn block(&self) -> OutputBlock {
        self.block
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
        let xi = self.block.xi();
        let n = s.images(x, out, bias);
        let tiles = n * tiles_per_image(s, self.block);
        let chunks = tiles.div_ceil(self.xt);
        let blocks = self.bias.len() / self.cb;
        let macs = tiles * xi * s.ci * s.co;
        let team = team.filter(|t| t.threads() > 1 && macs >= min_macs);
        let threads = team.map_or(1, Team::threads);
        let planes = n * s.ci;
        let ph_len = planes * self.plane_len();
        PHASES.with(|ph| {
            let mut ph = ph.borrow_mut();
            let ph = aligned(&mut ph, ph_len);
            // Every input plane zero-bordered and split into column phases.
            let dst = DisjointMut::new(&mut *ph);
            let prep = |p: usize, parts: usize| {
                // SAFETY: disjoint planes per part.
                unsafe { self.split_columns(x, dst, share(planes, p, parts)) }
            };
            match team {
                Some(team) => team.run(threads, &|p| prep(p, threads)),
                None => prep(0, 1),
            }
            let job = Job {
                conv: self,
                phases: ph,
                out: DisjointMut::new(out),
                relu,
                bias,
                n,
            };
            // Per thread: a chunk's transformed patches, and its products.
            let (v_len, acc_len) = (xi * self.xi_stride(), xi * self.bias.len() * self.xt);
            let with_v = |f: &mut dyn FnMut(&mut [f32], &mut [f32])| {
                BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    let (v, acc) = aligned(&mut b, v_len + acc_len).split_at_mut(v_len);
                    f(v, acc)
                })
            };
            match team {
                // Whole chunks per thread when they share out evenly enough.
                Some(team) if chunks.is_multiple_of(threads) || chunks >= 4 * threads => {
                    team.run(threads, &|p| {
                        with_v(&mut |v, acc| {
                            for chunk in share(chunks, p, threads) {
                                // SAFETY: this thread's buffers, this part's chunks only.
                                unsafe {
                                    job.transform_input(chunk, Patches::new(v), 0..s.ci);
                                    job.multiply(v, acc, chunk, 0..blocks)
                                };
                            }
                        })
                    });
                }
                // Otherwise the team splits each chunk: its input channels for the transform,
                // then its channel blocks for the products (the caller's buffers).
                Some(team) => with_v(&mut |v, acc| {
                    for chunk in 0..chunks {
                        let patches = Patches::new(v);
                        // SAFETY: disjoint channels of v per part.
                        team.run(threads, &|p| unsafe {
                            job.transform_input(chunk, patches, share(s.ci, p, threads))
                        });
                        let v: &[f32] = v;
                        let accs = DisjointMut::new(acc);
                        // SAFETY: disjoint channel blocks of this chunk per part, each with
                        // its own part of `acc`.
                        team.run(threads, &|p| unsafe {
                            let part = share(blocks, p, threads);
                            let per_block = xi * self.cb * self.xt;
                            let acc = accs.slice_mut(per_block * part.start..per_block * part.end);
                            job.multiply(v, acc, chunk, part)
                        });
                    }
                }),
                None => with_v(&mut |v, acc| {
                    for chunk in 0..chunks {
                        // SAFETY: one thread writes everything.
                        unsafe {
                            job.transform_input(chunk, Patches::new(v), 0..s.ci);
                            job.multiply(v, acc, chunk, 0..blocks)
                        };
                    }
                }),
            }
        })
    }

    /// Rows of an input plane with its zero border, as the tiles read it (m·th + 2), and the
    /// columns of each of its m column phases (tw + 1): at least the padded size, the extra
    /// being zeros under outputs past the last whole block.
    fn bordered(&self) -> (usize, usize) {
        let s = &self.shape;
        let m = self.block.m();
        (m * s.out_h().div_ceil(m) + 2, s.out_w().div_ceil(m) + 1)
    }

    /// Floats of one column phase of a bordered plane.
    fn phase_len(&self) -> usize {
        let (rows, cols) = self.bordered();
        rows * cols
    }

    /// Floats of one bordered plane, all its phases.
    fn plane_len(&self) -> usize {
        self.block.m() * self.phase_len()
    }

    /// For planes `planes` (image · ci + channel) of `x`: the bordered plane's columns split
    /// by phase (bordered column j goes to phase j mod m, column j / m), the phases one after
    /// the other at `dst` + plane · plane_len.
    ///
    /// # Safety
    /// `dst` holds every plane's; no other thread writes these planes meanwhile.
    unsafe fn split_columns(&self, x: &[f32], dst: DisjointMut<'_, f32>, planes: Range<usize>) {
        let conv = self;
        dispatch!(
            self.kernels,
            [Avx512, Avx2],
            (conv: &WinogradConv, x: &[f32], dst: DisjointMut<'_, f32>, planes: Range<usize>) {
                // SAFETY: the caller's.
                unsafe { conv.split_columns_impl(x, dst, planes) }
            }
        )
    }

    #[inline(always)]
    unsafe fn split_columns_impl(
        &self,
        x: &[f32],
        dst: DisjointMut<'_, f32>,
        planes: Range<usize>,
    ) {
        // SAFETY: the caller's.
        unsafe {
            match self.block {
                OutputBlock::F2x2 => self.split_phases::<2>(x, dst, planes),
                OutputBlock::F4x4 => self.split_phases::<4>(x, dst, planes),
            }
        }
    }

    /// [`WinogradConv::split_columns`] with M = m phases: 16 inputs at a time loaded as one
    /// block and deinterleaved by vector shuffles ([`deinterleave`]), then a block of 8, the
    /// rest of a row one by one.
    #[inline(always)]
    unsafe fn split_phases<const M: usize>(
        &self,
        x: &[f32],
        dst: DisjointMut<'_, f32>,
        planes: Range<usize>,
    ) {
        let s = &self.shape;
        let (rows, cols) = self.bordered();
        let len = rows * cols;
        let (top, left) = (s.pad[0], s.pad[1]);
        let whole = s.w / 16 * 16;
        for plane in planes {
            let src = &x[plane * s.h * s.w..][..s.h * s.w];
            // SAFETY: this plane's M · len floats (caller).
            let out = unsafe { dst.slice_mut(plane * M * len..(plane + 1) * M * len) };
            out.fill(0.0);
            let mut ph: [&mut [f32]; M] = {
                let mut rest = &mut *out;
                std::array::from_fn(|_| {
                    let (p, r) = std::mem::take(&mut rest).split_at_mut(len);
                    rest = r;
                    p
                })
            };
            for (y, xr) in src.chunks_exact(s.w).enumerate() {
                let r = (y + top) * cols;
                // Input i is bordered column left + i: phase (left + i) mod M, column
                // (left + i) / M. In a block from i0 (a multiple of 16), phase p holds lanes
                // e, e + M, … with e = (p − left) mod M, from column (left + i0 + e) / M.
                for (b, blk) in xr[..whole].chunks_exact(16).enumerate() {
                    let t = deinterleave::<M, 16>(blk.try_into().unwrap());
                    for (p, php) in ph.iter_mut().enumerate() {
                        let e = (p + M - left % M) % M;
                        let at = r + (left + 16 * b + e) / M;
                        php[at..][..16 / M].copy_from_slice(&t[e][..16 / M]);
                    }
                }
                let mut done = whole;
                if s.w - whole >= 8 {
                    let t = deinterleave::<M, 8>(xr[whole..whole + 8].try_into().unwrap());
                    for (p, php) in ph.iter_mut().enumerate() {
                        let e = (p + M - left % M) % M;
                        let at = r + (left + whole + e) / M;
                        php[at..][..8 / M].copy_from_slice(&t[e][..8 / M]);
                    }
                    done += 8;
                }
                for (i, v) in xr.iter().enumerate().skip(done) {
                    let j = left + i;
                    ph[j % M][r + j / M] = *v;
                }
            }
        }
    }
}

/// Winograd tiles per image.
fn tiles_per_image(s: &ConvShape, block: OutputBlock) -> usize {
    let m = block.m();
    s.out_h().div_ceil(m) * s.out_w().div_ceil(m)
}

/// `G·g·Gᵀ` of one 3×3 kernel (row-major), as patch × patch values row-major (the first
/// `block.xi()`), computed in f64 and rounded once.
fn transform_kernel(g: &[f32], block: OutputBlock) -> [f32; MAX_XI] {
    let gm = block.g();
    let p = block.patch();
    // G·g: p rows of 3.
    let mut gg = [[0.0f64; 3]; 6];
    for (r, row) in gm.iter().enumerate() {
        for c in 0..3 {
            gg[r][c] = (0..3).map(|k| row[k] * g[k * 3 + c] as f64).sum();
        }
    }
    let mut u = [0.0f32; MAX_XI];
    for r in 0..p {
        for (c, row) in gm.iter().enumerate() {
            u[r * p + c] = (0..3).map(|k| gg[r][k] * row[k]).sum::<f64>() as f32;
        }
    }
    u
}

/// One call's data, shared by the parts of a team.
struct Job<'a> {
    conv: &'a WinogradConv,
    /// Every input plane bordered and split into column phases
    /// ([`WinogradConv::split_columns`]).
    phases: &'a [f32],
    out: DisjointMut<'a, f32>,
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
        let tw = s.out_w().div_ceil(self.conv.block.m());
        let per_image = tiles_per_image(s, self.conv.block);
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

    /// `v[ξ][c][i]` = `Bᵀ·d·B` at ξ of the chunk's tile i's patch of channel c (zero outside
    /// the image), for channels `cs`. Positions past the chunk's last tile are left as they
    /// were (their products are computed and dropped).
    ///
    /// # Safety
    /// No other thread writes these channels of `v` meanwhile.
    unsafe fn transform_input(&self, chunk: usize, v: Patches<'_>, cs: Range<usize>) {
        let job = self;
        dispatch!(
            self.conv.kernels,
            [Avx512, Avx2],
            (job: &Job<'_>, chunk: usize, v: Patches<'_>, cs: Range<usize>) {
                // SAFETY: the caller's.
                unsafe { job.transform_input_impl(chunk, v, cs) }
            }
        )
    }

    #[inline(always)]
    unsafe fn transform_input_impl(&self, chunk: usize, v: Patches<'_>, cs: Range<usize>) {
        // SAFETY: the caller's.
        unsafe {
            match self.conv.block {
                OutputBlock::F2x2 => self.transform_f2(chunk, v, cs),
                OutputBlock::F4x4 => self.transform_f4(chunk, v, cs),
            }
        }
    }

    /// [`Job::transform_input`] for F(4×4), in two passes per channel: each patch row across
    /// its columns, run by run (`h[l][r][i]` = (Bᵀ · patch row r of tile i)[l]), then each
    /// result column down the rows for the whole chunk at once, in full vectors.
    #[inline(always)]
    unsafe fn transform_f4(&self, chunk: usize, v: Patches<'_>, cs: Range<usize>) {
        let ph: &'a [f32] = self.phases;
        let conv = self.conv;
        let (ci, xt, xi_stride) = (conv.shape.ci, conv.xt, conv.xi_stride());
        let len = conv.phase_len();
        let cols = conv.bordered().1;
        let runs = self.runs(chunk).collect::<RunList>();
        let mut h = [[[0.0f32; MAX_XT]; 6]; 6];
        for c in cs {
            for run in runs.iter() {
                let plane = &ph[(run.image * ci + c) * 4 * len..][..4 * len];
                for r in 0..6 {
                    // Patch row r of tile tx, column q: phase q mod 4, column tx + q / 4.
                    let row = |p: usize| -> &[f32] {
                        &plane[p * len + (4 * run.ty + r) * cols + run.tx0..][..run.len + 1]
                    };
                    let rows = [row(0), row(1), row(2), row(3)];
                    let mut i = 0;
                    while i < run.len {
                        let at = run.pos + i;
                        i += match run.len - i {
                            16.. => rows_f4::<16>(&rows, i, &mut h, r, at),
                            8.. => rows_f4::<8>(&rows, i, &mut h, r, at),
                            4.. => rows_f4::<4>(&rows, i, &mut h, r, at),
                            _ => rows_f4::<1>(&rows, i, &mut h, r, at),
                        };
                    }
                }
            }
            let first = c * xt;
            // SAFETY: channel c's rows of v (caller).
            unsafe {
                if conv.kernels.wide() && xt.is_multiple_of(16) {
                    columns_f4::<16>(&h, xt, v, first, xi_stride);
                } else {
                    columns_f4::<8>(&h, xt, v, first, xi_stride);
                }
            }
        }
    }

    /// [`Job::transform_input`] for F(2×2): tile by tile along each run, in blocks of L tiles.
    #[inline(always)]
    unsafe fn transform_f2(&self, chunk: usize, v: Patches<'_>, cs: Range<usize>) {
        let ph: &'a [f32] = self.phases;
        let conv = self.conv;
        let (ci, xt, xi_stride) = (conv.shape.ci, conv.xt, conv.xi_stride());
        let len = conv.phase_len();
        let cols = conv.bordered().1;
        for run in self.runs(chunk) {
            for c in cs.clone() {
                let plane = &ph[(run.image * ci + c) * 2 * len..][..2 * len];
                // Tile tx's patch: rows 2·ty .. 2·ty + 3, bordered columns 2·tx + q for q in
                // 0..4, i.e. phase q mod 2, column tx + q / 2.
                let rows: [[&'a [f32]; 4]; 2] = std::array::from_fn(|p| {
                    std::array::from_fn(|r| {
                        &plane[p * len + (2 * run.ty + r) * cols + run.tx0..][..run.len + 1]
                    })
                });
                let at = c * xt + run.pos;
                // Blocks of 16, 8, 4 and 1 tiles: fixed-size arrays the compiler turns into
                // whole vectors (runs are 2–16 tiles long, too short for a vectorised loop).
                let mut i = 0;
                while i < run.len {
                    // SAFETY: channel c's rows of v (caller).
                    i += unsafe {
                        match run.len - i {
                            16.. => patches_f2::<16>(&rows, i, v, at + i, xi_stride),
                            8.. => patches_f2::<8>(&rows, i, v, at + i, xi_stride),
                            4.. => patches_f2::<4>(&rows, i, v, at + i, xi_stride),
                            _ => patches_f2::<1>(&rows, i, v, at + i, xi_stride),
                        }
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
        let job = self;
        dispatch!(
            self.conv.kernels,
            [Avx512, Avx2],
            (job: &Job<'_>, v: &[f32], acc: &mut [f32], chunk: usize, blocks: Range<usize>) {
                // SAFETY: the caller's.
                unsafe { job.multiply_impl(v, acc, chunk, blocks) }
            }
        )
    }

    #[inline(always)]
    unsafe fn multiply_impl(&self, v: &[f32], acc: &mut [f32], chunk: usize, blocks: Range<usize>) {
        let conv = self.conv;
        let s = &conv.shape;
        let (cb, xt, ci) = (conv.cb, conv.xt, s.ci);
        let xis = conv.block.xi();
        let all_blocks = conv.bias.len() / cb;
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
        debug_assert!(cb * xt <= TILE_FLOATS && cb <= TILE_FLOATS);
        debug_assert!(v.len() >= xis * conv.xi_stride());
        let runs = self.runs(chunk).collect::<RunList>();
        // The products ξ by ξ, every block of the range: one ξ's patches (ci × xt) and
        // weights stay in L1 while the blocks use them (block by block, all ξ, read the
        // chunk's patches from L2 once per block: measured 1.5× slower on 64→64 32×32).
        // `acc[(ξ · blocks + b) · cb · xt ..]` holds block b's tile at ξ.
        let nb = blocks.len();
        debug_assert!(acc.len() >= xis * nb * cb * xt);
        for xi in 0..xis {
            for (b, blk) in blocks.clone().enumerate() {
                // SAFETY: reads ci × xt floats of v at ξ and ci × cb weights, writes cb × xt
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
        let mut y = [[0.0f32; MAX_XT]; 16];
        for (bi, blk) in blocks.enumerate() {
            for j in 0..cb.min(s.co - blk * cb) {
                let o = blk * cb + j;
                // Position ξ's products for this channel: acc[first + ξ · stride ..][..xt].
                let (first, stride) = ((bi * cb + j) * xt, nb * cb * xt);
                let m = &acc[first..first + (xis - 1) * stride + xt];
                let bias = |image: usize| match self.bias {
                    None => conv.bias[o],
                    Some(b) if b.len() == s.co => b[o],
                    Some(b) => b[image * s.co + o],
                };
                match conv.block {
                    OutputBlock::F2x2 => {
                        if conv.kernels.wide() && xt.is_multiple_of(16) {
                            outputs_f2::<16>(m, stride, xt, &mut y)
                        } else {
                            outputs_f2::<8>(m, stride, xt, &mut y)
                        }
                        self.scatter::<2>(&y, &runs, o, bias)
                    }
                    OutputBlock::F4x4 => {
                        if conv.kernels.wide() && xt.is_multiple_of(16) {
                            outputs_f4::<16>(m, stride, xt, &mut y)
                        } else {
                            outputs_f4::<8>(m, stride, xt, &mut y)
                        }
                        self.scatter::<4>(&y, &runs, o, bias)
                    }
                }
            }
        }
    }

    /// Writes output channel `o` of the chunk's tiles from `y[M·a + b][i]` (tile i's output
    /// row a, column b), adding `bias(image)` and applying ReLU.
    #[inline(always)]
    fn scatter<const M: usize>(
        &self,
        y: &[[f32; MAX_XT]; 16],
        runs: &RunList,
        o: usize,
        bias: impl Fn(usize) -> f32,
    ) {
        let s = &self.conv.shape;
        let (ho, wo) = (s.out_h(), s.out_w());
        for run in runs.iter() {
            let b = bias(run.image);
            let plane = (run.image * s.co + o) * ho * wo;
            for a in 0..M {
                let oy = M * run.ty + a;
                if oy >= ho {
                    break;
                }
                let x0 = M * run.tx0;
                let width = (M * run.len).min(wo - x0);
                let at = plane + oy * wo + x0;
                // SAFETY: row oy of output channel o of this image, columns of this run's
                // tiles: this part's (caller).
                let dst = unsafe { self.out.slice_mut(at..at + width) };
                let ya: [&[f32]; M] = std::array::from_fn(|c| &y[M * a + c][run.pos..]);
                // Blocks of 16 outputs (16 / M tiles), then one of 8; the rest one by one.
                let mut i = 0;
                let mut blocks = dst.chunks_exact_mut(16);
                for d in &mut blocks {
                    store_interleaved::<M, 16>(&ya, i, b, self.relu, d.try_into().unwrap());
                    i += 16 / M;
                }
                let mut rest = blocks.into_remainder();
                if rest.len() >= 8 {
                    let (d, r) = rest.split_at_mut(8);
                    store_interleaved::<M, 8>(&ya, i, b, self.relu, d.try_into().unwrap());
                    i += 8 / M;
                    rest = r;
                }
                for (k, d) in rest.iter_mut().enumerate() {
                    let t = ya[k % M][i + k / M] + b;
                    *d = if self.relu { t.max(0.0) } else { t };
                }
            }
        }
    }
}

/// L values of position ξ's products from tile i: `m[ξ · stride + i ..][..L]`.
#[inline(always)]
fn at<const L: usize>(m: &[f32], stride: usize, xi: usize, i: usize) -> [f32; L] {
    m[xi * stride + i..][..L].try_into().unwrap()
}

/// F(2×2): `y[2a + b][i]` = (Aᵀ·M·A)[a][b] of tile i, for the chunk's xt tiles (a multiple
/// of L), L tiles at a time; M at ξ is `m[ξ · stride ..][..xt]`.
#[inline(always)]
fn outputs_f2<const L: usize>(m: &[f32], stride: usize, xt: usize, y: &mut [[f32; MAX_XT]; 16]) {
    debug_assert!(xt.is_multiple_of(L));
    for i in (0..xt).step_by(L) {
        // Column l of Aᵀ·M: (m0 + m1 + m2, m1 − m2 − m3) down column l; then across.
        let col = |l: usize| {
            let ld = |r: usize| at::<L>(m, stride, 4 * r + l, i);
            let (m0, m1, m2, m3) = (ld(0), ld(1), ld(2), ld(3));
            let mut tb = [[0.0f32; L]; 2];
            for j in 0..L {
                tb[0][j] = m0[j] + m1[j] + m2[j];
                tb[1][j] = m1[j] - m2[j] - m3[j];
            }
            tb
        };
        let (c0, c1, c2, c3) = (col(0), col(1), col(2), col(3));
        for (a, ya) in y.chunks_exact_mut(2).take(2).enumerate() {
            for j in 0..L {
                ya[0][i + j] = c0[a][j] + c1[a][j] + c2[a][j];
                ya[1][i + j] = c1[a][j] - c2[a][j] - c3[a][j];
            }
        }
    }
}

/// Aᵀ·m for F(4×4): Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, 0], [0, 1, 1, 4, 4, 0],
/// [0, 1, −1, 8, −8, 1]], on L lanes at once, in a fixed order. Arguments and result by value
/// (no zero-initialised buffers on the stack).
#[inline(always)]
fn at6<const L: usize>(m: [[f32; L]; 6]) -> [[f32; L]; 4] {
    let mut out = [[0.0f32; L]; 4];
    for j in 0..L {
        let (s12, d12) = (m[1][j] + m[2][j], m[1][j] - m[2][j]);
        let (s34, d34) = (m[3][j] + m[4][j], m[3][j] - m[4][j]);
        out[0][j] = (m[0][j] + s12) + s34;
        out[1][j] = d12 + 2.0 * d34;
        out[2][j] = s12 + 4.0 * s34;
        out[3][j] = (d12 + 8.0 * d34) + m[5][j];
    }
    out
}

/// F(4×4): `y[4a + b][i]` = (Aᵀ·M·A)[a][b] of tile i, for the chunk's xt tiles (a multiple
/// of L), L tiles at a time; M at ξ is `m[ξ · stride ..][..xt]`.
#[inline(always)]
fn outputs_f4<const L: usize>(m: &[f32], stride: usize, xt: usize, y: &mut [[f32; MAX_XT]; 16]) {
    debug_assert!(xt.is_multiple_of(L));
    for i in (0..xt).step_by(L) {
        // t[l][a] = (Aᵀ · column l)[a].
        let col = |l: usize| {
            let ld = |r: usize| at::<L>(m, stride, 6 * r + l, i);
            at6([ld(0), ld(1), ld(2), ld(3), ld(4), ld(5)])
        };
        let t = [col(0), col(1), col(2), col(3), col(4), col(5)];
        for (a, ya) in y.chunks_exact_mut(4).enumerate() {
            let row = at6([t[0][a], t[1][a], t[2][a], t[3][a], t[4][a], t[5][a]]);
            for (yb, rb) in ya.iter_mut().zip(row) {
                yb[i..i + L].copy_from_slice(&rb);
            }
        }
    }
}

/// A chunk's buffer of transformed patches, written by the parts of a team, each its own
/// channels.
#[derive(Clone, Copy)]
struct Patches<'a> {
    view: DisjointMut<'a, f32>,
}

impl<'a> Patches<'a> {
    fn new(v: &'a mut [f32]) -> Patches<'a> {
        Patches {
            view: DisjointMut::new(v),
        }
    }

    /// Copies `src` to `at ..`.
    ///
    /// # Safety
    /// Within the buffer (see [`Patches::check`]); no other thread writes or reads these
    /// floats meanwhile.
    #[inline(always)]
    unsafe fn put(self, at: usize, src: &[f32]) {
        // SAFETY: in bounds and exclusive (caller).
        unsafe { self.view.copy_from_unchecked(at, src) }
    }

    /// Checks that rows `first + r · stride ..` of `width` floats, r < `rows`, are in the
    /// buffer: [`Patches::put`]'s bounds, tested once per pass instead of at every store.
    fn check(self, first: usize, stride: usize, rows: usize, width: usize) {
        assert!(
            first + (rows - 1) * stride + width <= self.view.len(),
            "patches out of bounds"
        );
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

/// `Bᵀ·d·B` for F(2×2, 3×3), Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]],
/// of L consecutive tiles' patches of one channel: `rows[p][r]` is patch row r's column phase
/// p (even, odd) from the run's first tile, so tile `i0 + j`'s column q is
/// `rows[q % 2][r][i0 + j + q / 2]`. The results go to `v[first + ξ·stride ..][..L]`. Every
/// path and CPU runs the same operations in the same order (no contraction into fused
/// multiply-adds): the same bits. Returns L.
///
/// # Safety
/// No other thread writes these floats of `v` meanwhile.
#[inline(always)]
unsafe fn patches_f2<const L: usize>(
    rows: &[[&[f32]; 4]; 2],
    i0: usize,
    v: Patches<'_>,
    first: usize,
    stride: usize,
) -> usize {
    v.check(first, stride, 16, L);
    let [even, odd] = rows;
    // d[r][q]: patch row r, column q, L tiles.
    let mut d = [[[0.0f32; L]; 4]; 4];
    for r in 0..4 {
        let (e, o) = (&even[r][i0..][..L + 1], &odd[r][i0..][..L + 1]);
        d[r][0].copy_from_slice(&e[..L]);
        d[r][1].copy_from_slice(&o[..L]);
        d[r][2].copy_from_slice(&e[1..]);
        d[r][3].copy_from_slice(&o[1..]);
    }
    // The rows first (d0 − d2, d1 + d2, d2 − d1, d1 − d3), then each result's columns.
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
            // SAFETY: the caller's.
            unsafe { v.put(first + (4 * k + l) * stride, ul) };
        }
    }
    L
}

/// `out` = Bᵀ·d for F(4×4) on L lanes, in a fixed order: Bᵀ = [[4, 0, −5, 0, 1, 0],
/// [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0], [0, −2, −1, 2, 1, 0], [0, 2, −1, −2, 1, 0],
/// [0, 4, 0, −5, 0, 1]] (Lavin & Gray).
#[inline(always)]
fn bt6<const L: usize>(d: &[[f32; L]; 6], out: &mut [[f32; L]; 6]) {
    for j in 0..L {
        let (d0, d1, d2, d3, d4, d5) = (d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j]);
        let (t1, t2) = (d4 - 4.0 * d2, d3 - 4.0 * d1);
        let (t3, t4) = (d4 - d2, 2.0 * (d3 - d1));
        out[0][j] = (4.0 * d0 - 5.0 * d2) + d4;
        out[1][j] = t1 + t2;
        out[2][j] = t1 - t2;
        out[3][j] = t3 + t4;
        out[4][j] = t3 - t4;
        out[5][j] = (4.0 * d1 - 5.0 * d3) + d5;
    }
}

/// The row pass of [`Job::transform_f4`] for L tiles from the run's tile `i0`, patch row r:
/// `h[l][r][at ..][..L]`. Returns L.
#[inline(always)]
fn rows_f4<const L: usize>(
    rows: &[&[f32]; 4],
    i0: usize,
    h: &mut [[[f32; MAX_XT]; 6]; 6],
    r: usize,
    at: usize,
) -> usize {
    // Checked once here, so that the loops below compile without bounds checks.
    assert!(rows.iter().all(|row| i0 + L < row.len()) && at + L <= MAX_XT);
    let mut d = [[0.0f32; L]; 6];
    for (q, dq) in d.iter_mut().enumerate() {
        dq.copy_from_slice(&rows[q % 4][i0 + q / 4..][..L]);
    }
    let mut t = [[0.0f32; L]; 6];
    bt6(&d, &mut t);
    for (l, tl) in t.iter().enumerate() {
        h[l][r][at..at + L].copy_from_slice(tl);
    }
    L
}

/// The column pass of [`Job::transform_f4`] for a chunk's `xt` tiles (a multiple of L):
/// `v[first + (6k + l)·stride + i]` = (Bᵀ · h[l][·][i])[k].
///
/// # Safety
/// No other thread writes these floats of `v` meanwhile.
#[inline(always)]
unsafe fn columns_f4<const L: usize>(
    h: &[[[f32; MAX_XT]; 6]; 6],
    xt: usize,
    v: Patches<'_>,
    first: usize,
    stride: usize,
) {
    assert!(xt <= MAX_XT && xt.is_multiple_of(L));
    v.check(first, stride, 36, xt);
    let mut d = [[0.0f32; L]; 6];
    let mut u = [[0.0f32; L]; 6];
    for (l, hl) in h.iter().enumerate() {
        for i in (0..xt).step_by(L) {
            for (dr, hr) in d.iter_mut().zip(hl) {
                dr.copy_from_slice(&hr[i..i + L]);
            }
            bt6(&d, &mut u);
            for (k, uk) in u.iter().enumerate() {
                // SAFETY: the caller's.
                unsafe { v.put((6 * k + l) * stride + first + i, uk) };
            }
        }
    }
}

thread_local! {
    /// One chunk's transformed patches and products: grows to the largest layer once per
    /// thread.
    static BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Every input plane of a call, bordered and split into column phases (the calling
    /// thread's, read by its team).
    static PHASES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::reference::conv_reference;
    use crate::testing::{abs, isas, values, Errors};

    /// Largest |winograd − reference| of an output over its tile's error scale: the largest
    /// Σ|x·w| + |b| (a direct sum's rounding scale) among the m×m outputs of its tile
    /// ([`tile_scale`]). Winograd computes a tile's outputs together from one (m+2)² input
    /// patch, so the rounding of the whole patch's transform reaches every output of the tile
    /// (an output whose own taps are all padding, Σ|x·w| = 0, still gets its neighbours'
    /// rounding: measured 3.5e-5 of its own scale for F(4×4), 1e-6 of its tile's). The
    /// transforms add more roundings than a direct sum and scale them up: for F(2×2) Bᵀ·d·B
    /// adds up to 4 inputs, the kernel transform scales by up to 9/4 and Aᵀ·m·A adds 9
    /// products' sums; F(4×4)'s factors are larger (Bᵀ rows up to 10 in absolute sum, Aᵀ up
    /// to 19), so each block has its limit. Measured worst over every tile and shape (x86-64
    /// AVX-512, AVX2, portable; aarch64 NEON, portable under qemu Cortex-A72): F(2×2) 9.87e-8
    /// portable, 8.56e-8 SIMD (AVX-512 = AVX2 = NEON).
    const F2_MAX_TOL: f64 = 3e-7;
    /// The same ratio's mean over a run's outputs, F(2×2). Measured worst (as above): 1.44e-8
    /// portable, 1.24e-8 SIMD.
    const F2_MEAN_TOL: f64 = 4.5e-8;
    /// As [`F2_MAX_TOL`], for F(4×4). Measured worst (as above): 1.84e-6 SIMD, 1.52e-6
    /// portable.
    const F4_MAX_TOL: f64 = 5.5e-6;
    /// The same ratio's mean over a run's outputs, F(4×4). Measured worst (as above): 6.45e-8
    /// portable, 5.91e-8 SIMD.
    const F4_MEAN_TOL: f64 = 2e-7;
    /// [`F2_MAX_TOL`] for the ReLU and run-time bias test (one shape, about half its outputs
    /// clamped to an exact 0). Measured worst (as above): 7.96e-8 portable, 6.21e-8 SIMD.
    const RELU_F2_MAX_TOL: f64 = 2.4e-7;
    /// Its mean. Measured worst (as above): 6.03e-9 portable, 5.66e-9 SIMD.
    const RELU_F2_MEAN_TOL: f64 = 1.8e-8;
    /// [`F4_MAX_TOL`] for the ReLU and run-time bias test. Measured worst (as above): 6.75e-7
    /// portable, 6.07e-7 SIMD.
    const RELU_F4_MAX_TOL: f64 = 2e-6;
    /// Its mean. Measured worst (as above): 2.42e-8 portable, 2.33e-8 SIMD.
    const RELU_F4_MEAN_TOL: f64 = 7.5e-8;

    /// Each output's tile's error scale: the largest of `scale` (each output's Σ|x·w| + |b|)
    /// over the m×m tile of `block` that holds it (tiles at multiples of m from each output
    /// plane's origin, the last ones cut by the plane's edges).
    fn tile_scale(scale: &[f32], s: &ConvShape, block: OutputBlock) -> Vec<f32> {
        let (m, ho, wo) = (block.m(), s.out_h(), s.out_w());
        let mut out = vec![0.0f32; scale.len()];
        for (plane, dst) in scale
            .chunks_exact(ho * wo)
            .zip(out.chunks_exact_mut(ho * wo))
        {
            for ty in (0..ho).step_by(m) {
                for tx in (0..wo).step_by(m) {
                    let (ys, xs) = (ty..(ty + m).min(ho), tx..(tx + m).min(wo));
                    let cells = || ys.clone().flat_map(|y| xs.clone().map(move |x| y * wo + x));
                    let max = cells().map(|i| plane[i]).fold(0.0, f32::max);
                    cells().for_each(|i| dst[i] = max);
                }
            }
        }
        out
    }

    /// The (max, mean) limits of `block` (of the ReLU test's when `relu`).
    fn limits(block: OutputBlock, relu: bool) -> (f64, f64) {
        match (block, relu) {
            (OutputBlock::F2x2, false) => (F2_MAX_TOL, F2_MEAN_TOL),
            (OutputBlock::F4x4, false) => (F4_MAX_TOL, F4_MEAN_TOL),
            (OutputBlock::F2x2, true) => (RELU_F2_MAX_TOL, RELU_F2_MEAN_TOL),
            (OutputBlock::F4x4, true) => (RELU_F4_MAX_TOL, RELU_F4_MEAN_TOL),
        }
    }

    /// `got`'s errors against `want` relative to each output's `scale`, asserted within
    /// `limits`.
    fn assert_close(
        got: &[f32],
        want: &[f32],
        scale: &[f32],
        (max, mean): (f64, f64),
        what: &str,
    ) -> Errors {
        let e = Errors::of(got, want, scale);
        assert!(
            e.max <= max && e.mean <= mean,
            "{what}: max |error|/tile's Σ|x·w| {:.2e} (output {}: {} vs reference {}), mean {:.2e}",
            e.max,
            e.at,
            got[e.at],
            want[e.at],
            e.mean
        );
        e
    }

    const BLOCKS: [OutputBlock; 2] = [OutputBlock::F2x2, OutputBlock::F4x4];

    fn shapes() -> Vec<ConvShape> {
        let s = |ci, co, h, w, p: [usize; 4]| ConvShape {
            ci,
            co,
            h,
            w,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pad: p,
        };
        vec![
            s(16, 16, 8, 8, [1; 4]),         // one chunk of 16 tiles
            s(32, 20, 32, 32, [1; 4]),       // 256 tiles, a partial channel block
            s(17, 40, 7, 9, [1; 4]),         // odd sizes: the last tiles' second row/column dropped
            s(24, 16, 14, 14, [1; 4]),       // 49 tiles: a partial chunk
            s(16, 24, 6, 70, [1; 4]),        // tile rows longer than the widest chunk
            s(16, 16, 9, 11, [0; 4]),        // no padding
            s(16, 18, 5, 6, [2, 0, 1, 2]),   // asymmetric padding
            s(16, 16, 18, 35, [2, 3, 0, 1]), // wide rows, left padding 3
            s(16, 16, 17, 33, [0; 4]),       // wide rows, no padding
        ]
    }

    fn check(
        shape: ConvShape,
        n: usize,
        kernels: Isa,
        block: OutputBlock,
        tile: (usize, usize),
    ) -> Errors {
        let x = values(n * shape.ci * shape.h * shape.w, 1);
        let w = values(shape.co * shape.ci * 9, 2);
        let b = values(shape.co, 3);
        let want = conv_reference(&shape, &x, &w, &b);
        let scale = conv_reference(&shape, &abs(&x), &abs(&w), &abs(&b));
        let scale = tile_scale(&scale, &shape, block);
        let conv = WinogradConv::with_tile(shape, &w, &b, kernels, block, tile);
        let mut got = vec![f32::NAN; want.len()];
        conv.run_with_bias(&x, &mut got, false, None);
        let what = format!("{shape:?} n={n} {kernels:?} {block:?} {tile:?}");
        assert_close(&got, &want, &scale, limits(block, false), &what)
    }

    #[test]
    fn every_tile_of_every_kernel_set_matches_the_reference() {
        for kernels in isas() {
            for block in BLOCKS {
                let mut worst = Errors::default();
                for &tile in kernels.tiles() {
                    for s in shapes() {
                        worst = worst.worst(check(s, 1, kernels, block, tile));
                    }
                    // Chunks that span images.
                    worst = worst.worst(check(shapes()[0], 5, kernels, block, tile));
                    worst = worst.worst(check(shapes()[2], 3, kernels, block, tile));
                }
                eprintln!(
                    "winograd {kernels:?} {block:?}: measured |error|/tile's Σ|x·w| max {:.2e} \
                     mean {:.2e} (limits {:?})",
                    worst.max,
                    worst.mean,
                    limits(block, false)
                );
            }
        }
    }

    #[test]
    fn the_kernel_transform_is_g_g_gt() {
        // U = s·sᵀ when g = c·cᵀ, with s = G·c: a delta at (1, 1) (c = (0, 1, 0)) gives G's
        // middle column squared; all ones (c = (1, 1, 1)) the outer square of G's row sums.
        let cases: [(OutputBlock, [f64; 6], [f64; 6]); 2] = [
            (
                OutputBlock::F2x2,
                [0.0, 0.5, -0.5, 0.0, 0.0, 0.0],
                [1.0, 1.5, 0.5, 1.0, 0.0, 0.0],
            ),
            (
                OutputBlock::F4x4,
                [0.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 12.0, -1.0 / 12.0, 0.0],
                [0.25, -0.5, -1.0 / 6.0, 7.0 / 24.0, 1.0 / 8.0, 1.0],
            ),
        ];
        for (block, mid, sum) in cases {
            let mut delta = [0.0f32; 9];
            delta[4] = 1.0;
            let p = block.patch();
            for (g, s) in [(delta, mid), ([1.0; 9], sum)] {
                let u = transform_kernel(&g, block);
                for r in 0..p {
                    for c in 0..p {
                        // Computed in f64 and rounded once: the f32 nearest the exact value
                        // (exact for F(2×2), whose values are halves; ±0 alike).
                        let want = s[r] * s[c];
                        assert_eq!(
                            u[r * p + c],
                            want as f32,
                            "{block:?} ({r}, {c}): {} vs {want}",
                            u[r * p + c]
                        );
                    }
                }
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
        for (k, block) in isas().into_iter().flat_map(|k| BLOCKS.map(|b| (k, b))) {
            let conv = WinogradConv::new(s, &w, &[], k, block);
            let mut got = vec![f32::NAN; n * s.co * s.out_h() * s.out_w()];
            conv.run_with_bias(&x, &mut got, true, Some(&b));
            let image = s.ci * s.h * s.w;
            let image_out = s.co * s.out_h() * s.out_w();
            let mut worst = Errors::default();
            for i in 0..n {
                let (xi, bi) = (&x[i * image..][..image], &b[i * s.co..][..s.co]);
                let mut want = conv_reference(&s, xi, &w, bi);
                let scale =
                    tile_scale(&conv_reference(&s, &abs(xi), &abs(&w), &abs(bi)), &s, block);
                let got = &got[i * image_out..][..image_out];
                assert!(got.iter().all(|g| *g >= 0.0), "{k:?} {block:?}: ReLU");
                // max(·, 0) moves no output further from the reference's max(·, 0).
                want.iter_mut().for_each(|v| *v = v.max(0.0));
                let what = format!("{k:?} {block:?} image {i}");
                worst = worst.worst(assert_close(got, &want, &scale, limits(block, true), &what));
            }
            eprintln!(
                "winograd relu + bias {k:?} {block:?}: measured |error|/tile's Σ|x·w| max {:.2e} \
                 mean {:.2e}",
                worst.max, worst.mean
            );
        }
    }

    /// A 3×3 layer with one pixel of padding (outputs as large as the inputs).
    fn same(ci: usize, co: usize, h: usize, w: usize) -> ConvShape {
        ConvShape {
            ci,
            co,
            h,
            w,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pad: [1; 4],
        }
    }

    #[test]
    fn the_block_and_the_algorithm_follow_the_documented_thresholds() {
        // F(4×4) from 16 output rows and columns on (MIN_F4_SIDE), in both directions.
        assert_eq!(
            OutputBlock::for_shape(&same(1, 1, 16, 16)),
            OutputBlock::F4x4
        );
        assert_eq!(
            OutputBlock::for_shape(&same(1, 1, 15, 40)),
            OutputBlock::F2x2
        );
        assert_eq!(
            OutputBlock::for_shape(&same(1, 1, 40, 15)),
            OutputBlock::F2x2
        );
        assert_eq!(OutputBlock::F2x2.describe(), "F(2×2, 3×3)");
        assert_eq!(OutputBlock::F4x4.describe(), "F(4×4, 3×3)");
        // Winograd pays from 32 input and output channels and 64 output pixels on.
        assert!(suits(&same(32, 32, 8, 8)));
        assert!(suits(&same(32, 32, 2, 32)));
        assert!(!suits(&same(31, 32, 8, 8)));
        assert!(!suits(&same(32, 31, 8, 8)));
        assert!(!suits(&same(32, 32, 7, 9)));
        use ConvAlgorithm::*;
        let (big, small) = (same(32, 32, 16, 16), same(8, 8, 8, 8));
        let cases = [
            (Auto, big, Some(OutputBlock::F4x4)),
            (Auto, same(32, 32, 8, 8), Some(OutputBlock::F2x2)),
            (Auto, small, None),
            (Direct, big, None),
            (Winograd, big, Some(OutputBlock::F4x4)),
            (Winograd, small, Some(OutputBlock::F2x2)),
            (WinogradF2, big, Some(OutputBlock::F2x2)),
            (WinogradF4, small, Some(OutputBlock::F4x4)),
        ];
        for (algorithm, shape, want) in cases {
            assert_eq!(algorithm.winograd(&shape), want, "{algorithm:?} {shape:?}");
        }
        // Only valid 3×3 stride-1 layers, whatever the algorithm.
        let strided = ConvShape {
            stride: [1, 2],
            ..big
        };
        let wide = ConvShape { kw: 5, ..big };
        let tall = ConvShape { kh: 5, ..big };
        let empty = ConvShape { ci: 0, ..big };
        for algorithm in [Auto, Direct, Winograd, WinogradF2, WinogradF4] {
            for shape in [strided, wide, tall, empty] {
                assert_eq!(algorithm.winograd(&shape), None, "{algorithm:?} {shape:?}");
            }
        }
    }

    #[test]
    fn the_tile_chosen_wastes_least_then_makes_two_chunks() {
        // Portable tiles 4×16 and 8×8 (channels × Winograd tiles), F(2×2) on 8×8: 16 tiles.
        // 10 channels: 4×16 pads to 12 × 16 = 192 products, 8×8 to 16 × 16 = 256.
        let w = vec![0.0; 10 * 16 * 9];
        let conv = WinogradConv::new(
            same(16, 10, 8, 8),
            &w,
            &[],
            Isa::Portable,
            OutputBlock::F2x2,
        );
        assert_eq!(conv.tile(), (4, 16));
        assert_eq!(conv.block(), OutputBlock::F2x2);
        // 8 channels: both 8 × 16; 8×8 cuts the image into two chunks, 4×16 into one.
        let w = vec![0.0; 8 * 16 * 9];
        let conv = WinogradConv::new(same(16, 8, 8, 8), &w, &[], Isa::Portable, OutputBlock::F2x2);
        assert_eq!(conv.tile(), (8, 8));
        // 4 channels on 4 tiles (4×4 F(2×2)): 4×16 pads to 4 × 16, 8×8 to 8 × 8; both one
        // chunk: the first listed.
        let w = vec![0.0; 4 * 16 * 9];
        let conv = WinogradConv::new(same(16, 4, 4, 4), &w, &[], Isa::Portable, OutputBlock::F2x2);
        assert_eq!(conv.tile(), (4, 16));
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
                for block in BLOCKS {
                    let mut first: Option<Vec<f32>> = None;
                    for k in isas().into_iter().filter(|k| *k != Isa::Portable) {
                        for &tile in k.tiles() {
                            let conv = WinogradConv::with_tile(s, &w, &b, k, block, tile);
                            let mut one = vec![0.0; len];
                            conv.run_with_bias(&x, &mut one, false, None);
                            let mut split = vec![0.0; len];
                            // Forced split: below the size at which a team is used by default.
                            conv.run_split(Some(&team), 0, &x, &mut split, false, None);
                            let what = format!("{s:?} n={n} {k:?} {block:?} {tile:?}");
                            assert!(one == split, "{what}: team differs");
                            match &first {
                                None => first = Some(one),
                                Some(f) => assert!(*f == one, "{what} differs"),
                            }
                        }
                    }
                }
            }
        }
    }
}
