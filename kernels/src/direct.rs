//! Hand-written CPU kernels for the two operations that dominate the small UNets' time in
//! tract 0.23.9 (see `edge-sample bench --profile`):
//!
//! - **direct convolution**, stride 1, NCHW, f32: tract lowers a 3×3 conv to lazy im2col + a
//!   matrix product whose row tile (16 on AVX2) is mostly padding when a layer has 10–40 output
//!   channels, plus an explicit `Pad` node. Here each output tile is `CB` channels × `XT`
//!   pixels of one row, accumulated in registers over (input channel, ky, kx) from a
//!   zero-bordered copy of the input, so no tile is wasted on channels and padding costs one
//!   copy.
//! - **layer normalisation** over the trailing axes: tract expands ONNX `LayerNormalization`
//!   into ~9 nodes (two reductions, a broadcast chain); here it is two passes over the data.
//!
//! Each kernel has a portable reference (plain loops, f64 accumulation) that the tests compare
//! against. The fast paths are the same Rust code compiled for the CPU's vector unit: AVX2+FMA
//! on x86-64 (detected at run time), NEON with FMA on aarch64 (always present). Summation order
//! inside a pixel does not depend on the vector width, so x86-64 with FMA and aarch64 give
//! bit-identical results.
//!
use std::cell::RefCell;

use crate::isa::Isa;
use crate::team::{share, SharedMut, Team};

/// Geometry of a stride-1, dilation-1, single-group 2-D convolution on NCHW data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    /// Zero padding: top, left, bottom, right.
    pub pad: [usize; 4],
}

impl ConvShape {
    pub fn out_h(&self) -> usize {
        self.h + self.pad[0] + self.pad[2] + 1 - self.kh
    }
    pub fn out_w(&self) -> usize {
        self.w + self.pad[1] + self.pad[3] + 1 - self.kw
    }
    /// Whether the padded input is at least as large as the kernel.
    pub fn is_valid(&self) -> bool {
        self.ci > 0
            && self.co > 0
            && self.kh > 0
            && self.kw > 0
            && self.h + self.pad[0] + self.pad[2] >= self.kh
            && self.w + self.pad[1] + self.pad[3] >= self.kw
    }
    /// Images in a call's `x` (`n × ci × h × w`), checking `out` (`n × co × out_h × out_w`)
    /// and a run-time `bias` (`co` or `n × co` values) against it.
    pub(crate) fn images(&self, x: &[f32], out: &[f32], bias: Option<&[f32]>) -> usize {
        let image_in = self.ci * self.h * self.w;
        let n = x.len() / image_in;
        assert_eq!(x.len(), n * image_in, "input length for {self:?}");
        assert_eq!(
            out.len(),
            n * self.co * self.out_h() * self.out_w(),
            "output length for {self:?}"
        );
        if let Some(b) = bias {
            assert!(
                b.len() == self.co || b.len() == n * self.co,
                "bias length for {self:?}"
            );
        }
        n
    }
    fn padded_h(&self) -> usize {
        self.h + self.pad[0] + self.pad[2]
    }
    fn padded_w(&self) -> usize {
        self.w + self.pad[1] + self.pad[3]
    }
}

