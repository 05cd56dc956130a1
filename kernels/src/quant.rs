//! 8-bit convolutions: ONNX `QLinearConv` on 8-bit activations (u8 or s8) and s8 weights,
//! summed exactly in i32 and requantized into 8 bits as onnxruntime does.
//!
//! The layer is one matrix product, read in place (no im2col copy): the image is copied once
//! channels-last into a buffer bordered with the zero point, where an output pixel's taps for
//! one kernel row `ky` are `kw · ci` contiguous bytes. The weights are packed per output channel
//! as `kh` segments of `seg` bytes (`kw · ci` taps in `[kx][ci]` order, zero-padded to the
//! ISA's granule: the products with the bytes read past a pixel's taps are zero). A tile of
//! 4 channels × 4 pixels takes the 16 dot products over the `kh` segments:
//!
//! | [`DotIsa`] | product | per 16 bytes of one pair |
//! |---|---|---|
//! | `Portable` | i32 multiply-add | 16 |
//! | `Avx2` | `vpmovsxbw` + `vpmaddwd` (exact) | 1 + ½ (operands widened once per tile) |
//! | `Vnni` | AVX-512 VNNI `vpdpbusd` (ymm) | ½ |
//! | `Neon` | `smull` + `smlal2` + `sadalp` | 3 |
//! | `NeonDot` | `sdot` (FEAT_DotProd) | 1 |
//!
//! Activations are stored as s8 (`a = x − 128` for u8 data, `a = x` for s8), so every kernel
//! takes s8 × s8 products; the offsets (`x − x_zp = a + c`) and the difference of the VNNI
//! operand (`a + 128` as u8) are folded into a per-channel bias at pack time. All sums are
//! exact, so every kernel set gives the same bits. `smull`/`smlal2` add two products in 16 bits
//! before `sadalp` widens them: exact unless a weight is −128 (two products of 16 384); such
//! weights select the safe order (`sadalp` after each product).
//!
//! Requantization is onnxruntime's (`MlasRequantizeOutput`): `(acc + bias)` converted to f32,
//! times the f32 scale `x_scale · w_scale / y_scale`, clamped to the output range less its zero
//! point, rounded half to even, plus the zero point. The same sums can be stored as they are
//! (`ConvInteger`) or dequantized into f32 by one multiply per value ([`QuantOutput`]): the
//! integer convolution of a QDQ graph whose output feeds float operations.

use crate::conv::ConvShape;
use crate::team::{current, share, Team};
use crate::view::DisjointMut;

/// An 8-bit dot-product kernel set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DotIsa {
    /// Plain Rust i32 multiply-adds.
    Portable,
    /// x86-64 AVX2: bytes widened to i16, `vpmaddwd`.
    Avx2,
    /// x86-64 AVX-512 VNNI with VL (`vpdpbusd` on 256-bit registers).
    Vnni,
    /// aarch64 NEON: `smull`/`smlal2` into i16, `sadalp` into i32 (Cortex-A53, A57, A72).
    Neon,
    /// aarch64 FEAT_DotProd `sdot` (Cortex-A55, A76, A78).
    NeonDot,
}

impl DotIsa {
    /// Every 8-bit kernel set, whatever this CPU runs.
    pub const ALL: [DotIsa; 5] = [
        DotIsa::Portable,
        DotIsa::Avx2,
        DotIsa::Vnni,
        DotIsa::Neon,
        DotIsa::NeonDot,
    ];

    /// Whether this CPU can run these kernels (aarch64: from HWCAP, so qemu-user's emulated
    /// CPU decides).
    pub fn is_supported(self) -> bool {
        match self {
            DotIsa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            DotIsa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            DotIsa::Vnni => {
                std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx2")
            }
            #[cfg(target_arch = "aarch64")]
            DotIsa::Neon => true,
            #[cfg(target_arch = "aarch64")]
            DotIsa::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest 8-bit kernel set this CPU runs.
    pub fn best() -> DotIsa {
        [DotIsa::Vnni, DotIsa::Avx2, DotIsa::NeonDot, DotIsa::Neon]
            .into_iter()
            .find(|k| k.is_supported())
            .unwrap_or(DotIsa::Portable)
    }

    /// Every 8-bit kernel set this CPU runs.
    pub fn all_supported() -> Vec<DotIsa> {
        DotIsa::ALL
            .into_iter()
            .filter(|k| k.is_supported())
            .collect()
    }

    /// The set's short name, as `EDGE_SAMPLE_KERNELS` and `info` spell it.
    pub fn name(self) -> &'static str {
        match self {
            DotIsa::Portable => "portable",
            DotIsa::Avx2 => "avx2",
            DotIsa::Vnni => "vnni",
            DotIsa::Neon => "neon",
            DotIsa::NeonDot => "neon-dot",
        }
    }

    /// The set named `name` (as [`DotIsa::name`] spells it).
    pub fn from_name(name: &str) -> Option<DotIsa> {
        DotIsa::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Row length granule in bytes: one register of products per step.
    fn k_align(self) -> usize {
        match self {
            DotIsa::Vnni => 32,
            _ => 16,
        }
    }
}

/// Channels and pixels of one tile.
const TILE: usize = 4;

/// Pixels whose sums are kept before they are requantized together (a multiple of `TILE`).
const CHUNK: usize = 64;

/// 1.5 · 2²³: adding it to an f32 of magnitude below 2²² leaves the value rounded half to even
/// in the low mantissa bits (onnxruntime's `MlasRequantizeOutput` trick; it vectorizes, where
/// `round_ties_even` is a libm call on x86-64 without SSE4.1).
const MAGIC: f32 = 12_582_912.0;

/// [`requantize`] over a run of sums of one channel, into bytes of the output type: `lo_hi`
/// is the output range less the zero point.
fn requantize_run(
    acc: &[i32],
    bias: i32,
    scale: f32,
    lo_hi: [f32; 2],
    y_zero: i32,
    dst: &mut [u8],
) {
    let magic = MAGIC.to_bits() as i32;
    for (d, &a) in dst.iter_mut().zip(acc) {
        let v = (a.wrapping_add(bias) as f32 * scale)
            .max(lo_hi[0])
            .min(lo_hi[1])
            + MAGIC;
        // Two's complement: the low byte is the u8 or the i8 value alike.
        *d = (v.to_bits() as i32 - magic + y_zero) as u8;
    }
}

/// An 8-bit value type of ONNX (`tensor(uint8)` or `tensor(int8)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Q8 {
    U8,
    I8,
}

impl Q8 {
    /// Smallest and largest value.
    pub fn range(self) -> (i32, i32) {
        match self {
            Q8::U8 => (0, 255),
            Q8::I8 => (-128, 127),
        }
    }

