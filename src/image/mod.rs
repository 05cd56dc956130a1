//! Model-space tensors → pixels → PNG files (with the generation parameters embedded), and
//! PNG → model-space tensors for img2img.
use std::path::Path;

use crate::error::{Error, Result};
use crate::output::write_atomic;

/// An 8-bit image, grayscale (1 channel) or RGB (3), rows top to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// One CHW image in model space → pixels: (x − lo)/(hi − lo)·255, rounded and clamped
/// (the seed's `(x + 1)/2·255` for the range [−1, 1]).
pub fn to_pixels(x: &[f32], [c, h, w]: [usize; 3], (lo, hi): (f32, f32)) -> Pixels {
    let channels = if c >= 3 { 3 } else { 1 };
    let mut data = vec![0u8; h * w * channels];
    let scale = 255.0 / (hi - lo);
    for ch in 0..channels {
        for p in 0..h * w {
            let v = (x[ch * h * w + p] - lo) * scale;
            data[p * channels + ch] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Pixels {
        width: w,
        height: h,
        channels,
        data,
    }
}

/// Lays images out on a near-square contact sheet with a `pad`-pixel gap of black.
pub fn grid(images: &[Pixels], pad: usize) -> Pixels {
    let n = images.len().max(1);
    let cols = grid_columns(n);
    let rows = n.div_ceil(cols);
    let (w, h, ch) = (images[0].width, images[0].height, images[0].channels);
    let gw = grid_width(n, w, pad);
    let gh = rows * h + (rows + 1) * pad;
    let mut data = vec![0u8; gw * gh * ch];
    for (k, img) in images.iter().enumerate() {
        let (r, c) = (k / cols, k % cols);
        let (x0, y0) = (pad + c * (w + pad), pad + r * (h + pad));
        for y in 0..h {
            let src = &img.data[y * w * ch..(y + 1) * w * ch];
            let off = ((y0 + y) * gw + x0) * ch;
            data[off..off + w * ch].copy_from_slice(src);
        }
    }
    Pixels {
        width: gw,
        height: gh,
        channels: ch,
        data,
    }
}

/// The gap between the images of a contact sheet, and around them, at scale 1.
pub const GRID_PAD: usize = 2;

/// Columns of [`grid`]'s sheet of `n` images: as square as it gets.
pub fn grid_columns(n: usize) -> usize {
    (n.max(1) as f64).sqrt().ceil() as usize
}

/// Width of [`grid`]'s sheet of `n` images `w` wide with `pad` between them.
pub fn grid_width(n: usize, w: usize, pad: usize) -> usize {
    let cols = grid_columns(n);
    cols * w + (cols + 1) * pad
}

/// Nearest-neighbour upscaling by an integer factor.
pub fn upscale(p: &Pixels, k: usize) -> Pixels {
    if k <= 1 {
        return p.clone();
    }
    let (w, h, ch) = (p.width * k, p.height * k, p.channels);
    let mut data = vec![0u8; w * h * ch];
    for y in 0..h {
        for x in 0..w {
            let s = ((y / k) * p.width + x / k) * ch;
            data[(y * w + x) * ch..(y * w + x + 1) * ch].copy_from_slice(&p.data[s..s + ch]);
        }
    }
    Pixels {
        width: w,
        height: h,
        channels: ch,
        data,
    }
}

/// Writes a PNG atomically, with `text` as tEXt chunks (e.g. the "parameters" of the run,
/// as other diffusion tools record them).
pub fn write_png(path: &Path, p: &Pixels, text: &[(&str, String)]) -> Result<()> {
    write_atomic(path, |w| encode_png(w, p, text))
}

/// Encodes `p` as PNG into `w`, with `text` as tEXt chunks.
pub fn encode_png(
    w: impl std::io::Write,
    p: &Pixels,
    text: &[(&str, String)],
) -> std::io::Result<()> {
    let mut enc = png::Encoder::new(w, p.width as u32, p.height as u32);
    enc.set_color(if p.channels == 3 {
        png::ColorType::Rgb
    } else {
        png::ColorType::Grayscale
    });
    enc.set_depth(png::BitDepth::Eight);
    for (k, v) in text {
        enc.add_text_chunk(k.to_string(), v.clone())
            .map_err(std::io::Error::other)?;
    }
    let mut writer = enc.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(&p.data)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

/// Decodes an init image: a regular file of bounded size, at most 8192×8192 pixels and
/// 256 MiB decoded (a 1 KB PNG can declare a 4-gigapixel image).
fn decode(path: &Path) -> Result<::image::DynamicImage> {
    let what = "init image";
    crate::input::regular_file(path, what, crate::input::MAX_IMAGE_BYTES)?;
    let cannot = |e: &dyn std::fmt::Display| {
        Error::input(format!("cannot read {what} {}: {e}", path.display()))
    };
    let mut reader = ::image::ImageReader::open(path)
        .map_err(|e| cannot(&e))?
        .with_guessed_format()
        .map_err(|e| cannot(&e))?;
    let mut limits = ::image::Limits::default();
    limits.max_image_width = Some(8192);
    limits.max_image_height = Some(8192);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    reader.decode().map_err(|e| cannot(&e))
}

/// Reads a PNG (or any format `image` decodes) into one CHW image in model space, converting
/// colour to the model's channel count and resizing to its size if needed (a warning is
/// returned in that case).
pub fn load_image(
    path: &Path,
    [c, h, w]: [usize; 3],
    (lo, hi): (f32, f32),
) -> Result<(Vec<f32>, Option<String>)> {
    let img = decode(path)?;
    let mut note = None;
    let img = if img.width() as usize != w || img.height() as usize != h {
        note = Some(format!(
            "init image {} is {}x{}, resized to the model's {w}x{h}",
            path.display(),
            img.width(),
            img.height()
        ));
        img.resize_exact(w as u32, h as u32, ::image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let mut x = vec![0f32; c * h * w];
    let to_model = |v: u8| lo + (v as f32 / 255.0) * (hi - lo);
    if c == 1 {
        let g = img.to_luma8();
        for (o, p) in x.iter_mut().zip(g.pixels()) {
            *o = to_model(p.0[0]);
        }
    } else {
        let rgb = img.to_rgb8();
        for (p, px) in rgb.pixels().enumerate() {
            for ch in 0..c.min(3) {
                x[ch * h * w + p] = to_model(px.0[ch]);
            }
        }
    }
    Ok((x, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_mapping_is_the_seeds() {
        let p = to_pixels(&[-1.0, 0.0, 1.0, 2.0], [1, 2, 2], (-1.0, 1.0));
        assert_eq!(p.data, vec![0, 128, 255, 255]);
    }

    #[test]
    fn grid_places_images_row_major() {
        let img = |v| Pixels {
            width: 2,
            height: 2,
            channels: 1,
            data: vec![v; 4],
        };
        let g = grid(&[img(1), img(2), img(3)], 1);
        assert_eq!((g.width, g.height), (7, 7));
        assert_eq!(g.data[7 + 1], 1);
        assert_eq!(g.data[7 + 4], 2);
        assert_eq!(g.data[4 * 7 + 1], 3);
        assert_eq!(g.data[4 * 7 + 4], 0);
    }
}