/// Weights and bias laid out for one register tile shape: `[co / CB][ci][kh][kw][CB]`, output
/// channels padded with zeros up to a multiple of CB.
///
/// The input is copied once per image into a zero-bordered buffer of `padded_h × padded_w`
/// per channel. Output pixel (y, x) is computed at the buffer position q = y·padded_w + x, so
/// tap (ky, kx) reads position q + ky·padded_w + kx: a run of consecutive positions is one
/// contiguous load per tap whatever the row width. A tile covers XT consecutive positions
/// (it may straddle rows; the kw − 1 positions past each row's end are computed and dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedConv {
    pub shape: ConvShape,
    pub kernels: Isa,
    cb: usize,
    xt: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedConv {
    /// `weights` in OIHW order (`co × ci × kh × kw`), `bias` per output channel (or empty).
    /// `kernels` must be supported by this CPU.
    pub fn new(shape: ConvShape, weights: &[f32], bias: &[f32], kernels: Isa) -> PackedConv {
        assert!(shape.is_valid(), "invalid convolution {shape:?}");
        assert!(kernels.is_supported(), "{kernels:?}");
        let ConvShape { ci, co, kh, kw, .. } = shape;
        assert_eq!(weights.len(), co * ci * kh * kw, "weights for {shape:?}");
        assert!(bias.is_empty() || bias.len() == co, "bias for {shape:?}");
        // The tile that wastes least on padding channels and dropped positions (ties: the
        // first listed, which loads least per multiply-add).
        let positions = shape.out_h() * shape.padded_w();
        let tile = *kernels
            .tiles()
            .iter()
            .min_by_key(|(cb, xt)| co.div_ceil(*cb) * cb * positions.div_ceil(*xt) * xt)
            .unwrap();
        PackedConv::with_tile(shape, weights, bias, kernels, tile)
    }

    /// As [`PackedConv::new`] with a given tile, one of `kernels`' tiles.
    pub(crate) fn with_tile(
        shape: ConvShape,
        weights: &[f32],
        bias: &[f32],
        kernels: Isa,
        (cb, xt): (usize, usize),
    ) -> PackedConv {
        assert!(
            kernels.tiles().contains(&(cb, xt)),
            "{kernels:?} has no tile {cb}×{xt}"
        );
        let ConvShape { ci, co, kh, kw, .. } = shape;
        let blocks = co.div_ceil(cb);
        let taps = ci * kh * kw;
        let mut packed = vec![0.0f32; blocks * taps * cb];
        for o in 0..co {
            let (blk, j) = (o / cb, o % cb);
            for t in 0..taps {
                packed[(blk * taps + t) * cb + j] = weights[o * taps + t];
            }
        }
        let mut b = vec![0.0f32; blocks * cb];
        b[..bias.len()].copy_from_slice(bias);
        PackedConv {
            shape,
            kernels,
            cb,
            xt,
            weights: packed,
            bias: b,
        }
    }

    /// The tile shape chosen: (output channels, positions).
    pub fn tile(&self) -> (usize, usize) {
        (self.cb, self.xt)
    }

    /// Floats of the zero-bordered copy: every plane, plus the overrun of the last tile.
    fn scratch_len(&self) -> usize {
        let s = &self.shape;
        (s.ci * s.padded_h() * s.padded_w() + self.xt + s.kw).max(s.ci * self.xt)
    }

    /// `x`: `n × ci × h × w`; `out`: `n × co × out_h × out_w`; `relu`: max(·, 0) on the way out.
    pub fn run(&self, x: &[f32], out: &mut [f32], relu: bool) {
        self.run_with_bias(x, out, relu, None)
    }

    /// As [`PackedConv::run`], with a bias computed at run time (replacing the packed one):
    /// `co` values for every image, or `n × co`, one row per image.
    pub fn run_with_bias(&self, x: &[f32], out: &mut [f32], relu: bool, bias: Option<&[f32]>) {
        self.run_on(None, x, out, relu, bias)
    }

    /// As [`PackedConv::run_with_bias`], split between the threads of `team`: whole images per
    /// thread when there are at least as many images as threads, otherwise each image's tiles
    /// (channel blocks × positions). Same bits as one thread: every output is computed whole by
    /// one thread, in the same order.
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

    /// [`PackedConv::run_on`], splitting layers of at least `min_macs` multiply-adds.
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
        let (image_in, image_out) = (s.ci * s.h * s.w, s.co * s.out_h() * s.out_w());
        let n = s.images(x, out, bias);
        // Small layers stay on one thread: below about a million multiply-adds (≈ 15 µs) the
        // data moving between cores costs what the second core saves (measured on 28×28 and
        // 7×7 layers of the digit model).
        let macs = n * s.co * s.ci * s.kh * s.kw * s.out_h() * s.out_w();
        let team = team.filter(|t| t.threads() > 1 && macs >= min_macs);
        let threads = team.map_or(1, Team::threads);
        if let Some(team) = team.filter(|_| n >= threads) {
            let dst = SharedMut(out.as_mut_ptr());
            team.run(threads, &|p| {
                let images = share(n, p, threads);
                // Safety: the parts write disjoint images of `out`.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(
                        dst.at(images.start * image_out),
                        images.len() * image_out,
                    )
                };
                let b = bias.map(|b| match b.len() == s.co {
                    true => b,
                    false => &b[images.start * s.co..images.end * s.co],
                });
                self.run_on(
                    None,
                    &x[images.start * image_in..images.end * image_in],
                    o,
                    relu,
                    b,
                );
            });
            return;
        }
        let blocks = self.bias.len() / self.cb;
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let need = self.scratch_len();
            let (pad, rest) = aligned(&mut scratch, need + self.bias.len()).split_at_mut(need);
            for (i, (xi, oi)) in x
                .chunks_exact(image_in)
                .zip(out.chunks_exact_mut(image_out))
                .enumerate()
            {
                let bias = self.image_bias(bias, i, rest);
                let dst = SharedMut(oi.as_mut_ptr());
                if self.is_pointwise() {
                    let tiles = (s.h * s.w).div_ceil(self.xt);
                    let part = |p: usize| {
                        // Positions split when there are enough, else channel blocks.
                        let (t, b) = match tiles >= threads {
                            true => (share(tiles, p, threads), 0..blocks),
                            false => (0..tiles, share(blocks, p, threads)),
                        };
                        PACKED.with(|buf| {
                            let mut buf = buf.borrow_mut();
                            let buf = aligned(&mut buf, s.ci * self.xt);
                            // Safety: parts write disjoint (block, tile) outputs of this image.
                            unsafe { self.image_pointwise(xi, buf, dst, relu, bias, t, b) }
                        })
                    };
                    match team {
                        Some(team) => team.run(threads, &part),
                        None => part(0),
                    }
                } else {
                    let (tiles, rows) = (self.tiles(), s.padded_h());
                    let padded = SharedMut(pad.as_mut_ptr());
                    // Safety (both jobs): parts fill disjoint rows, then write disjoint
                    // (block, tile) outputs of this image.
                    let fill = |p: usize, parts: usize| unsafe {
                        self.fill_padded_rows(xi, padded, share(rows, p, parts))
                    };
                    // Images with enough tiles split by position: each part fills the rows it
                    // then mostly reads, and writes the outputs the next layer's same part
                    // mostly reads. Small ones split channel blocks, filled by the caller
                    // (halves of 8×8 planes measured slower to fill than the whole).
                    let by_position = tiles >= 2 * threads;
                    match team.filter(|_| by_position) {
                        Some(team) => team.run(threads, &|p| fill(p, threads)),
                        None => fill(0, 1),
                    }
                    let pad: &[f32] = pad;
                    let part = |p: usize| unsafe {
                        if by_position {
                            // Items tile-major (tile · blocks + block), an even share each.
                            let items = share(tiles * blocks, p, threads);
                            let (t0, b0) = (items.start / blocks, items.start % blocks);
                            let (t1, b1) = (items.end / blocks, items.end % blocks);
                            if t0 == t1 {
                                self.image_region(pad, dst, relu, bias, t0..t0 + 1, b0..b1);
                                return;
                            }
                            self.image_region(pad, dst, relu, bias, t0..t0 + 1, b0..blocks);
                            self.image_region(pad, dst, relu, bias, t0 + 1..t1, 0..blocks);
                            self.image_region(pad, dst, relu, bias, t1..t1 + 1, 0..b1);
                        } else {
                            let b = share(blocks, p, threads);
                            self.image_region(pad, dst, relu, bias, 0..tiles, b);
                        }
                    };
                    match team {
                        Some(team) => team.run(threads, &part),
                        None => part(0),
                    }
                }
            }
        });
    }

    /// 1×1 without padding: a matrix product, whose input is better packed tile by tile.
    fn is_pointwise(&self) -> bool {
        let s = &self.shape;
        s.kh == 1 && s.kw == 1 && s.pad == [0; 4]
    }

    /// Tiles of XT positions per channel block, on the padded grid (`out_h × padded_w`).
    fn tiles(&self) -> usize {
        (self.shape.out_h() * self.shape.padded_w()).div_ceil(self.xt)
    }

    /// Tiles `tiles` × channel blocks `blocks` of one image of a 1×1 convolution without
    /// padding. Each tile's `ci × XT` inputs are copied next to each other into `buf` (zeros
    /// past the last position) and the blocks run on them while they sit in L1: the same sums
    /// as [`PackedConv::image_region`], read from a packed copy instead of the whole image's.
    ///
    /// # Safety
    /// `out` points to the image's `co × h × w` outputs; no other thread writes the ones of
    /// these tiles and blocks meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn image_pointwise(
        &self,
        x: &[f32],
        buf: &mut [f32],
        out: SharedMut,
        relu: bool,
        bias: &[f32],
        tiles: std::ops::Range<usize>,
        blocks: std::ops::Range<usize>,
    ) {
        let s = &self.shape;
        let (cb, xt) = (self.cb, self.xt);
        let positions = s.h * s.w;
        let tile = self.tile_fn();
        let geo = TileGeometry {
            plane: xt,
            row: xt,
            ci: s.ci,
            kh: 1,
            kw: 1,
            w_tap: cb,
            w_ch: 1,
        };
        let packed = &mut buf[..s.ci * xt];
        let mut acc = [0.0f32; TILE_FLOATS];
        for q0 in tiles.map(|t| t * xt) {
            let len = xt.min(positions - q0);
            for (c, dst) in packed.chunks_exact_mut(xt).enumerate() {
                dst[..len].copy_from_slice(&x[c * positions + q0..][..len]);
                dst[len..].fill(0.0);
            }
            for blk in blocks.clone() {
                // Safety: the tile reads ci × xt packed floats, `acc` holds cb × xt, and the
                // kernels were checked to run on this CPU when packed.
                unsafe {
                    tile(
                        packed.as_ptr(),
                        &geo,
                        self.weights[blk * s.ci * cb..].as_ptr(),
                        bias[blk * cb..].as_ptr(),
                        acc.as_mut_ptr(),
                    )
                };
                for j in 0..cb.min(s.co - blk * cb) {
                    // Safety: inside the image (caller), and this part's.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out.at((blk * cb + j) * positions + q0), len)
                    };
                    store(dst, &acc[j * xt..][..len], relu);
                }
            }
        }
    }

    /// Image `i`'s bias per output channel, padded like the weights: the packed one, or the
    /// run-time one (`co` values for every image, or a row per image) copied into `buf`.
    fn image_bias<'a>(&'a self, bias: Option<&[f32]>, i: usize, buf: &'a mut [f32]) -> &'a [f32] {
        let co = self.shape.co;
        match bias {
            None => &self.bias,
            Some(b) => {
                let row = if b.len() == co { b } else { &b[i * co..][..co] };
                let padded = &mut buf[..self.bias.len()];
                padded[..co].copy_from_slice(row);
                padded[co..].fill(0.0);
                padded
            }
        }
    }

    /// Padded rows `rows` (of `padded_h`) of every plane of one image's zero-bordered copy:
    /// the image's rows with `pad[1]` and `pad[3]` zeros either side, or zeros. The part with
    /// the last row also zeroes the overrun past the planes.
    ///
    /// # Safety
    /// `pad` points to `scratch_len()` floats; no other thread touches these rows meanwhile.
    unsafe fn fill_padded_rows(&self, x: &[f32], pad: SharedMut, rows: std::ops::Range<usize>) {
        let s = &self.shape;
        let (hp, wp) = (s.padded_h(), s.padded_w());
        for c in 0..s.ci {
            let src = &x[c * s.h * s.w..][..s.h * s.w];
            for r in rows.clone() {
                // Safety: row r of plane c, inside `pad` (caller).
                let row = unsafe { std::slice::from_raw_parts_mut(pad.at((c * hp + r) * wp), wp) };
                match r.checked_sub(s.pad[0]).filter(|&y| y < s.h) {
                    Some(y) => {
                        row[..s.pad[1]].fill(0.0);
                        row[s.pad[1]..s.pad[1] + s.w].copy_from_slice(&src[y * s.w..][..s.w]);
                        row[s.pad[1] + s.w..].fill(0.0);
                    }
                    None => row.fill(0.0),
                }
            }
        }
        if rows.end == hp {
            let planes = s.ci * hp * wp;
            // Safety: the overrun, inside `pad` (caller).
            unsafe { std::slice::from_raw_parts_mut(pad.at(planes), self.scratch_len() - planes) }
                .fill(0.0);
        }
    }

    /// The register tile routine for this layer's kernel set and tile shape.
    fn tile_fn(&self) -> Tile {
        packed_tile_fn(self.kernels, (self.cb, self.xt))
    }

    /// Tiles `tiles` × channel blocks `blocks` of one image.
    ///
    /// # Safety
    /// `out` points to the image's `co × out_h × out_w` outputs; no other thread writes the
    /// ones of these tiles and blocks meanwhile.
    unsafe fn image_region(
        &self,
        pad: &[f32],
        out: SharedMut,
        relu: bool,
        bias: &[f32],
        tiles: std::ops::Range<usize>,
        blocks: std::ops::Range<usize>,
    ) {
        let tile = self.tile_fn();
        let s = &self.shape;
        let (ho, wo) = (s.out_h(), s.out_w());
        let (hp, wp) = (s.padded_h(), s.padded_w());
        let (cb, xt) = (self.cb, self.xt);
        let taps = s.ci * s.kh * s.kw;
        let geo = TileGeometry {
            plane: hp * wp,
            row: wp,
            ci: s.ci,
            kh: s.kh,
            kw: s.kw,
            w_tap: cb,
            w_ch: 1,
        };
        let positions = ho * wp;
        let mut acc = [0.0f32; TILE_FLOATS];
        debug_assert!(cb * xt <= TILE_FLOATS);
        // Block-major: each block's weights stay in L1 while the input streams past
        // (positions outer, keeping an input tile for every block, measured no faster on 3×3
        // layers).
        for (blk, q0) in blocks.flat_map(|b| tiles.clone().map(move |t| (b, t * xt))) {
            let wblk = &self.weights[blk * taps * cb..][..taps * cb];
            let bias = &bias[blk * cb..][..cb];
            let co0 = blk * cb;
            let valid_c = cb.min(s.co - co0);
            // Highest read: position q0 + xt − 1 + (kh − 1)·wp + kw − 1 of the last plane,
            // inside `pad` by `scratch_len`.
            debug_assert!(
                (s.ci - 1) * geo.plane + q0 + xt - 1 + (s.kh - 1) * wp + s.kw - 1 < pad.len()
            );
            // Safety: reads in bounds (above), `acc` holds cb × xt floats, and the
            // kernels were checked to run on this CPU when packed.
            unsafe {
                tile(
                    pad.as_ptr().add(q0),
                    &geo,
                    wblk.as_ptr(),
                    bias.as_ptr(),
                    acc.as_mut_ptr(),
                )
            };
            // Keep the positions that are output pixels (x < wo), row by row.
            let q1 = (q0 + xt).min(positions);
            let mut q = q0;
            while q < q1 {
                let (y, x) = (q / wp, q % wp);
                let end = (y * wp + wo).min(q1);
                if x < wo {
                    for j in 0..valid_c {
                        // Safety: inside the image (caller), and this item's.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                out.at(((co0 + j) * ho + y) * wo + x),
                                end - q,
                            )
                        };
                        store(dst, &acc[j * xt + q - q0..][..end - q], relu);
                    }
                }
                q = (y + 1) * wp;
            }
        }
    }
}