    /// The value that a stored byte holds.
    pub fn value(self, byte: u8) -> i32 {
        match self {
            Q8::U8 => byte as i32,
            Q8::I8 => byte as i8 as i32,
        }
    }

    /// The byte that stores `v` (within [`Q8::range`]).
    pub fn byte(self, v: i32) -> u8 {
        match self {
            Q8::U8 => v as u8,
            Q8::I8 => v as i8 as u8,
        }
    }

    /// XOR that turns a stored byte into `a`, the s8 the kernels multiply (`x − 128` for u8).
    fn flip(self) -> u8 {
        match self {
            Q8::U8 => 0x80,
            Q8::I8 => 0,
        }
    }
}

/// The quantization of one `QLinearConv`: value types, scales and zero points.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantParams {
    pub x_type: Q8,
    pub x_scale: f32,
    pub x_zero: i32,
    /// One scale per output channel, or one for all.
    pub w_scale: Vec<f32>,
    pub y_type: Q8,
    pub y_scale: f32,
    pub y_zero: i32,
}

impl QuantParams {
    /// The requantization scale of channel `o`, computed as onnxruntime does.
    pub fn scale(&self, o: usize) -> f32 {
        let w = self.w_scale[if self.w_scale.len() == 1 { 0 } else { o }];
        self.x_scale * w / self.y_scale
    }
}

/// onnxruntime's requantization of one exact sum: `(acc + bias) · scale`, clamped to the
/// output type's range less the zero point, rounded half to even, plus the zero point.
pub fn requantize(acc: i32, scale: f32, y_zero: i32, y_type: Q8) -> i32 {
    let (lo, hi) = y_type.range();
    let v = (acc as f32 * scale)
        .max((lo - y_zero) as f32)
        .min((hi - y_zero) as f32);
    v.round_ties_even() as i32 + y_zero
}

/// ONNX `QuantizeLinear` as onnxruntime (MLAS) computes it: `x / y_scale`, clamped to the
/// output range less the zero point, rounded half to even, plus the zero point; into bytes of
/// `y_type`. A NaN gives the lowest value.
pub fn quantize(x: &[f32], y_scale: f32, y_zero: i32, y_type: Q8, y: &mut [u8]) {
    assert_eq!(x.len(), y.len(), "quantize lengths");
    let (lo, hi) = y_type.range();
    let (lo, hi) = ((lo - y_zero) as f32, (hi - y_zero) as f32);
    let magic = MAGIC.to_bits() as i32;
    for (d, &v) in y.iter_mut().zip(x) {
        let v = (v / y_scale).max(lo).min(hi) + MAGIC;
        *d = (v.to_bits() as i32 - magic + y_zero) as u8;
    }
}

/// The exact sums of a `QLinearConv` from its definition: i64 sums of `(x − x_zp)(w − 0)` over
/// the padded image plus `bias`, wrapped to i32 (what `ConvInteger` followed by an integer bias
/// gives). `x` is NCHW bytes of `p.x_type`, `w` is `[co][ci][kh][kw]`; returns NCHW sums.
pub fn qconv_sums_reference(
    shape: &ConvShape,
    x: &[u8],
    w: &[i8],
    bias: &[i32],
    p: &QuantParams,
) -> Vec<i32> {
    let s = shape;
    let (oh, ow) = (s.out_h(), s.out_w());
    let n = x.len() / (s.ci * s.h * s.w);
    let mut y = vec![0i32; n * s.co * oh * ow];
    for b in 0..n {
        for o in 0..s.co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0i64;
                    for c in 0..s.ci {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (oy * s.stride[0] + ky) as isize - s.pad[0] as isize;
                                let ix = (ox * s.stride[1] + kx) as isize - s.pad[1] as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xv = p.x_type.value(
                                    x[((b * s.ci + c) * s.h + iy as usize) * s.w + ix as usize],
                                );
                                let wv = w[((o * s.ci + c) * s.kh + ky) * s.kw + kx] as i64;
                                acc += (xv - p.x_zero) as i64 * wv;
                            }
                        }
                    }
                    let acc = acc + bias.get(o).copied().unwrap_or(0) as i64;
                    y[((b * s.co + o) * oh + oy) * ow + ox] = acc as i32;
                }
            }
        }
    }
    y
}

/// `QLinearConv` from its definition: [`qconv_sums_reference`], then [`requantize`]; returns
/// NCHW bytes of `p.y_type`.
pub fn qconv_reference(
    shape: &ConvShape,
    x: &[u8],
    w: &[i8],
    bias: &[i32],
    p: &QuantParams,
) -> Vec<u8> {
    let pixels = shape.out_h() * shape.out_w();
    qconv_sums_reference(shape, x, w, bias, p)
        .iter()
        .enumerate()
        .map(|(i, &acc)| {
            let o = i / pixels % shape.co;
            p.y_type
                .byte(requantize(acc, p.scale(o), p.y_zero, p.y_type))
        })
        .collect()
}

/// What a [`QuantConv`] stores of each exact sum `acc` (bias and offsets included), in the
/// element type [`QuantStore`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantOutput {
    /// `QLinearConv`: [`requantize`]d into bytes of the output type (`u8`).
    Requantized,
    /// `ConvInteger` (+ an integer bias): the sums themselves (`i32`).
    Sums,
    /// A dequantizing store: `acc as f32 · m[o]` with one f32 multiplier per channel (`f32`),
    /// what `ConvInteger → Add(bias) → Cast(float) → Mul(m)` computes, in one rounding.
    Dequantized,
}

/// An element type a [`QuantConv`] can store: `u8` (requantized), `i32` (sums), `f32`
/// (dequantized).
pub trait QuantStore: Copy + Default + Send + Sync + 'static {
    /// The output kind this type stores.
    const OUTPUT: QuantOutput;
    /// Channel `o`'s run of sums `acc` into `dst`.
    fn store(conv: &QuantConv, o: usize, acc: &[i32], dst: &mut [Self]);
}

impl QuantStore for u8 {
    const OUTPUT: QuantOutput = QuantOutput::Requantized;
    fn store(conv: &QuantConv, o: usize, acc: &[i32], dst: &mut [u8]) {
        let (lo, hi) = conv.params.y_type.range();
        let y_zero = conv.params.y_zero;
        let lo_hi = [(lo - y_zero) as f32, (hi - y_zero) as f32];
        requantize_run(acc, conv.bias[o], conv.scale[o], lo_hi, y_zero, dst);
    }
}

