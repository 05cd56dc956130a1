//! The geometry of the convolutions: direct and strided ([`ConvShape`]), and transposed with
//! stride = kernel ([`BlockShape`]).

/// Geometry of a 2-D convolution on NCHW data: single group, no dilation, any stride. The
/// direct and Winograd kernels take stride 1; strided ones are lowered by im2col.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    /// Vertical, horizontal.
    pub stride: [usize; 2],
    /// Zero padding: top, left, bottom, right.
    pub pad: [usize; 4],
}

impl ConvShape {
    pub fn out_h(&self) -> usize {
        (self.padded_h() - self.kh) / self.stride[0] + 1
    }
    pub fn out_w(&self) -> usize {
        (self.padded_w() - self.kw) / self.stride[1] + 1
    }
    /// Whether the strides are positive and the padded input at least as large as the kernel.
    pub fn is_valid(&self) -> bool {
        self.ci > 0
            && self.co > 0
            && self.kh > 0
            && self.kw > 0
            && self.stride.iter().all(|&s| s > 0)
            && self.padded_h() >= self.kh
            && self.padded_w() >= self.kw
    }
    /// Whether the kernel moves one position at a time (what the direct and Winograd kernels
    /// take).
    pub fn is_stride_1(&self) -> bool {
        self.stride == [1, 1]
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
    pub(crate) fn padded_h(&self) -> usize {
        self.h + self.pad[0] + self.pad[2]
    }
    pub(crate) fn padded_w(&self) -> usize {
        self.w + self.pad[1] + self.pad[3]
    }
}

/// Geometry of a transposed convolution whose kernel equals its stride, without padding,
/// output padding or groups: output `co × h·kh × w·kw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockShape {
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
}

impl BlockShape {
    pub fn out_h(&self) -> usize {
        self.h * self.kh
    }
    pub fn out_w(&self) -> usize {
        self.w * self.kw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(h: usize, w: usize, k: [usize; 2], stride: [usize; 2], pad: [usize; 4]) -> ConvShape {
        ConvShape {
            ci: 1,
            co: 1,
            h,
            w,
            kh: k[0],
            kw: k[1],
            stride,
            pad,
        }
    }

    #[test]
    fn output_size_is_floor_of_padded_minus_kernel_over_stride_plus_one() {
        // ⌊(7 + 0 − 2) / 2⌋ + 1 = 3 (the last row dropped); ⌊(8 + 1 + 1 − 3) / 2⌋ + 1 = 4.
        let s = shape(7, 8, [2, 3], [2, 2], [0, 1, 0, 1]);
        assert_eq!((s.out_h(), s.out_w()), (3, 4));
        let s = shape(11, 9, [3, 2], [3, 2], [1, 0, 2, 1]);
        assert_eq!((s.out_h(), s.out_w()), (4, 5)); // ⌊11 / 3⌋ + 1, ⌊8 / 2⌋ + 1
        let same = shape(5, 6, [3, 3], [1, 1], [1; 4]);
        assert_eq!((same.out_h(), same.out_w()), (5, 6));
    }

    #[test]
    fn validity_needs_every_size_positive_and_the_kernel_inside_the_padded_input() {
        let ok = shape(3, 3, [3, 3], [1, 1], [0; 4]);
        assert!(ok.is_valid());
        let with = |f: &dyn Fn(&mut ConvShape)| {
            let mut s = ok;
            f(&mut s);
            s.is_valid()
        };
        assert!(!with(&|s| s.ci = 0));
        assert!(!with(&|s| s.co = 0));
        assert!(!with(&|s| s.kh = 0));
        assert!(!with(&|s| s.kw = 0));
        assert!(!with(&|s| s.stride = [0, 1]));
        assert!(!with(&|s| s.stride = [1, 0]));
        assert!(!with(&|s| s.kh = 4));
        assert!(!with(&|s| s.kw = 4));
        assert!(with(&|s| {
            s.kh = 4;
            s.pad = [1, 0, 0, 0];
        }));
    }
}
