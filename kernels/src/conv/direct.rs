//! Direct convolution, stride 1, NCHW, f32: tract lowers a 3×3 conv to lazy im2col + a
//! matrix product whose row tile (16 on AVX2) is mostly padding when a layer has 10–40 output
//! channels, plus an explicit `Pad` node. Here each output tile is `CB` channels × `XT`
//! positions, accumulated in registers ([`crate::tile`]) over (input channel, ky, kx) from a
//! zero-bordered copy of the input, so no tile is wasted on channels and padding costs one
//! copy. 1×1 layers without padding (matrix products) pack each tile's inputs instead.
//!
//! Summation order inside an output does not depend on the vector width, so AVX2, AVX-512 and
//! NEON give bit-identical results.

use std::cell::RefCell;
use std::ops::Range;

use crate::conv::shape::ConvShape;
use crate::isa::Isa;
use crate::scratch::aligned;
use crate::team::{share, Team, TEAM_MIN_MACS};
use crate::tile::{packed_tile_fn, Tile, TileGeometry, TILE_FLOATS};
use crate::view::DisjointMut;

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
        assert!(
            shape.is_valid() && shape.is_stride_1(),
            "not a stride-1 convolution: {shape:?}"
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
            let dst = DisjointMut::new(out);
            team.run(threads, &|p| {
                let images = share(n, p, threads);
                // SAFETY: the parts write disjoint images of `out`.
                let o = unsafe { dst.slice_mut(images.start * image_out..images.end * image_out) };
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
                let dst = DisjointMut::new(oi);
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
                            // SAFETY: parts write disjoint (block, tile) outputs of this image.
                            unsafe { self.image_pointwise(xi, buf, dst, relu, bias, t, b) }
                        })
                    };
                    match team {
                        Some(team) => team.run(threads, &part),
                        None => part(0),
                    }
                } else {
                    let (tiles, rows) = (self.tiles(), s.padded_h());
                    let padded = DisjointMut::new(&mut *pad);
                    // SAFETY: parts fill disjoint rows.
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
                    // SAFETY: parts write disjoint (block, tile) outputs of this image.
                    let part = |p: usize| unsafe {
                        if by_position {
                            // Items tile-major (tile · blocks + block), an even share each.
                            let items = share(tiles * blocks, p, threads);
                            for (t, b) in item_regions(items, blocks) {
                                self.image_region(pad, dst, relu, bias, t, b);
                            }
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
        out: DisjointMut<'_, f32>,
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
                // SAFETY: the tile reads ci × xt packed floats, `acc` holds cb × xt, and the
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
                    let at = (blk * cb + j) * positions + q0;
                    // SAFETY: inside the image (caller), and this part's.
                    let dst = unsafe { out.slice_mut(at..at + len) };
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
    unsafe fn fill_padded_rows(
        &self,
        x: &[f32],
        pad: DisjointMut<'_, f32>,
        rows: std::ops::Range<usize>,
    ) {
        let s = &self.shape;
        let (hp, wp) = (s.padded_h(), s.padded_w());
        for c in 0..s.ci {
            let src = &x[c * s.h * s.w..][..s.h * s.w];
            for r in rows.clone() {
                let at = (c * hp + r) * wp;
                // SAFETY: row r of plane c, inside `pad` (caller).
                let row = unsafe { pad.slice_mut(at..at + wp) };
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
            // SAFETY: the overrun, inside `pad` (caller).
            unsafe { pad.slice_mut(planes..self.scratch_len()) }.fill(0.0);
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
        out: DisjointMut<'_, f32>,
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
            // SAFETY: reads in bounds (above), `acc` holds cb × xt floats, and the
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
                        let at = ((co0 + j) * ho + y) * wo + x;
                        // SAFETY: inside the image (caller), and this item's.
                        let dst = unsafe { out.slice_mut(at..at + end - q) };
                        store(dst, &acc[j * xt + q - q0..][..end - q], relu);
                    }
                }
                q = (y + 1) * wp;
            }
        }
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

/// Items `items` of a grid numbered tile-major (item = tile · blocks + block) as three
/// rectangles (tiles, blocks), some of them empty: the first tile's blocks from the first
/// item on, the whole tiles between, the last tile's blocks before the end.
fn item_regions(items: Range<usize>, blocks: usize) -> [(Range<usize>, Range<usize>); 3] {
    let (t0, b0) = (items.start / blocks, items.start % blocks);
    let (t1, b1) = (items.end / blocks, items.end % blocks);
    if t0 == t1 {
        return [(t0..t0 + 1, b0..b1), (t0..t0, 0..0), (t0..t0, 0..0)];
    }
    [
        (t0..t0 + 1, b0..blocks),
        (t0 + 1..t1, 0..blocks),
        (t1..t1 + 1, 0..b1),
    ]
}

thread_local! {
    /// The zero-bordered input copy: grows to the largest layer once per thread, then reused.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One tile's `ci × XT` inputs of a 1×1 layer, side by side.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::reference::conv_reference;
    use crate::testing::{abs, isas, values, Errors};

    /// Largest |fast − reference| of an output over its own error scale Σ|x·w| + |b| (the
    /// sum of the absolute values of the terms it adds: the standard bound of an f32 sum's
    /// rounding, |error| ≤ γ_n·Σ|terms| with γ_n ≈ n·2⁻²⁴, n ≤ 721 here). Measured worst
    /// (x86-64 AVX-512, AVX2, portable; aarch64 NEON, portable under qemu Cortex-A72):
    /// 3.35e-7 (run-time bias, AVX-512 = AVX2 = NEON), 2.52e-7 there portable; every tile:
    /// 1.99e-7 SIMD, 2.02e-7 portable.
    const CONV_MAX_TOL: f64 = 1e-6;
    /// The same ratio's mean over all outputs of a run. Measured worst (as above): 2.39e-8
    /// (every tile, portable), 2.23e-8 SIMD; run-time bias 1.75e-8 portable, 1.69e-8 SIMD.
    const CONV_MEAN_TOL: f64 = 7e-8;

    /// The reference outputs of `shape` on `x`, and each output's error scale Σ|x·w| + |b|
    /// (the reference run on absolute values).
    fn reference(shape: &ConvShape, x: &[f32], w: &[f32], b: &[f32]) -> (Vec<f32>, Vec<f32>) {
        (
            conv_reference(shape, x, w, b),
            conv_reference(shape, &abs(x), &abs(w), &abs(b)),
        )
    }

    /// `got`'s errors against the reference, asserted within [`CONV_MAX_TOL`] and
    /// [`CONV_MEAN_TOL`].
    fn assert_close(got: &[f32], want: &[f32], scale: &[f32], what: &str) -> Errors {
        let e = Errors::of(got, want, scale);
        assert!(
            e.max <= CONV_MAX_TOL && e.mean <= CONV_MEAN_TOL,
            "{what}: max |error|/Σ|x·w| {:.2e} (output {}: {} vs reference {}), mean {:.2e}",
            e.max,
            e.at,
            got[e.at],
            want[e.at],
            e.mean
        );
        e
    }

    fn check_conv(shape: ConvShape, n: usize, kernels: Isa, tile: (usize, usize)) -> Errors {
        let x = values(n * shape.ci * shape.h * shape.w, 1);
        let w = values(shape.co * shape.ci * shape.kh * shape.kw, 2);
        let b = values(shape.co, 3);
        let (want, scale) = reference(&shape, &x, &w, &b);
        let packed = PackedConv::with_tile(shape, &w, &b, kernels, tile);
        let mut got = vec![f32::NAN; want.len()];
        packed.run(&x, &mut got, false);
        let what = format!("{shape:?} n={n} {kernels:?} tile {tile:?}");
        assert_close(&got, &want, &scale, &what)
    }

    fn shapes() -> Vec<ConvShape> {
        let s = |ci, co, h, w, k, p| ConvShape {
            ci,
            co,
            h,
            w,
            kh: k,
            kw: k,
            stride: [1, 1],
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
            s(4, 7, 5, 33, 1, 0), // 1×1: the pointwise path
            s(4, 7, 5, 9, 1, 1),  // 1×1 with padding: not pointwise
            s(3, 3, 2, 2, 3, 1),  // output as small as the input
            ConvShape {
                ci: 2,
                co: 9,
                h: 7,
                w: 11,
                kh: 3,
                kw: 2,
                stride: [1, 1],
                pad: [0, 1, 2, 0],
            }, // asymmetric
            ConvShape {
                ci: 3,
                co: 5,
                h: 6,
                w: 7,
                kh: 3,
                kw: 1,
                stride: [1, 1],
                pad: [0; 4],
            }, // 3×1 without padding: not pointwise
            ConvShape {
                ci: 3,
                co: 5,
                h: 6,
                w: 7,
                kh: 1,
                kw: 3,
                stride: [1, 1],
                pad: [0; 4],
            }, // 1×3 without padding: not pointwise
        ]
    }

    #[test]
    fn every_tile_of_every_kernel_set_matches_the_reference() {
        let sets = isas();
        eprintln!("kernel sets on this CPU: {sets:?}");
        for kernels in sets {
            let mut worst = Errors::default();
            for &tile in kernels.tiles() {
                for s in shapes() {
                    worst = worst.worst(check_conv(s, 1, kernels, tile));
                }
                worst = worst.worst(check_conv(shapes()[1], 3, kernels, tile));
            }
            eprintln!(
                "direct conv {kernels:?}: measured |error|/Σ|x·w| max {:.2e} mean {:.2e} \
                 (limits {CONV_MAX_TOL:e}, {CONV_MEAN_TOL:e})",
                worst.max, worst.mean
            );
        }
    }

    #[test]
    fn relu_on_the_way_out_is_max_with_zero() {
        let s = shapes()[2];
        let x = values(s.ci * s.h * s.w, 21);
        let w = values(s.co * s.ci * 9, 22);
        let b = values(s.co, 23);
        for k in isas() {
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
        for k in isas() {
            let mut worst = Errors::default();
            let p = PackedConv::new(s, &w, &[], k);
            let mut got = vec![0.0; n * s.co * s.out_h() * s.out_w()];
            p.run_with_bias(&x, &mut got, false, Some(&rows));
            let image_in = s.ci * s.h * s.w;
            let image_out = s.co * s.out_h() * s.out_w();
            for i in 0..n {
                let b = &rows[i * s.co..][..s.co];
                let (want, scale) = reference(&s, &x[i * image_in..][..image_in], &w, b);
                let got = &got[i * image_out..][..image_out];
                worst = worst.worst(assert_close(
                    got,
                    &want,
                    &scale,
                    &format!("{k:?} image {i}"),
                ));
            }
            // One row for all images.
            let mut one = vec![0.0; got.len()];
            p.run_with_bias(&x, &mut one, false, Some(&rows[..s.co]));
            let (want, scale) = reference(&s, &x, &w, &rows[..s.co]);
            let e = assert_close(&one, &want, &scale, &format!("{k:?} shared row"));
            eprintln!(
                "run-time bias {k:?}: measured |error|/Σ|x·w| max {:.2e} mean {:.2e}",
                worst.worst(e).max,
                worst.worst(e).mean
            );
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
                for k in isas() {
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
    fn a_share_of_items_is_its_tiles_and_blocks_exactly() {
        // Every item of every thread's share once, and only its own: the regions a part runs
        // cover its items and no other part's.
        for blocks in 1..=5 {
            for tiles in 0..=7 {
                for threads in 1..=4 {
                    let mut seen = vec![0; tiles * blocks];
                    for p in 0..threads {
                        let items = share(tiles * blocks, p, threads);
                        for (t, b) in item_regions(items.clone(), blocks) {
                            for item in t.flat_map(|t| b.clone().map(move |b| t * blocks + b)) {
                                assert!(
                                    items.contains(&item),
                                    "{tiles} tiles × {blocks} blocks, part {p}/{threads}: \
                                     item {item} outside {items:?}"
                                );
                                seen[item] += 1;
                            }
                        }
                    }
                    assert!(
                        seen.iter().all(|&n| n == 1),
                        "{tiles} tiles × {blocks} blocks, {threads} parts: {seen:?}"
                    );
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
            stride: [1, 1],
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
            stride: [1, 1],
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
            stride: [1, 1],
            pad: [1; 4],
        };
        let w = values(3 * 2 * 9, 7);
        let b = [0.5, -0.25, 0.0];
        let mut x = vec![0.0f32; 2 * 36];
        x[36 + 2 * 6 + 3] = 1.0; // channel 1, row 2, column 3
        let mut out = vec![0.0f32; 3 * 36];
        for k in isas() {
            PackedConv::new(shape, &w, &b, k).run(&x, &mut out, false);
            for o in 0..3 {
                for y in 0..6 {
                    for xo in 0..6 {
                        let (ky, kx) = (2 + 1 - y as isize, 3 + 1 - xo as isize);
                        let expect = if (0..3).contains(&ky) && (0..3).contains(&kx) {
                            w[((o * 2 + 1) * 3 + ky as usize) * 3 + kx as usize] + b[o]
                        } else {
                            b[o]
                        };
                        assert_eq!(
                            out[(o * 6 + y) * 6 + xo],
                            expect,
                            "{k:?} o={o} y={y} x={xo}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn simd_kernel_sets_agree_bit_for_bit() {
        // Same fused multiply-adds in the same order: AVX2, AVX-512 and NEON give identical
        // outputs (what keeps x86-64 and ARM images the same), whatever tile each picks.
        let fma_sets: Vec<_> = isas().into_iter().filter(|k| *k != Isa::Portable).collect();
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
}