impl QuantStore for i32 {
    const OUTPUT: QuantOutput = QuantOutput::Sums;
    fn store(conv: &QuantConv, o: usize, acc: &[i32], dst: &mut [i32]) {
        let bias = conv.bias[o];
        for (d, &a) in dst.iter_mut().zip(acc) {
            *d = a.wrapping_add(bias);
        }
    }
}

impl QuantStore for f32 {
    const OUTPUT: QuantOutput = QuantOutput::Dequantized;
    fn store(conv: &QuantConv, o: usize, acc: &[i32], dst: &mut [f32]) {
        let (bias, m) = (conv.bias[o], conv.scale[o]);
        for (d, &a) in dst.iter_mut().zip(acc) {
            *d = a.wrapping_add(bias) as f32 * m;
        }
    }
}

/// A `QLinearConv` with its weights packed for one [`DotIsa`].
#[derive(Debug, Clone)]
pub struct QuantConv {
    shape: ConvShape,
    isa: DotIsa,
    params: QuantParams,
    /// Taps per output value (`kh · kw · ci`); bytes per kernel row (`kw · ci` padded to the
    /// ISA's granule) and per packed channel (`kh · seg`).
    k: usize,
    seg: usize,
    kp: usize,
    /// `[co rounded up to TILE][kh][seg]` weights, taps in `[kx][ci]` order, zero-padded.
    w: Vec<i8>,
    /// Per channel: the model's bias plus the folded offsets (see the module docs).
    bias: Vec<i32>,
    /// Per channel: the requantization scale, or the dequantizing multiplier.
    scale: Vec<f32>,
    output: QuantOutput,
    /// Whether a weight is −128 (`Neon` then adds each product pair in 32 bits).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    has_min_weight: bool,
}

/// Why a `QLinearConv` cannot run on [`QuantConv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantConvError {
    Shape(String),
}

impl std::fmt::Display for QuantConvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuantConvError::Shape(s) => write!(f, "{s}"),
        }
    }
}

impl QuantConv {
    /// Packs `w` (`[co][ci][kh][kw]`, weight zero point 0) and `bias` (empty or one per output
    /// channel) for `isa`.
    pub fn new(
        shape: ConvShape,
        w: &[i8],
        bias: &[i32],
        params: QuantParams,
        isa: DotIsa,
    ) -> Result<QuantConv, QuantConvError> {
        let s = shape;
        if !s.is_valid() {
            return Err(QuantConvError::Shape(format!("invalid shape {s:?}")));
        }
        if w.len() != s.co * s.ci * s.kh * s.kw {
            return Err(QuantConvError::Shape(format!(
                "{} weights for {s:?}",
                w.len()
            )));
        }
        if !(bias.is_empty() || bias.len() == s.co) {
            return Err(QuantConvError::Shape(format!(
                "{} biases for {} channels",
                bias.len(),
                s.co
            )));
        }
        if !(params.w_scale.len() == 1 || params.w_scale.len() == s.co) {
            return Err(QuantConvError::Shape(format!(
                "{} weight scales for {} channels",
                params.w_scale.len(),
                s.co
            )));
        }
        let k = s.kh * s.kw * s.ci;
        let seg = (s.kw * s.ci).next_multiple_of(isa.k_align());
        let kp = s.kh * seg;
        let cop = s.co.next_multiple_of(TILE);
        let mut packed = vec![0i8; cop * kp];
        for o in 0..s.co {
            for c in 0..s.ci {
                for ky in 0..s.kh {
                    for kx in 0..s.kw {
                        packed[o * kp + ky * seg + kx * s.ci + c] =
                            w[((o * s.ci + c) * s.kh + ky) * s.kw + kx];
                    }
                }
            }
        }
        // x − x_zp = a + c, with a the stored s8; VNNI multiplies a + 128.
        let c = match params.x_type {
            Q8::U8 => 128 - params.x_zero,
            Q8::I8 => -params.x_zero,
        };
        let c = if isa == DotIsa::Vnni { c - 128 } else { c };
        let bias = (0..s.co)
            .map(|o| {
                let sum: i32 = packed[o * kp..(o + 1) * kp].iter().map(|&v| v as i32).sum();
                bias.get(o).copied().unwrap_or(0).wrapping_add(c * sum)
            })
            .collect();
        let scale = (0..s.co).map(|o| params.scale(o)).collect();
        Ok(QuantConv {
            shape,
            isa,
            k,
            seg,
            kp,
            has_min_weight: w.contains(&i8::MIN),
            w: packed,
            bias,
            scale,
            output: QuantOutput::Requantized,
            params,
        })
    }

    /// The same convolution storing its exact sums (`i32`, [`QuantOutput::Sums`]); the
    /// parameters' output type, scale and zero point are then unused.
    pub fn with_sums(mut self) -> QuantConv {
        self.output = QuantOutput::Sums;
        self
    }

    /// The same convolution storing `(sum + bias[o]) as f32 · multiplier[o]` (`f32`,
    /// [`QuantOutput::Dequantized`]): `bias` (empty, one, or one per channel) is added to the
    /// integer bias it has, `multiplier` holds one value or one per channel.
    pub fn with_dequantized(
        mut self,
        bias: &[i32],
        multiplier: &[f32],
    ) -> Result<QuantConv, QuantConvError> {
        let co = self.shape.co;
        let per = |n: usize| n == 1 || n == co;
        if !(bias.is_empty() || per(bias.len())) || !per(multiplier.len()) {
            return Err(QuantConvError::Shape(format!(
                "{} biases and {} multipliers for {co} channels",
                bias.len(),
                multiplier.len()
            )));
        }
        let pick = |v: &[f32], o: usize| v[if v.len() == 1 { 0 } else { o }];
        for o in 0..co {
            if !bias.is_empty() {
                let b = bias[if bias.len() == 1 { 0 } else { o }];
                self.bias[o] = self.bias[o].wrapping_add(b);
            }
            self.scale[o] = pick(multiplier, o);
        }
        self.output = QuantOutput::Dequantized;
        Ok(self)
    }

    /// What it stores.
    pub fn output(&self) -> QuantOutput {
        self.output
    }

    /// The kernel set it runs.
    pub fn isa(&self) -> DotIsa {
        self.isa
    }

    /// Its shape.
    pub fn shape(&self) -> &ConvShape {
        &self.shape
    }

    /// Bytes of scratch that [`QuantConv::run`] needs: the bordered image and the bytes that
    /// the last pixel's padded segment reads past it.
    pub fn scratch_len(&self) -> usize {
        let s = &self.shape;
        let bordered = (s.h + s.pad[0] + s.pad[2]) * (s.w + s.pad[1] + s.pad[3]) * s.ci;
        bordered + self.seg - s.kw * s.ci
    }