/// The strided register tile (weights read at any strides, for matrix products) of
/// `kernels` with `tile` = (channels, positions), one of `kernels`' tiles.
pub(crate) fn strided_tile_fn(kernels: Isa, tile: (usize, usize)) -> Tile {
    tile_routine(kernels, tile, true)
}

/// The packed register tile (weights laid out `[ci][kh][kw][CB]` per channel block) of
/// `kernels` with `tile` = (channels, positions), one of `kernels`' tiles.
pub(crate) fn packed_tile_fn(kernels: Isa, tile: (usize, usize)) -> Tile {
    tile_routine(kernels, tile, false)
}

/// The tile routine of `kernels` with `tile` = (channels, positions): packed weights, or
/// (`strided`) weights at the geometry's strides.
fn tile_routine(kernels: Isa, tile: (usize, usize), strided: bool) -> Tile {
    macro_rules! pick {
        ($($f:ident)::+, $a:literal, $b:literal) => {
            match strided {
                true => $($f)::+::<$a, $b, true> as Tile,
                false => $($f)::+::<$a, $b, false> as Tile,
            }
        };
    }
    match (kernels, tile.0, tile.1) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, 4, 64) => pick!(x86::tile_avx512, 4, 4),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, 8, 32) => pick!(x86::tile_avx512, 8, 2),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, 16, 16) => pick!(x86::tile_avx512, 16, 1),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, 4, 16) => pick!(x86::tile_avx2, 4, 2),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, 8, 8) => pick!(x86::tile_avx2, 8, 1),
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, 4, 16) => pick!(arm::tile_neon, 4, 4),
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, 8, 8) => pick!(arm::tile_neon, 8, 2),
        (Isa::Portable, 4, 16) => pick!(tile_portable, 4, 16),
        (Isa::Portable, 8, 8) => pick!(tile_portable, 8, 8),
        other => unreachable!("no tile {other:?}"),
    }
}

