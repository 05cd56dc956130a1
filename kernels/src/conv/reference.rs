//! f64 reference convolutions from their definitions (plain loops, bounds checks instead of
//! padding), which the tests compare every algorithm against.

use super::shape::{BlockShape, ConvShape};

/// Reference convolution: plain loops, f64 sums, bounds checks instead of padding (the
/// strided reference at stride 1).
pub fn conv_reference(shape: &ConvShape, x: &[f32], weights: &[f32], bias: &[f32]) -> Vec<f32> {
    let s = shape;
    let strided = ConvShape {
        ci: s.ci,
        co: s.co,
        h: s.h,
        w: s.w,
        kh: s.kh,
        kw: s.kw,
        stride: [1, 1],
        pad: s.pad,
    };
    strided_reference(&strided, x, weights, bias)
}

/// Reference strided convolution: plain loops, f64 sums.
pub fn strided_reference(s: &ConvShape, x: &[f32], weights: &[f32], bias: &[f32]) -> Vec<f32> {
    let (ho, wo) = (s.out_h(), s.out_w());
    let n = x.len() / (s.ci * s.h * s.w);
    let mut out = vec![0.0f32; n * s.co * ho * wo];
    for b in 0..n {
        for o in 0..s.co {
            for y in 0..ho {
                for xo in 0..wo {
                    let mut sum = bias.get(o).copied().unwrap_or(0.0) as f64;
                    for c in 0..s.ci {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (y * s.stride[0] + ky) as isize - s.pad[0] as isize;
                                let ix = (xo * s.stride[1] + kx) as isize - s.pad[1] as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((b * s.ci + c) * s.h + iy as usize) * s.w + ix as usize];
                                let wv = weights[((o * s.ci + c) * s.kh + ky) * s.kw + kx];
                                sum += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((b * s.co + o) * ho + y) * wo + xo] = sum as f32;
                }
            }
        }
    }
    out
}

/// Reference transposed convolution (any stride, no padding), from its definition: every
/// input pixel scatters `x · w[c][o]` onto the outputs its kernel covers.
pub fn deconv_reference(
    s: &BlockShape,
    stride: [usize; 2],
    x: &[f32],
    weights: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let ho = (s.h - 1) * stride[0] + s.kh;
    let wo = (s.w - 1) * stride[1] + s.kw;
    let n = x.len() / (s.ci * s.h * s.w);
    let mut acc = vec![0.0f64; n * s.co * ho * wo];
    for b in 0..n {
        for o in 0..s.co {
            let plane = &mut acc[(b * s.co + o) * ho * wo..][..ho * wo];
            plane.fill(bias.get(o).copied().unwrap_or(0.0) as f64);
            for c in 0..s.ci {
                for y in 0..s.h {
                    for xi in 0..s.w {
                        let xv = x[((b * s.ci + c) * s.h + y) * s.w + xi] as f64;
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let wv = weights[((c * s.co + o) * s.kh + ky) * s.kw + kx] as f64;
                                plane[(y * stride[0] + ky) * wo + xi * stride[1] + kx] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}