    /// Runs on `x` (NCHW bytes of the input type, any number of images) into `y` (NCHW values
    /// of its [`QuantOutput`]: bytes of the output type, sums or f32). With a team (the current one, for layers big enough): several
    /// images are split between its threads, each with its own share of `scratch`; one image
    /// has its output channels split.
    pub fn run<T: QuantStore>(&self, x: &[u8], y: &mut [T], scratch: &mut Vec<u8>) {
        assert_eq!(T::OUTPUT, self.output, "output type of {:?}", self.shape);
        let s = &self.shape;
        let image_in = s.ci * s.h * s.w;
        let image_out = s.co * s.out_h() * s.out_w();
        let n = x.len() / image_in;
        assert_eq!(x.len(), n * image_in, "input length for {s:?}");
        assert_eq!(y.len(), n * image_out, "output length for {s:?}");
        let len = self.scratch_len();
        let team = current().filter(|t| t.threads() > 1 && n * image_out * self.k >= 1 << 16);
        match &team {
            Some(team) if n > 1 => {
                let parts = team.threads().min(n);
                scratch.resize(parts * len, 0);
                let scratch = DisjointMut::new(scratch.as_mut_slice());
                let dst = DisjointMut::new(y);
                team.run(parts, &|part| {
                    let images = share(n, part, parts);
                    // SAFETY: parts take disjoint scratch shares and disjoint images.
                    let (sc, out) = unsafe {
                        (
                            scratch.slice_mut(part * len..(part + 1) * len),
                            dst.slice_mut(images.start * image_out..images.end * image_out),
                        )
                    };
                    for (b, out) in images.zip(out.chunks_exact_mut(image_out)) {
                        self.image(&x[b * image_in..(b + 1) * image_in], sc, out, None);
                    }
                });
            }
            _ => {
                scratch.resize(len, 0);
                for (xi, yi) in x.chunks_exact(image_in).zip(y.chunks_exact_mut(image_out)) {
                    self.image(xi, scratch, yi, team.as_deref());
                }
            }
        }
    }

    /// One image: copied channels-last into `scratch`, then its channels (split between the
    /// threads of `team` when one is given).
    fn image<T: QuantStore>(
        &self,
        xi: &[u8],
        scratch: &mut [u8],
        yi: &mut [T],
        team: Option<&Team>,
    ) {
        let s = &self.shape;
        let wp = s.w + s.pad[1] + s.pad[3];
        let bordered = &mut scratch[..self.scratch_len()];
        let flip = self.params.x_type.flip();
        bordered.fill(self.params.x_type.byte(self.params.x_zero) ^ flip);
        channels_last(xi, bordered, s, wp, flip);
        // The farthest byte a tile reads: the last pixel's last segment.
        let (oh, ow) = (s.out_h(), s.out_w());
        let last = self.offset(oh * ow - 1) + (s.kh - 1) * wp * s.ci + self.seg;
        assert!(last <= bordered.len());
        let bordered: &[u8] = bordered;
        let tiles = s.co.div_ceil(TILE);
        match team {
            Some(team) => {
                let parts = team.threads().min(tiles);
                let pixels = oh * ow;
                let dst = DisjointMut::new(yi);
                team.run(parts, &|part| {
                    let t = share(tiles, part, parts);
                    let (o0, o1) = (t.start * TILE, (t.end * TILE).min(s.co));
                    // SAFETY: parts take disjoint channel ranges.
                    let out = unsafe { dst.slice_mut(o0 * pixels..o1 * pixels) };
                    self.channels(bordered, o0..o1, out);
                });
            }
            None => self.channels(bordered, 0..s.co, yi),
        }
    }

    /// Where output pixel `p`'s taps start in the bordered image.
    fn offset(&self, p: usize) -> usize {
        let s = &self.shape;
        let ow = s.out_w();
        let wp = s.w + s.pad[1] + s.pad[3];
        ((p / ow * s.stride[0]) * wp + p % ow * s.stride[1]) * s.ci
    }

    /// Output channels `range` (starting at a tile) of one image from its bordered copy: the
    /// sums of a tile of channels over a run of [`CHUNK`] pixels, then each channel's run
    /// stored ([`QuantStore`]).
    fn channels<T: QuantStore>(
        &self,
        bordered: &[u8],
        range: std::ops::Range<usize>,
        out: &mut [T],
    ) {
        let s = &self.shape;
        let pixels = s.out_h() * s.out_w();
        let kp = self.kp;
        let step = (s.w + s.pad[1] + s.pad[3]) * s.ci;
        let mut acc = [[0i32; CHUNK]; TILE];
        let mut at = [0usize; CHUNK];
        for c0 in (0..pixels).step_by(CHUNK) {
            let n = CHUNK.min(pixels - c0);
            // Pixels past the last one read the first one's taps; their sums are dropped.
            for (i, at) in at.iter_mut().enumerate() {
                *at = if i < n { self.offset(c0 + i) } else { 0 };
            }
            for o0 in range.clone().step_by(TILE) {
                let w = &self.w[o0 * kp..(o0 + TILE) * kp];
                for p0 in (0..n).step_by(TILE) {
                    let at: [usize; TILE] = at[p0..p0 + TILE].try_into().unwrap();
                    let t = self.tile(w, bordered, at, step);
                    for (acc, t) in acc.iter_mut().zip(t) {
                        acc[p0..p0 + TILE].copy_from_slice(&t);
                    }
                }
                for (i, acc) in acc.iter().enumerate().take(range.end - o0) {
                    let o = o0 + i;
                    let dst = &mut out[(o - range.start) * pixels + c0..][..n];
                    T::store(self, o, &acc[..n], dst);
                }
            }
        }
    }