/// `dst = src`, or max(src, 0) with `relu`.
#[inline]
fn store(dst: &mut [f32], src: &[f32], relu: bool) {
    if relu {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.max(0.0);
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// Layers with fewer multiply-adds run on one thread even when a team is given.
pub(crate) const TEAM_MIN_MACS: usize = 1 << 20;

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
unsafe fn tile_portable<const CB: usize, const XT: usize, const STRIDED: bool>(
    input: *const f32,
    g: &TileGeometry,
    w: *const f32,
    bias: *const f32,
    acc: *mut f32,
) {
    let acc = unsafe { &mut *(acc as *mut [[f32; XT]; CB]) };
    let bias = unsafe { &*(bias as *const [f32; CB]) };
    for (a, b) in acc.iter_mut().zip(bias) {
        *a = [*b; XT];
    }
    let mut wt = w;
    for c in 0..g.ci {
        for ky in 0..g.kh {
            let row = unsafe { input.add(c * g.plane + ky * g.row) };
            for kx in 0..g.kw {
                let r = unsafe { &*(row.add(kx) as *const [f32; XT]) };
                for (j, aj) in acc.iter_mut().enumerate() {
                    let wj = unsafe { *wt.add(if STRIDED { j * g.w_ch } else { j }) };
                    for (a, x) in aj.iter_mut().zip(r) {
                        *a += wj * x;
                    }
                }
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
        ($name:ident, $feature:literal, $lanes:literal, $zero:ident, $set1:ident, $load:ident,
         $fma:ident, $store:ident) => {
            /// # Safety
            #[doc = concat!("CPU feature(s) `", $feature, "` present; pointers as")]
            #[doc = concat!("[`super::Tile`] for CB × ", $lanes, "V floats.")]
            #[target_feature(enable = $feature)]
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
        };
    }

    x86_tile!(
        tile_avx2,
        "avx2,fma",
        8,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    );
    x86_tile!(
        tile_avx512,
        "avx512f",
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
        match lane {
            0 => vfmaq_laneq_f32::<0>(acc, r, w),
            1 => vfmaq_laneq_f32::<1>(acc, r, w),
            2 => vfmaq_laneq_f32::<2>(acc, r, w),
            _ => vfmaq_laneq_f32::<3>(acc, r, w),
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

/// `len` floats of a scratch buffer from a 64-byte boundary, growing it as needed: rows whose
/// strides are multiples of 16 floats (Winograd's patches and products, packed tiles) then
/// start on a cache line, so that no vector load or store of them straddles two lines (the
/// heap gave addresses 16 bytes past one: Winograd 64→64 F(4×4) on 32×32 266 → 230 µs,
/// 64→64 16×16 79 → 67).
pub(crate) fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    const LINE: usize = 16;
    if buf.len() < len + LINE {
        buf.resize(len + LINE, 0.0);
    }
    let skip = buf.as_ptr().align_offset(4 * LINE).min(LINE);
    &mut buf[skip..skip + len]
}

thread_local! {
    /// The zero-bordered input copy: grows to the largest layer once per thread, then reused.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One tile's `ci × XT` inputs of a 1×1 layer, side by side.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Reference convolution: plain loops, f64 sums, bounds checks instead of padding (the
/// strided reference at stride 1).
pub fn conv_reference(shape: &ConvShape, x: &[f32], weights: &[f32], bias: &[f32]) -> Vec<f32> {
    let s = shape;
    let strided = crate::lowered::StridedShape {
        ci: s.ci,
        co: s.co,
        h: s.h,
        w: s.w,
        kh: s.kh,
        kw: s.kw,
        stride: [1, 1],
        pad: s.pad,
    };
    crate::lowered::strided_reference(&strided, x, weights, bias)
}

/// Layer normalisation in place over rows of `inner` values: `(x − mean) / √(var + eps) ·
/// scale + bias`, statistics in f32 with 8 running sums per pass.
pub fn layer_norm(x: &mut [f32], scale: &[f32], bias: Option<&[f32]>, eps: f32, kernels: Isa) {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 if Isa::Avx2.is_supported() => unsafe {
            layer_norm_avx2(x, scale, bias, eps)
        },
        _ => layer_norm_impl(x, scale, bias, eps),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn layer_norm_avx2(x: &mut [f32], scale: &[f32], bias: Option<&[f32]>, eps: f32) {
    layer_norm_impl(x, scale, bias, eps)
}

#[inline(always)]
fn layer_norm_impl(x: &mut [f32], scale: &[f32], bias: Option<&[f32]>, eps: f32) {
    let inner = scale.len();
    assert!(
        inner > 0 && x.len().is_multiple_of(inner),
        "layer norm rows"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), inner, "layer norm bias");
    }
    for row in x.chunks_exact_mut(inner) {
        let mean = lane_sum(row, |v| v) / inner as f32;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / inner as f32;
        let inv = 1.0 / (var + eps).sqrt();
        match bias {
            Some(b) => {
                for ((v, s), b) in row.iter_mut().zip(scale).zip(b) {
                    *v = (*v - mean) * inv * s + b;
                }
            }
            None => {
                for (v, s) in row.iter_mut().zip(scale) {
                    *v = (*v - mean) * inv * s;
                }
            }
        }
    }
}

/// Instance normalisation in place (GroupNorm as exported by PyTorch): `x` is rows of
/// `inner` values (one per batch item and channel, channels cycling); row r is normalised over
/// itself, then scaled by `scale[r % c]` and shifted by `bias[r % c]`. Statistics as in
/// [`layer_norm`].
pub fn instance_norm(
    x: &mut [f32],
    inner: usize,
    scale: &[f32],
    bias: &[f32],
    eps: f32,
    kernels: Isa,
) {
    assert!(
        inner > 0 && x.len().is_multiple_of(inner * scale.len().max(1)),
        "instance norm rows"
    );
    instance_norm_rows(x, 0, inner, scale, bias, eps, kernels)
}

/// [`instance_norm`] of whole rows `first_row`, `first_row + 1`, … of a larger tensor (row r
/// takes scale and bias of channel r mod c): a share of the rows for one thread.
pub fn instance_norm_rows(
    x: &mut [f32],
    first_row: usize,
    inner: usize,
    scale: &[f32],
    bias: &[f32],
    eps: f32,
    kernels: Isa,
) {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 if Isa::Avx2.is_supported() => unsafe {
            instance_norm_avx2(x, first_row, inner, scale, bias, eps)
        },
        _ => instance_norm_impl(x, first_row, inner, scale, bias, eps),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn instance_norm_avx2(
    x: &mut [f32],
    first_row: usize,
    inner: usize,
    scale: &[f32],
    bias: &[f32],
    eps: f32,
) {
    instance_norm_impl(x, first_row, inner, scale, bias, eps)
}

#[inline(always)]
fn instance_norm_impl(
    x: &mut [f32],
    first_row: usize,
    inner: usize,
    scale: &[f32],
    bias: &[f32],
    eps: f32,
) {
    let c = scale.len();
    assert!(c > 0 && bias.len() == c, "instance norm scale and bias");
    assert!(
        inner > 0 && x.len().is_multiple_of(inner),
        "instance norm rows"
    );
    for (r, row) in x.chunks_exact_mut(inner).enumerate() {
        let mean = lane_sum(row, |v| v) / inner as f32;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / inner as f32;
        let k = scale[(first_row + r) % c] / (var + eps).sqrt();
        let b = bias[(first_row + r) % c];
        for v in row.iter_mut() {
            *v = (*v - mean) * k + b;
        }
    }
}

/// Softmax in place over rows of `inner` values: `exp(x − max) / Σ exp(x − max)`, with
/// [`exp_approx`] (fused multiply-adds, exactly rounded wherever they run: the same bits on
/// every CPU; the portable set on x86 calls libm's `fmaf`, slowly).
pub fn softmax(x: &mut [f32], inner: usize, kernels: Isa) {
    assert!(inner > 0 && x.len().is_multiple_of(inner), "softmax rows");
    match kernels {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if Isa::Avx512.is_supported() => unsafe { softmax_avx512(x, inner) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 if Isa::Avx2.is_supported() => unsafe { softmax_avx2(x, inner) },
        _ => softmax_impl(x, inner),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn softmax_avx512(x: &mut [f32], inner: usize) {
    softmax_impl(x, inner)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(x: &mut [f32], inner: usize) {
    softmax_impl(x, inner)
}

#[inline(always)]
fn softmax_impl(x: &mut [f32], inner: usize) {
    const L: usize = 16;
    for row in x.chunks_exact_mut(inner) {
        let mut lanes = [f32::NEG_INFINITY; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        let mut sums = [0.0f32; L];
        let mut chunks = row.chunks_exact_mut(L);
        for c in &mut chunks {
            for i in 0..L {
                c[i] = exp_approx(c[i] - max);
                sums[i] += c[i];
            }
        }
        let mut sum = 0.0f32;
        for v in chunks.into_remainder() {
            *v = exp_approx(*v - max);
            sum += *v;
        }
        let inv = 1.0 / (sums.iter().sum::<f32>() + sum);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// e^x for x ≤ 0 (softmax after subtracting the row maximum), within [`EXP_REL_TOL`] of the
/// exact value down to e^-87 (inputs below are taken as −87: negligible next to the row
/// maximum's 1): 2^n · p(r) with n = round(x·log₂e), r = x − n·ln 2 in two parts
/// (Cody–Waite) and a degree-6 polynomial for e^r on |r| ≤ ln2/2 (Cephes' `expf`).
/// Relative error bound of [`exp_approx`] on [−87, 0] (measured 8.2e-8 on a 10⁶-point grid; the
/// bound allows 2 ulp).
pub const EXP_REL_TOL: f64 = 2.4e-7;

#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = if x < -87.0 { -87.0 } else { x };
    let n = x.mul_add(LOG2E, 0.5).floor();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_2e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let e = (p * r).mul_add(r, r) + 1.0;
    // 2^n built in the exponent field, without a float-to-int conversion (which does not
    // vectorise with Rust's saturating `as`): n + 127 ∈ [1, 255] lands in the low mantissa
    // bits of n + 127 + 1.5·2^23, and shifting by 23 moves it into the exponent.
    e * f32::from_bits((n + (127.0 + 12_582_912.0)).to_bits() << 23)
}

/// Sum of `f(v)` with 8 independent running sums (vectorisable; order fixed by the index).
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            lanes[i] += f(c[i]);
        }
    }
    for (i, &v) in chunks.remainder().iter().enumerate() {
        lanes[i] += f(v);
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

/// Reference layer normalisation: f64 statistics.
pub fn layer_norm_reference(x: &[f32], scale: &[f32], bias: Option<&[f32]>, eps: f32) -> Vec<f32> {
    let inner = scale.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(inner) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, &v) in row.iter().enumerate() {
            let b = bias.map_or(0.0, |b| b[i] as f64);
            out.push(((v as f64 - mean) * inv * scale[i] as f64 + b) as f32);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Max |fast − reference| allowed per output, relative to the sum of |x·w| terms of that
    /// output (f32 accumulation over ≤ 720 products: a few ulps of the magnitude).
    const CONV_REL_TOL: f64 = 1e-5;
    /// Max |fast − reference| of a softmax output beyond exp's own error: the f32 rounding of a
    /// sum of up to 256 terms that add up to 1, and of the final scaling.
    const SOFTMAX_ABS_TOL: f64 = 1e-6;

    /// Max |fast − reference| for layer norm outputs of unit scale (f32 statistics).
    const LN_ABS_TOL: f32 = 2e-5;

    /// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
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

    fn check_conv(shape: ConvShape, n: usize, kernels: Isa, tile: (usize, usize)) {
        let x = values(n * shape.ci * shape.h * shape.w, 1);
        let w = values(shape.co * shape.ci * shape.kh * shape.kw, 2);
        let b = values(shape.co, 3);
        let want = conv_reference(&shape, &x, &w, &b);
        let packed = PackedConv::with_tile(shape, &w, &b, kernels, tile);
        let mut got = vec![f32::NAN; want.len()];
        packed.run(&x, &mut got, false);
        // The magnitude bound of each output: Σ|x||w| + |b| ≤ ci·kh·kw + 1 for values in [-1, 1].
        let bound = (shape.ci * shape.kh * shape.kw + 1) as f64;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                ((*g - *w) as f64).abs() <= CONV_REL_TOL * bound,
                "{shape:?} n={n} {kernels:?} tile {tile:?}: output {i}: {g} vs reference {w}"
            );
        }
    }

    fn shapes() -> Vec<ConvShape> {
        let s = |ci, co, h, w, k, p| ConvShape {
            ci,
            co,
            h,
            w,
            kh: k,
            kw: k,
            pad: [p; 4],
        };
        vec![
            s(1, 10, 28, 28, 3, 1),  // first conv of the digit model
            s(10, 10, 28, 28, 3, 1), // 16-pixel tiles with a 12-pixel tail, 4-channel blocks + 2
            s(20, 40, 14, 14, 3, 1),
            s(40, 80, 7, 7, 3, 1), // 8-pixel tiles, 8-channel blocks
            s(80, 40, 4, 4, 3, 1),
            s(3, 5, 9, 17, 3, 0), // no padding
            s(2, 3, 6, 5, 5, 2),  // 5×5
            s(4, 7, 5, 33, 1, 0), // 1×1
            s(3, 3, 2, 2, 3, 1),  // output as small as the input
            ConvShape {
                ci: 2,
                co: 9,
                h: 7,
                w: 11,
                kh: 3,
                kw: 2,
                pad: [0, 1, 2, 0],
            }, // asymmetric
        ]
    }

    #[test]
    fn every_tile_of_every_kernel_set_matches_the_reference() {
        let sets = Isa::all_supported();
        eprintln!("kernel sets on this CPU: {sets:?}");
        for kernels in sets {
            for &tile in kernels.tiles() {
                for s in shapes() {
                    check_conv(s, 1, kernels, tile);
                }
                check_conv(shapes()[1], 3, kernels, tile);
            }
        }
    }

    #[test]
    fn relu_on_the_way_out_is_max_with_zero() {
        let s = shapes()[2];
        let x = values(s.ci * s.h * s.w, 21);
        let w = values(s.co * s.ci * 9, 22);
        let b = values(s.co, 23);
        for k in Isa::all_supported() {
            let p = PackedConv::new(s, &w, &b, k);
            let mut plain = vec![0.0; s.co * s.out_h() * s.out_w()];
            let mut relu = plain.clone();
            p.run(&x, &mut plain, false);
            p.run(&x, &mut relu, true);
            assert!(plain.iter().any(|v| *v < 0.0) && plain.iter().any(|v| *v > 0.0));
            for (r, v) in relu.iter().zip(&plain) {
                assert_eq!(*r, v.max(0.0), "{k:?}");
            }
        }
    }

    #[test]
    fn bias_given_at_run_time_replaces_the_packed_one() {
        // One bias row per image (a time embedding added after the conv, folded into it).
        let s = shapes()[1];
        let n = 3;
        let x = values(n * s.ci * s.h * s.w, 31);
        let w = values(s.co * s.ci * 9, 32);
        let rows = values(n * s.co, 33);
        for k in Isa::all_supported() {
            let p = PackedConv::new(s, &w, &[], k);
            let mut got = vec![0.0; n * s.co * s.out_h() * s.out_w()];
            p.run_with_bias(&x, &mut got, false, Some(&rows));
            let image_in = s.ci * s.h * s.w;
            let image_out = s.co * s.out_h() * s.out_w();
            for i in 0..n {
                let b = &rows[i * s.co..][..s.co];
                let want = conv_reference(&s, &x[i * image_in..][..image_in], &w, b);
                let bound = (s.ci * 9 + 1) as f64;
                for (g, r) in got[i * image_out..][..image_out].iter().zip(&want) {
                    assert!(
                        ((g - r) as f64).abs() <= CONV_REL_TOL * bound,
                        "{k:?} image {i}"
                    );
                }
            }
            // One row for all images.
            let mut one = vec![0.0; got.len()];
            p.run_with_bias(&x, &mut one, false, Some(&rows[..s.co]));
            let want = conv_reference(&s, &x, &w, &rows[..s.co]);
            let bound = (s.ci * 9 + 1) as f64;
            for (g, r) in one.iter().zip(&want) {
                assert!(
                    ((g - r) as f64).abs() <= CONV_REL_TOL * bound,
                    "{k:?} shared row"
                );
            }
        }
    }

    #[test]
    fn threads_give_the_same_outputs_as_one() {
        // Images split between threads when there are as many as threads; otherwise each
        // image's tiles (channel blocks × positions, or positions of a 1×1 layer): same bits.
        let team = Team::new(3).unwrap();
        for s in shapes() {
            for n in [1, 2, 5] {
                let x = values(n * s.ci * s.h * s.w, 41);
                let w = values(s.co * s.ci * s.kh * s.kw, 42);
                let rows = values(n * s.co, 43);
                for k in Isa::all_supported() {
                    let p = PackedConv::new(s, &w, &[], k);
                    let len = n * s.co * s.out_h() * s.out_w();
                    for bias in [None, Some(&rows[..s.co]), Some(&rows[..])] {
                        let (mut one, mut many) = (vec![0.0; len], vec![1.0; len]);
                        p.run_with_bias(&x, &mut one, true, bias);
                        p.run_split(Some(&team), 0, &x, &mut many, true, bias);
                        assert!(
                            one == many,
                            "{s:?} n={n} {k:?} bias {:?}",
                            bias.map(|b| b.len())
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_tile_chosen_wastes_least() {
        // 10 output channels on 28×28 (30-wide padded rows): 4×16 tiles pad 10 → 12 channels
        // and 840 → 848 positions; 8×8 pads 10 → 16 channels.
        let s = ConvShape {
            ci: 10,
            co: 10,
            h: 28,
            w: 28,
            kh: 3,
            kw: 3,
            pad: [1; 4],
        };
        let w = vec![0.0; 10 * 10 * 9];
        assert_eq!(PackedConv::new(s, &w, &[], Isa::Portable).tile(), (4, 16));
        // 8 channels on 4×4 (6-wide rows, 24 positions): 8×8 is exact, 4×16 pads to 32.
        let s = ConvShape {
            ci: 8,
            co: 8,
            h: 4,
            w: 4,
            kh: 3,
            kw: 3,
            pad: [1; 4],
        };
        let w = vec![0.0; 8 * 8 * 9];
        assert_eq!(PackedConv::new(s, &w, &[], Isa::Portable).tile(), (8, 8));
    }

    #[test]
    fn conv_delta_input_gives_the_flipped_kernel() {
        // Closed form: a single 1 at (cy, cx) of channel c produces w[o][c][cy+p-y][cx+p-x] + b.
        let shape = ConvShape {
            ci: 2,
            co: 3,
            h: 6,
            w: 6,
            kh: 3,
            kw: 3,
            pad: [1; 4],
        };
        let w = values(3 * 2 * 9, 7);
        let b = [0.5, -0.25, 0.0];
        let mut x = vec![0.0f32; 2 * 36];
        x[36 + 2 * 6 + 3] = 1.0; // channel 1, row 2, column 3
        let mut out = vec![0.0f32; 3 * 36];
        PackedConv::new(shape, &w, &b, Isa::best()).run(&x, &mut out, false);
        for o in 0..3 {
            for y in 0..6 {
                for xo in 0..6 {
                    let (ky, kx) = (2 + 1 - y as isize, 3 + 1 - xo as isize);
                    let expect = if (0..3).contains(&ky) && (0..3).contains(&kx) {
                        w[((o * 2 + 1) * 3 + ky as usize) * 3 + kx as usize] + b[o]
                    } else {
                        b[o]
                    };
                    assert_eq!(out[(o * 6 + y) * 6 + xo], expect, "o={o} y={y} x={xo}");
                }
            }
        }
    }

    #[test]
    fn simd_kernel_sets_agree_bit_for_bit() {
        // Same fused multiply-adds in the same order: AVX2, AVX-512 and NEON give identical
        // outputs (what keeps x86-64 and ARM images the same), whatever tile each picks.
        let fma_sets: Vec<_> = Isa::all_supported()
            .into_iter()
            .filter(|k| *k != Isa::Portable)
            .collect();
        for s in shapes() {
            let x = values(s.ci * s.h * s.w, 11);
            let w = values(s.co * s.ci * s.kh * s.kw, 12);
            let b = values(s.co, 13);
            let want = {
                // Scalar fused multiply-add in the tile order: the definition.
                let mut out = vec![0.0f32; s.co * s.out_h() * s.out_w()];
                for o in 0..s.co {
                    for y in 0..s.out_h() {
                        for xo in 0..s.out_w() {
                            let mut a = b[o];
                            for c in 0..s.ci {
                                for ky in 0..s.kh {
                                    for kx in 0..s.kw {
                                        let iy = (y + ky) as isize - s.pad[0] as isize;
                                        let ix = (xo + kx) as isize - s.pad[1] as isize;
                                        let v = if iy < 0
                                            || ix < 0
                                            || iy >= s.h as isize
                                            || ix >= s.w as isize
                                        {
                                            0.0
                                        } else {
                                            x[(c * s.h + iy as usize) * s.w + ix as usize]
                                        };
                                        a = w[((o * s.ci + c) * s.kh + ky) * s.kw + kx]
                                            .mul_add(v, a);
                                    }
                                }
                            }
                            out[(o * s.out_h() + y) * s.out_w() + xo] = a;
                        }
                    }
                }
                out
            };
            for &k in &fma_sets {
                for &tile in k.tiles() {
                    let mut got = vec![0.0; want.len()];
                    PackedConv::with_tile(s, &w, &b, k, tile).run(&x, &mut got, false);
                    assert!(got == want, "{s:?} {k:?} {tile:?} differs from scalar FMA");
                }
            }
        }
    }

    #[test]
    fn exp_approx_is_within_its_bound() {
        let mut worst = 0.0f64;
        for i in 0..=1_000_000 {
            let x = -87.0 * i as f32 / 1e6;
            let want = (x as f64).exp();
            let rel = ((exp_approx(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
            assert!(rel <= EXP_REL_TOL, "exp({x}): {} vs {want}", exp_approx(x));
        }
        assert_eq!(exp_approx(0.0), 1.0);
        eprintln!("exp_approx: max relative error {worst:.2e}");
    }

    #[test]
    fn softmax_matches_reference_and_is_the_same_on_every_kernel_set() {
        for inner in [1, 7, 16, 33, 256] {
            let x: Vec<f32> = values(3 * inner, inner as u64)
                .iter()
                .map(|v| v * 12.0)
                .collect();
            let mut want = vec![0.0f64; x.len()];
            for (row, out) in x.chunks(inner).zip(want.chunks_mut(inner)) {
                let max = row.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
                let total: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = (v as f64 - max).exp() / total;
                }
            }
            let mut first: Option<Vec<f32>> = None;
            for k in Isa::all_supported() {
                let mut got = x.clone();
                softmax(&mut got, inner, k);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    // exp's error plus the f32 sum of up to 256 terms ≤ 1.
                    assert!(
                        (*g as f64 - w).abs() <= EXP_REL_TOL * w + SOFTMAX_ABS_TOL,
                        "inner {inner} {k:?} [{i}]: {g} vs {w}"
                    );
                }
                match &first {
                    None => first = Some(got),
                    Some(f) => assert!(f == &got, "inner {inner}: {k:?} differs"),
                }
            }
        }
    }

    #[test]
    fn layer_norm_matches_reference() {
        for (rows, inner) in [(1, 10 * 28 * 28), (3, 80 * 7 * 7), (2, 13), (1, 1)] {
            let x = values(rows * inner, 5);
            let scale = values(inner, 6);
            let bias = values(inner, 8);
            for bias in [Some(&bias[..]), None] {
                let want = layer_norm_reference(&x, &scale, bias, 1e-5);
                for k in [Isa::Portable, Isa::best()] {
                    let mut got = x.clone();
                    layer_norm(&mut got, &scale, bias, 1e-5, k);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= LN_ABS_TOL,
                            "rows={rows} inner={inner} {k:?}: {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn instance_norm_matches_reference() {
        // n = 2, c = 3, 5×7 planes: each plane is a layer-norm row with a scalar affine.
        let (n, c, inner) = (2, 3, 35);
        let x = values(n * c * inner, 51);
        let scale = values(c, 52);
        let bias = values(c, 53);
        let mut want = Vec::new();
        for (r, row) in x.chunks(inner).enumerate() {
            want.extend(layer_norm_reference(
                row,
                &vec![scale[r % c]; inner],
                Some(&vec![bias[r % c]; inner]),
                1e-5,
            ));
        }
        for k in Isa::all_supported() {
            let mut got = x.clone();
            instance_norm(&mut got, inner, &scale, &bias, 1e-5, k);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= LN_ABS_TOL, "{k:?}: {i}: {g} vs {w}");
            }
            // A thread's share of rows (starting mid-image, at channel 1) gives the same bits.
            let mut parts = x.clone();
            let (head, tail) = parts.split_at_mut(4 * inner);
            instance_norm_rows(head, 0, inner, &scale, &bias, 1e-5, k);
            instance_norm_rows(tail, 4, inner, &scale, &bias, 1e-5, k);
            assert!(parts == got, "{k:?}: rows in two shares");
        }
    }

    #[test]
    fn layer_norm_closed_form() {
        // Row [1, 2, 3, 4]: mean 2.5, variance 1.25; with eps 0 each value is (v − 2.5)/√1.25.
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], Some(&[0.0; 4]), 0.0, Isa::best());
        let s = 1.25f32.sqrt();
        for (v, want) in x.iter().zip([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]) {
            assert!((v - want).abs() <= LN_ABS_TOL, "{v} vs {want}");
        }
    }
}
