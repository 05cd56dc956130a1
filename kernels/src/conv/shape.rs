//! The geometry of the convolutions: stride 1 ([`ConvShape`]), strided ([`StridedShape`])
//! and transposed with stride = kernel ([`BlockShape`]).

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
    pub(crate) fn padded_h(&self) -> usize {
        self.h + self.pad[0] + self.pad[2]
    }
    pub(crate) fn padded_w(&self) -> usize {
        self.w + self.pad[1] + self.pad[3]
    }
}

/// Geometry of a strided (or stride-1) convolution on NCHW data, single group, no dilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StridedShape {
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// Zero padding: top, left, bottom, right.
    pub pad: [usize; 4],
}

impl StridedShape {
    pub fn out_h(&self) -> usize {
        (self.h + self.pad[0] + self.pad[2] - self.kh) / self.stride[0] + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + self.pad[1] + self.pad[3] - self.kw) / self.stride[1] + 1
    }
    pub fn is_valid(&self) -> bool {
        self.ci > 0
            && self.co > 0
            && self.kh > 0
            && self.kw > 0
            && self.stride.iter().all(|&s| s > 0)
            && self.h + self.pad[0] + self.pad[2] >= self.kh
            && self.w + self.pad[1] + self.pad[3] >= self.kw
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