    /// The 4 × 4 dot products of the weights `w` of 4 channels and the taps of 4 pixels
    /// starting at `at` in the bordered image `a`, kernel rows `step` bytes apart.
    fn tile(&self, w: &[i8], a: &[u8], at: [usize; TILE], step: usize) -> [[i32; TILE]; TILE] {
        let g = Segs {
            kh: self.shape.kh,
            seg: self.seg,
            kp: self.kp,
            step,
        };
        debug_assert!(w.len() == TILE * g.kp);
        debug_assert!(at.iter().all(|&o| o + (g.kh - 1) * step + g.seg <= a.len()));
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` was given this ISA and callers check `is_supported`; `image` checked
            // that every pixel's segments lie in `a`; seg is a multiple of 16 (32 for VNNI).
            DotIsa::Avx2 => unsafe { x86::tile_avx2(w, a, at, g) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            DotIsa::Vnni => unsafe { x86::tile_vnni(w, a, at, g) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above.
            DotIsa::Neon if self.has_min_weight => unsafe { arm::tile_smull::<false>(w, a, at, g) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above.
            DotIsa::Neon => unsafe { arm::tile_smull::<true>(w, a, at, g) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above.
            DotIsa::NeonDot => unsafe { arm::tile_sdot(w, a, at, g) },
            _ => tile_portable(w, a, at, g),
        }
    }
}

/// Where a tile's operands lie: channel `i`'s kernel row `ky` at `w[i·kp + ky·seg..][..seg]`,
/// pixel `j`'s at `a[at[j] + ky·step..][..seg]`.
#[derive(Debug, Clone, Copy)]
struct Segs {
    kh: usize,
    seg: usize,
    kp: usize,
    step: usize,
}

fn tile_portable(w: &[i8], a: &[u8], at: [usize; TILE], g: Segs) -> [[i32; TILE]; TILE] {
    let mut acc = [[0i32; TILE]; TILE];
    for (i, acc) in acc.iter_mut().enumerate() {
        for (j, acc) in acc.iter_mut().enumerate() {
            *acc = (0..g.kh)
                .map(|ky| {
                    let wr = &w[i * g.kp + ky * g.seg..][..g.seg];
                    let ar = &a[at[j] + ky * g.step..][..g.seg];
                    wr.iter()
                        .zip(ar)
                        .map(|(&w, &a)| w as i32 * a as i8 as i32)
                        .sum::<i32>()
                })
                .sum();
        }
    }
    acc
}

/// The image `xi` (NCHW bytes of one image) copied channels-last into `bordered`, inside its
/// border, each byte XORed with `flip`: 8 channels × 8 pixels at a time as an 8 × 8 byte
/// transpose in u64 words (the last block of each kind overlaps the one before and rewrites
/// the same bytes), the rest byte by byte.
fn channels_last(xi: &[u8], bordered: &mut [u8], s: &ConvShape, wp: usize, flip: u8) {
    let (ci, hw) = (s.ci, s.h * s.w);
    // Where pixel p (row-major in the image) starts in the bordered copy.
    let dst = |p: usize| ((p / s.w + s.pad[0]) * wp + s.pad[1] + p % s.w) * ci;
    if ci < 8 || hw < 8 {
        for c in 0..ci {
            for (p, &v) in xi[c * hw..(c + 1) * hw].iter().enumerate() {
                bordered[dst(p) + c] = v ^ flip;
            }
        }
        return;
    }
    let flip = u64::from_ne_bytes([flip; 8]);
    let starts = |n: usize| (0..n - 7).step_by(8).chain(std::iter::once(n - 8));
    for c0 in starts(ci) {
        for p0 in starts(hw) {
            let mut r: [u64; 8] = std::array::from_fn(|c| {
                let at = (c0 + c) * hw + p0;
                u64::from_le_bytes(xi[at..at + 8].try_into().unwrap()) ^ flip
            });
            transpose8(&mut r);
            for (p, r) in r.iter().enumerate() {
                let at = dst(p0 + p) + c0;
                bordered[at..at + 8].copy_from_slice(&r.to_le_bytes());
            }
        }
    }
}

/// Transposes the 8 × 8 bytes held in 8 little-endian words: byte `p` of word `c` moves to
/// byte `c` of word `p` (off-diagonal 4 × 4, then 2 × 2, then 1 × 1 blocks swapped).
fn transpose8(r: &mut [u64; 8]) {
    for (shift, mask, pairs) in [
        (
            32,
            0x0000_0000_FFFF_FFFF_u64,
            [(0, 4), (1, 5), (2, 6), (3, 7)],
        ),
        (16, 0x0000_FFFF_0000_FFFF, [(0, 2), (1, 3), (4, 6), (5, 7)]),
        (8, 0x00FF_00FF_00FF_00FF, [(0, 1), (2, 3), (4, 5), (6, 7)]),
    ] {
        for (i, j) in pairs {
            let t = ((r[i] >> shift) ^ r[j]) & mask;
            r[j] ^= t;
            r[i] ^= t << shift;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Segs, TILE};
    use std::arch::x86_64::*;

    /// Sums of the 8 lanes of each of 4 vectors.
    #[target_feature(enable = "avx2")]
    fn hsum4(v: [__m256i; 4]) -> [i32; 4] {
        let s01 = _mm256_hadd_epi32(v[0], v[1]);
        let s23 = _mm256_hadd_epi32(v[2], v[3]);
        let s = _mm256_hadd_epi32(s01, s23);
        let r = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let mut out = [0i32; 4];
        // SAFETY: `out` holds 16 bytes.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), r) };
        out
    }

    /// # Safety
    /// AVX2; the segments `g` names lie in `w` and `a`; `g.seg` a multiple of 16.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2(
        w: &[i8],
        a: &[u8],
        at: [usize; TILE],
        g: Segs,
    ) -> [[i32; TILE]; TILE] {
        let mut acc = [[_mm256_setzero_si256(); TILE]; TILE];
        let (w, a) = (w.as_ptr().cast::<u8>(), a.as_ptr());
        for ky in 0..g.kh {
            for k in (0..g.seg).step_by(16) {
                // SAFETY: k + 16 <= seg and the segments lie in the slices.
                let load = |p: *const u8| unsafe {
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(k).cast()))
                };
                let wv: [__m256i; TILE] =
                    std::array::from_fn(|i| load(w.wrapping_add(i * g.kp + ky * g.seg)));
                let av: [__m256i; TILE] =
                    std::array::from_fn(|j| load(a.wrapping_add(at[j] + ky * g.step)));
                for i in 0..TILE {
                    for j in 0..TILE {
                        acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(wv[i], av[j]));
                    }
                }
            }
        }
        std::array::from_fn(|i| hsum4(acc[i]))
    }

    /// # Safety
    /// AVX2, AVX-512 VNNI and VL; the segments `g` names lie in `w` and `a`; `g.seg` a
    /// multiple of 32.
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub(super) unsafe fn tile_vnni(
        w: &[i8],
        a: &[u8],
        at: [usize; TILE],
        g: Segs,
    ) -> [[i32; TILE]; TILE] {
        let mut acc = [[_mm256_setzero_si256(); TILE]; TILE];
        let flip = _mm256_set1_epi8(-128);
        let (w, a) = (w.as_ptr().cast::<u8>(), a.as_ptr());
        for ky in 0..g.kh {
            for k in (0..g.seg).step_by(32) {
                // SAFETY: k + 32 <= seg and the segments lie in the slices.
                let load = |p: *const u8| unsafe { _mm256_loadu_si256(p.add(k).cast()) };
                let wv: [__m256i; TILE] =
                    std::array::from_fn(|i| load(w.wrapping_add(i * g.kp + ky * g.seg)));
                // a + 128 as u8 for vpdpbusd's unsigned operand.
                let av: [__m256i; TILE] = std::array::from_fn(|j| {
                    _mm256_xor_si256(load(a.wrapping_add(at[j] + ky * g.step)), flip)
                });
                for i in 0..TILE {
                    for j in 0..TILE {
                        acc[i][j] = _mm256_dpbusd_epi32(acc[i][j], av[j], wv[i]);
                    }
                }
            }
        }
        std::array::from_fn(|i| hsum4(acc[i]))
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{Segs, TILE};
    use std::arch::aarch64::*;
    use std::arch::asm;

    /// Sums of the 4 lanes of each of 4 vectors.
    #[inline(always)]
    fn hsum4(v: [int32x4_t; 4]) -> [i32; 4] {
        // SAFETY: NEON is part of aarch64.
        unsafe {
            let s = vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]));
            let mut out = [0i32; 4];
            vst1q_s32(out.as_mut_ptr(), s);
            out
        }
    }

    /// Calls `f` with the 4 weight and the 4 activation vectors of each 16-byte step of a tile.
    ///
    /// # Safety
    /// The segments `g` names lie in `w` and `a`; `g.seg` a multiple of 16.
    #[inline(always)]
    unsafe fn steps(
        w: &[i8],
        a: &[u8],
        at: [usize; TILE],
        g: Segs,
        mut f: impl FnMut(&[int8x16_t; TILE], &[int8x16_t; TILE]),
    ) {
        for ky in 0..g.kh {
            for k in (0..g.seg).step_by(16) {
                // SAFETY: k + 16 <= seg and the segments lie in the slices.
                let wv: [int8x16_t; TILE] = std::array::from_fn(|i| unsafe {
                    vld1q_s8(w.as_ptr().add(i * g.kp + ky * g.seg + k))
                });
                // SAFETY: as above.
                let av: [int8x16_t; TILE] = std::array::from_fn(|j| unsafe {
                    vld1q_s8(a.as_ptr().add(at[j] + ky * g.step + k).cast())
                });
                f(&wv, &av);
            }
        }
    }

    /// # Safety
    /// The segments `g` names lie in `w` and `a`; `g.seg` a multiple of 16; with `PAIRS`, no
    /// weight is −128.
    pub(super) unsafe fn tile_smull<const PAIRS: bool>(
        w: &[i8],
        a: &[u8],
        at: [usize; TILE],
        g: Segs,
    ) -> [[i32; TILE]; TILE] {
        // SAFETY: loads stay within the segments (k + 16 <= seg); NEON is part of aarch64.
        unsafe {
            let mut acc = [[vdupq_n_s32(0); TILE]; TILE];
            steps(w, a, at, g, |wv, av| {
                for i in 0..TILE {
                    for j in 0..TILE {
                        let lo = vmull_s8(vget_low_s8(wv[i]), vget_low_s8(av[j]));
                        if PAIRS {
                            let both = vmlal_high_s8(lo, wv[i], av[j]);
                            acc[i][j] = vpadalq_s16(acc[i][j], both);
                        } else {
                            acc[i][j] = vpadalq_s16(acc[i][j], lo);
                            acc[i][j] = vpadalq_s16(acc[i][j], vmull_high_s8(wv[i], av[j]));
                        }
                    }
                }
            });
            std::array::from_fn(|i| hsum4(acc[i]))
        }
    }

    /// `acc + ` the 4-byte dot products of `w` and `a` lane by lane.
    #[inline(always)]
    fn sdot(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        // SAFETY: a register-only instruction; callers run on FEAT_DotProd CPUs.
        unsafe {
            asm!(
                ".arch_extension dotprod",
                "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
                acc = inout(vreg) acc,
                w = in(vreg) w,
                a = in(vreg) a,
                options(pure, nomem, nostack),
            );
        }
        acc
    }

    /// # Safety
    /// FEAT_DotProd; the segments `g` names lie in `w` and `a`; `g.seg` a multiple of 16.
    #[target_feature(enable = "dotprod")]
    pub(super) unsafe fn tile_sdot(
        w: &[i8],
        a: &[u8],
        at: [usize; TILE],
        g: Segs,
    ) -> [[i32; TILE]; TILE] {
        // SAFETY: loads stay within the segments (k + 16 <= seg).
        unsafe {
            let mut acc = [[vdupq_n_s32(0); TILE]; TILE];
            steps(w, a, at, g, |wv, av| {
                for i in 0..TILE {
                    for j in 0..TILE {
                        acc[i][j] = sdot(acc[i][j], wv[i], av[j]);
                    }
                }
            });
            std::array::from_fn(|i| hsum4(acc[i]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic byte stream (xorshift).
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    fn params(x_type: Q8, y_type: Q8, w_scale: Vec<f32>) -> QuantParams {
        QuantParams {
            x_type,
            x_scale: 0.02,
            x_zero: if x_type == Q8::U8 { 131 } else { -7 },
            w_scale,
            y_type,
            y_scale: 0.35,
            y_zero: if y_type == Q8::U8 { 119 } else { 3 },
        }
    }

    fn shape(
        ci: usize,
        co: usize,
        hw: [usize; 2],
        k: usize,
        stride: usize,
        pad: usize,
    ) -> ConvShape {
        ConvShape {
            ci,
            co,
            h: hw[0],
            w: hw[1],
            kh: k,
            kw: k,
            stride: [stride; 2],
            pad: [pad; 4],
        }
    }

    /// Every supported kernel set equals the definition bit for bit: 3×3, 1×1, 2×2 stride 2,
    /// odd channel and pixel counts (partial tiles), u8 and s8 data, per-tensor and
    /// per-channel scales, weights with and without −128, one and two images.
    #[test]
    fn every_kernel_set_equals_the_definition() {
        let cases = [
            shape(10, 20, [7, 9], 3, 1, 1),
            shape(20, 10, [6, 6], 1, 1, 0),
            shape(10, 10, [8, 6], 2, 2, 0),
            shape(3, 5, [5, 5], 3, 2, 1),
            shape(37, 6, [3, 4], 3, 1, 1),
            // More than one run of CHUNK output pixels (the last one partial).
            shape(6, 10, [12, 11], 3, 1, 1),
            // 8 channels or more on fewer than 8 pixels: the byte-by-byte channels-last copy.
            shape(16, 5, [2, 3], 3, 1, 1),
        ];
        let mut checked = 0;
        for (n, s) in cases.iter().enumerate() {
            for (x_type, y_type) in [(Q8::U8, Q8::U8), (Q8::I8, Q8::I8), (Q8::U8, Q8::I8)] {
                for per_channel in [false, true] {
                    for min_weight in [false, true] {
                        let images = 1 + n % 2;
                        let x = bytes(images * s.ci * s.h * s.w, 7 + n as u64);
                        let mut w: Vec<i8> = bytes(s.co * s.ci * s.kh * s.kw, 11 + n as u64)
                            .into_iter()
                            .map(|b| (b as i8).max(-127))
                            .collect();
                        if min_weight {
                            // Two neighbours of −128 on taps where x = 0 is possible.
                            w[0] = -128;
                            w[1] = -128;
                        }
                        let bias: Vec<i32> = (0..s.co).map(|o| (o as i32 - 3) * 977).collect();
                        let w_scale = if per_channel {
                            (0..s.co).map(|o| 0.003 + o as f32 * 1e-4).collect()
                        } else {
                            vec![0.004]
                        };
                        let p = params(x_type, y_type, w_scale);
                        let want = qconv_reference(s, &x, &w, &bias, &p);
                        let (lo, hi) = y_type.range();
                        let distinct: std::collections::HashSet<_> = want.iter().collect();
                        assert!(distinct.len() > 8, "{s:?}: outputs too uniform to test");
                        let _ = (lo, hi);
                        for isa in crate::testing::dot_isas() {
                            let conv = QuantConv::new(*s, &w, &bias, p.clone(), isa).unwrap();
                            let mut y = vec![0u8; want.len()];
                            conv.run(&x, &mut y, &mut Vec::new());
                            assert!(y == want, "{} {s:?} {x_type:?}->{y_type:?}", isa.name());
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked >= cases.len() * 12);
    }

    /// The other two stores: exact sums (`ConvInteger` + bias) and dequantized f32
    /// (`(sum + extra bias) as f32 · m[o]`, compared bit for bit), with and without a team.
    #[test]
    fn sums_and_dequantized_outputs_equal_the_definition() {
        let team = std::sync::Arc::new(crate::team::Team::new(3).unwrap());
        let cases = [
            shape(10, 20, [7, 9], 3, 1, 1),
            shape(20, 10, [6, 6], 1, 1, 0),
            shape(3, 5, [5, 5], 3, 2, 1),
            shape(6, 10, [12, 11], 3, 1, 1),
            shape(16, 24, [12, 12], 3, 1, 1),
        ];
        let mut checked = 0;
        for (n, s) in cases.iter().enumerate() {
            for x_type in [Q8::U8, Q8::I8] {
                for per_channel in [false, true] {
                    let images = 1 + n % 2;
                    let x = bytes(images * s.ci * s.h * s.w, 3 + n as u64);
                    let w: Vec<i8> = bytes(s.co * s.ci * s.kh * s.kw, 13 + n as u64)
                        .into_iter()
                        .map(|b| b as i8)
                        .collect();
                    let bias: Vec<i32> = (0..s.co).map(|o| (o as i32 - 2) * 1013).collect();
                    let extra: Vec<i32> = if per_channel {
                        (0..s.co).map(|o| 40_000 - o as i32 * 7_919).collect()
                    } else {
                        vec![-12_345]
                    };
                    let m: Vec<f32> = if per_channel {
                        (0..s.co).map(|o| 1.3e-5 * (1.0 + o as f32 / 7.0)).collect()
                    } else {
                        vec![2.7e-5]
                    };
                    let p = params(x_type, Q8::U8, vec![0.004]);
                    let sums = qconv_sums_reference(s, &x, &w, &bias, &p);
                    let pixels = s.out_h() * s.out_w();
                    let pick = |v: &[i32], o: usize| v[if v.len() == 1 { 0 } else { o }];
                    let want_f: Vec<f32> = sums
                        .iter()
                        .enumerate()
                        .map(|(i, &a)| {
                            let o = i / pixels % s.co;
                            let mo = m[if m.len() == 1 { 0 } else { o }];
                            a.wrapping_add(pick(&extra, o)) as f32 * mo
                        })
                        .collect();
                    for isa in crate::testing::dot_isas() {
                        for with in [false, true] {
                            let run = |f: &mut dyn FnMut()| {
                                if with {
                                    crate::team::with_team(&team, f)
                                } else {
                                    f()
                                }
                            };
                            let conv = QuantConv::new(*s, &w, &bias, p.clone(), isa).unwrap();
                            let summing = conv.clone().with_sums();
                            assert_eq!(summing.output(), QuantOutput::Sums);
                            let mut y = vec![0i32; sums.len()];
                            run(&mut || summing.run(&x, &mut y, &mut Vec::new()));
                            assert!(y == sums, "{} {s:?} {x_type:?} sums", isa.name());
                            let deq = conv.with_dequantized(&extra, &m).unwrap();
                            let mut y = vec![0f32; sums.len()];
                            run(&mut || deq.run(&x, &mut y, &mut Vec::new()));
                            let same = y
                                .iter()
                                .zip(&want_f)
                                .all(|(a, b)| a.to_bits() == b.to_bits());
                            assert!(same, "{} {s:?} {x_type:?} dequantized", isa.name());
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked >= cases.len() * 8);
    }

    /// The dequantizing store checks its parameters, and a store of another type is refused.
    #[test]
    fn dequantized_parameters_are_checked() {
        let s = shape(4, 6, [3, 3], 1, 1, 0);
        let p = params(Q8::U8, Q8::U8, vec![0.01]);
        let conv = QuantConv::new(s, &[1; 24], &[], p, DotIsa::Portable).unwrap();
        let err = conv.clone().with_dequantized(&[1, 2], &[1.0]).unwrap_err();
        assert_eq!(err.to_string(), "2 biases and 1 multipliers for 6 channels");
        assert!(conv.clone().with_dequantized(&[], &[0.5; 4]).is_err());
        assert!(conv.clone().with_dequantized(&[], &[0.5; 6]).is_ok());
        let wrong = std::panic::catch_unwind(|| {
            conv.run(&[0u8; 36], &mut [0f32; 54], &mut Vec::new());
        });
        assert!(wrong.is_err(), "a requantizing conv stored f32");
    }

    /// Sums near the i16 limits: all activations at −128 (u8 0) against weights of −127 and
    /// −128, where a 16-bit pair sum would wrap.
    #[test]
    fn extreme_values_are_exact() {
        let s = shape(16, 4, [4, 4], 3, 1, 1);
        let x = vec![0u8; s.ci * s.h * s.w];
        for wv in [-128i8, -127, 127] {
            let w = vec![wv; s.co * s.ci * 9];
            let p = QuantParams {
                x_type: Q8::U8,
                x_scale: 1.0,
                x_zero: 255,
                w_scale: vec![1.0],
                y_type: Q8::I8,
                y_scale: 4096.0,
                y_zero: 0,
            };
            let want = qconv_reference(&s, &x, &w, &[], &p);
            for isa in crate::testing::dot_isas() {
                let conv = QuantConv::new(s, &w, &[], p.clone(), isa).unwrap();
                let mut y = vec![0u8; want.len()];
                conv.run(&x, &mut y, &mut Vec::new());
                assert_eq!(y, want, "{} w = {wv}", isa.name());
            }
        }
    }

    /// A team gives the definition's bits too: one image (channels split) and five (images
    /// split, each part with its own scratch), a layer big enough to be split.
    #[test]
    fn teams_give_the_same_bits() {
        let team = std::sync::Arc::new(crate::team::Team::new(3).unwrap());
        let s = shape(16, 24, [12, 12], 3, 1, 1);
        let w: Vec<i8> = bytes(s.co * s.ci * 9, 5)
            .into_iter()
            .map(|b| b as i8)
            .collect();
        let bias: Vec<i32> = (0..s.co as i32).map(|o| o * 300 - 3000).collect();
        let p = params(Q8::U8, Q8::U8, vec![0.002]);
        for images in [1, 5] {
            let x = bytes(images * s.ci * s.h * s.w, 9);
            let want = qconv_reference(&s, &x, &w, &bias, &p);
            for isa in crate::testing::dot_isas() {
                let conv = QuantConv::new(s, &w, &bias, p.clone(), isa).unwrap();
                let mut y = vec![0u8; want.len()];
                crate::team::with_team(&team, || conv.run(&x, &mut y, &mut Vec::new()));
                assert!(y == want, "{} {images} images", isa.name());
            }
        }
    }

    /// onnxruntime's rounding: half to even after the scale, clamped before rounding.
    #[test]
    fn requantize_rounds_half_to_even_and_saturates() {
        assert_eq!(requantize(5, 0.5, 0, Q8::U8), 2);
        assert_eq!(requantize(7, 0.5, 0, Q8::U8), 4);
        assert_eq!(requantize(-5, 0.5, 0, Q8::I8), -2);
        assert_eq!(requantize(1000, 1.0, 10, Q8::U8), 255);
        assert_eq!(requantize(-1000, 1.0, 10, Q8::U8), 0);
        assert_eq!(requantize(-1000, 1.0, 0, Q8::I8), -128);
        assert_eq!(requantize(3, 1.0, 100, Q8::U8), 103);
    }

    /// QuantizeLinear against its definition in f64 (division, half to even, saturation), on
    /// ties, both ends, NaN and both types.
    #[test]
    fn quantize_divides_rounds_half_to_even_and_saturates() {
        let x = [
            0.25f32,
            0.75,
            -0.25,
            -0.75,
            1e9,
            -1e9,
            f32::NAN,
            3.3,
            -127.9,
            0.0,
        ];
        for (t, zero) in [(Q8::U8, 128), (Q8::U8, 0), (Q8::I8, -5), (Q8::I8, 0)] {
            let mut y = vec![0u8; x.len()];
            quantize(&x, 0.5, zero, t, &mut y);
            let (lo, hi) = t.range();
            for (&v, &b) in x.iter().zip(&y) {
                let want = if v.is_nan() {
                    lo
                } else {
                    ((v as f64 / 0.5).round_ties_even() as i64 + zero as i64)
                        .clamp(lo as i64, hi as i64) as i32
                };
                assert_eq!(t.value(b), want, "{v} {t:?} zero {zero}");
            }
        }
    }

    /// Detection: no set of the other architecture, the x86 sets with their float
    /// counterparts' features, and `all_supported` lists exactly the supported ones.
    #[test]
    fn detection_follows_the_architecture_and_the_cpu() {
        let x86 = cfg!(target_arch = "x86_64");
        let arm = cfg!(target_arch = "aarch64");
        assert!(!DotIsa::Avx2.is_supported() || x86);
        assert!(!DotIsa::Vnni.is_supported() || x86);
        assert_eq!(DotIsa::Neon.is_supported(), arm);
        assert!(!DotIsa::NeonDot.is_supported() || arm);
        if x86 {
            assert_eq!(DotIsa::Avx2.is_supported(), crate::Isa::Avx2.is_supported());
            assert!(!DotIsa::Vnni.is_supported() || crate::Isa::Avx512.is_supported());
        }
        let all = DotIsa::all_supported();
        for isa in DotIsa::ALL {
            assert_eq!(all.contains(&isa), isa.is_supported(), "{}", isa.name());
        }
        assert!(all.contains(&DotIsa::Portable) && all.contains(&DotIsa::best()));
    }

    /// Wrong weights, biases or scales are refused with a message naming them.
    #[test]
    fn mismatched_parameters_are_refused_by_name() {
        let s = shape(4, 6, [5, 5], 3, 1, 1);
        let w = vec![1i8; 6 * 4 * 9];
        let p = params(Q8::U8, Q8::U8, vec![0.01]);
        let err = |w: &[i8], b: &[i32], p: QuantParams| {
            QuantConv::new(s, w, b, p, DotIsa::Portable)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&w[1..], &[], p.clone()).starts_with("215 weights for"));
        assert_eq!(err(&w, &[1, 2], p.clone()), "2 biases for 6 channels");
        let two = params(Q8::U8, Q8::U8, vec![0.01, 0.02]);
        assert_eq!(err(&w, &[], two), "2 weight scales for 6 channels");
        let bad = ConvShape { kh: 9, ..s };
        assert!(QuantConv::new(bad, &w, &[], p, DotIsa::Portable)
            .unwrap_err()
            .to_string()
            .starts_with("invalid shape"));
    }

    #[test]
    fn names_round_trip() {
        for isa in DotIsa::ALL {
            assert_eq!(DotIsa::from_name(isa.name()), Some(isa));
        }
        assert!(DotIsa::best().is_supported());
        assert!(DotIsa::Portable.is_supported());
    }
}
