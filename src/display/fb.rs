//! Linux framebuffer sink (/dev/fbN through the `framebuffer` crate), and the same sink on an
//! XWD file such as the one `Xvfb -fbdir` keeps for its screen.
//!
//! Pixels are packed with the device's own geometry: bits per pixel (16, 24 or 32), the
//! red/green/blue bit offsets and lengths, the line length (stride) and the visible
//! panning offset. While drawing on a virtual console the console is switched to graphics
//! mode (KDSETMODE) so its cursor and text do not draw over the picture; it is switched back
//! when the screen is dropped.
use std::fs::OpenOptions;
use std::path::Path;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use super::adapt::{Rotated, Rotation};
use super::layout::{draw_scene, Layout, Parts, Scene};
use super::screen::{device_error, Kind, Screen};
use crate::error::{Error, Result};

/// One colour channel's place in a pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    pub offset: u32,
    pub length: u32,
}

impl Channel {
    fn from_mask(mask: u32) -> Channel {
        Channel {
            offset: mask.trailing_zeros().min(31),
            length: mask.count_ones(),
        }
    }

    #[inline]
    fn pack(self, v: u8) -> u32 {
        let v = v as u32;
        let bits = if self.length <= 8 {
            v >> (8 - self.length)
        } else {
            v << (self.length - 8)
        };
        bits << self.offset
    }
}

/// How pixels are laid out in framebuffer memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    pub bits_per_pixel: u32,
    /// Bytes from one row to the next.
    pub line_length: u32,
    pub red: Channel,
    pub green: Channel,
    pub blue: Channel,
    /// Pixel bytes most significant first.
    pub big_endian: bool,
    /// Byte offset of the visible top-left pixel in the mapping.
    pub origin: usize,
}

/// The longest side of a screen edge-sample draws on (an 8K panel is 7680 pixels wide).
const MAX_SIDE: u32 = 16384;

impl Geometry {
    fn bytes_per_pixel(&self) -> usize {
        self.bits_per_pixel.div_ceil(8) as usize
    }

    /// Packs a colour into the device's pixel bytes (first `bytes_per_pixel` are used).
    #[inline]
    pub fn pack(&self, c: Rgb888) -> [u8; 4] {
        let v = self.red.pack(c.r()) | self.green.pack(c.g()) | self.blue.pack(c.b());
        let n = self.bytes_per_pixel();
        if self.big_endian {
            let b = v.to_be_bytes();
            let mut out = [0u8; 4];
            out[..n].copy_from_slice(&b[4 - n..]);
            out
        } else {
            v.to_le_bytes()
        }
    }

    fn check(&self, what: &str) -> Result<()> {
        if !(1..=MAX_SIDE).contains(&self.width) || !(1..=MAX_SIDE).contains(&self.height) {
            return Err(Error::display(format!(
                "fb: {what} reports a {}x{} screen (each side must be 1 to {MAX_SIDE} pixels)",
                self.width, self.height
            )));
        }
        if !matches!(self.bits_per_pixel, 16 | 24 | 32) {
            return Err(Error::display(format!(
                "fb: {what} has {} bits per pixel (supported: 16, 24, 32)",
                self.bits_per_pixel
            )));
        }
        for (name, c) in [
            ("red", self.red),
            ("green", self.green),
            ("blue", self.blue),
        ] {
            if c.length > 16 || c.offset as u64 + c.length as u64 > self.bits_per_pixel as u64 {
                return Err(Error::display(format!(
                    "fb: {what}: {name} channel (offset {}, length {}) outside a {}-bit pixel",
                    c.offset, c.length, self.bits_per_pixel
                )));
            }
        }
        if (self.line_length as u64) < self.width as u64 * self.bytes_per_pixel() as u64 {
            return Err(Error::display(format!(
                "fb: {what}: line length {} is shorter than {} pixels",
                self.line_length, self.width
            )));
        }
        Ok(())
    }

    /// Bytes the visible screen spans from the origin.
    fn span(&self) -> usize {
        self.line_length as usize * self.height as usize
    }

    /// True when the visible screen (origin + span) lies within `len` bytes, computed without
    /// overflow (a crafted XWD header can make the sum wrap a 32-bit `usize`).
    fn fits_in(&self, len: usize) -> bool {
        (self.line_length as u64)
            .checked_mul(self.height as u64)
            .and_then(|span| span.checked_add(self.origin as u64))
            .is_some_and(|end| end <= len as u64)
    }

    /// The geometry of an XWD image file (the format of `Xvfb -fbdir`'s screen files and of
    /// `xwd`): its 100-byte big-endian header, window name and colour map come first.
    pub fn from_xwd(header: &[u8]) -> Result<Geometry> {
        let field = |i: usize| -> u32 {
            header
                .get(4 * i..4 * i + 4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        if header.len() < 100 || field(1) != 7 {
            return Err(Error::display(
                "fb: not a framebuffer device and not an XWD (version 7) file",
            ));
        }
        let (header_size, format, ncolors) = (field(0), field(2), field(19));
        if format != 2 {
            return Err(Error::display(format!(
                "fb: XWD pixmap format {format} is not ZPixmap (2)"
            )));
        }
        Ok(Geometry {
            width: field(4),
            height: field(5),
            bits_per_pixel: field(11),
            line_length: field(12),
            red: Channel::from_mask(field(14)),
            green: Channel::from_mask(field(15)),
            blue: Channel::from_mask(field(16)),
            big_endian: field(7) == 1,
            origin: (header_size as usize).saturating_add((ncolors as usize).saturating_mul(12)),
        })
    }
}

enum Memory {
    Device(Box<framebuffer::Framebuffer>),
    File(memmap2::MmapMut),
}

/// Framebuffer memory seen as an Rgb888 [`DrawTarget`].
pub struct FbTarget {
    memory: Memory,
    geometry: Geometry,
}

impl FbTarget {
    fn bytes(&mut self) -> &mut [u8] {
        let g = &self.geometry;
        let mem: &mut [u8] = match &mut self.memory {
            Memory::Device(fb) => &mut fb.frame[..],
            Memory::File(m) => &mut m[..],
        };
        &mut mem[g.origin..g.origin + g.span()]
    }

    fn index(&self, p: Point) -> Option<usize> {
        let g = &self.geometry;
        (p.x >= 0 && p.y >= 0 && (p.x as u32) < g.width && (p.y as u32) < g.height)
            .then(|| p.y as usize * g.line_length as usize + p.x as usize * g.bytes_per_pixel())
    }
}

impl OriginDimensions for FbTarget {
    fn size(&self) -> Size {
        Size::new(self.geometry.width, self.geometry.height)
    }
}

impl DrawTarget for FbTarget {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        let g = self.geometry;
        let n = g.bytes_per_pixel();
        for Pixel(p, c) in pixels {
            if let Some(i) = self.index(p) {
                self.bytes()[i..i + n].copy_from_slice(&g.pack(c)[..n]);
            }
        }
        Ok(())
    }

    fn fill_contiguous<I>(&mut self, area: &Rectangle, colors: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Rgb888>,
    {
        let g = self.geometry;
        let n = g.bytes_per_pixel();
        let screen = Rectangle::new(Point::zero(), self.size());
        if area.intersection(&screen) != *area {
            // Partly off screen: the per-pixel path clips.
            return self.draw_iter(area.points().zip(colors).map(|(p, c)| Pixel(p, c)));
        }
        let (x0, y0, w) = (
            area.top_left.x as usize,
            area.top_left.y as usize,
            area.size.width as usize,
        );
        let line = g.line_length as usize;
        let mem = self.bytes();
        let mut colors = colors.into_iter();
        for y in 0..area.size.height as usize {
            let row = &mut mem[(y0 + y) * line + x0 * n..(y0 + y) * line + (x0 + w) * n];
            for px in row.chunks_exact_mut(n) {
                match colors.next() {
                    Some(c) => px.copy_from_slice(&g.pack(c)[..n]),
                    None => return Ok(()),
                }
            }
        }
        Ok(())
    }
}

/// Switches a virtual console to graphics mode for as long as it lives.
struct ConsoleMode {
    fd: i32,
    previous: libc::c_ulong,
}

const KDSETMODE: libc::c_ulong = 0x4B3A;
const KDGETMODE: libc::c_ulong = 0x4B3B;
const KD_GRAPHICS: libc::c_ulong = 1;

impl ConsoleMode {
    /// Standard input, when it is a virtual console (a systemd unit gives it one with
    /// `TTYPath=/dev/tty1`); over ssh or in a terminal emulator there is nothing to switch.
    fn enter() -> Option<ConsoleMode> {
        let fd = 0;
        let mut mode: libc::c_int = 0;
        // SAFETY: KDGETMODE writes one int; KDSETMODE takes an integer argument.
        unsafe {
            if libc::ioctl(fd, KDGETMODE as _, &mut mode as *mut libc::c_int) != 0 {
                return None;
            }
            if libc::ioctl(fd, KDSETMODE as _, KD_GRAPHICS) != 0 {
                return None;
            }
        }
        Some(ConsoleMode {
            fd,
            previous: mode as libc::c_ulong,
        })
    }
}

impl Drop for ConsoleMode {
    fn drop(&mut self) {
        // SAFETY: as in enter().
        unsafe {
            libc::ioctl(self.fd, KDSETMODE as _, self.previous);
        }
    }
}

pub struct FbScreen {
    target: FbTarget,
    rotation: Rotation,
    name: String,
    _console: Option<ConsoleMode>,
}

impl FbScreen {
    /// Opens a framebuffer device, or an XWD file (Xvfb's `-fbdir` screen) whose header gives
    /// the geometry that a device reports through its ioctls.
    pub fn open(path: &Path, rotation: Rotation) -> Result<FbScreen> {
        let shown = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| device_error(Kind::Fb, &shown, &e))?;
        let is_file = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        let (memory, geometry, console) = if is_file {
            // SAFETY: the mapping is only written through this struct; another process
            // (Xvfb) reading it concurrently sees at worst a half-drawn frame.
            let map = unsafe { memmap2::MmapMut::map_mut(&file) }
                .map_err(|e| Error::display(format!("fb: cannot map {shown}: {e}")))?;
            let g = Geometry::from_xwd(&map[..map.len().min(100)])
                .map_err(|e| Error::display(format!("{shown}: {e}")))?;
            g.check(&shown)?;
            if !g.fits_in(map.len()) {
                return Err(Error::display(format!(
                    "fb: {shown} is {} bytes, shorter than its {}x{} screen",
                    map.len(),
                    g.width,
                    g.height
                )));
            }
            (Memory::File(map), g, None)
        } else {
            drop(file);
            let fb = framebuffer::Framebuffer::new(path)
                .map_err(|e| Error::display(format!("fb: {shown}: {e}")))?;
            let (v, f) = (&fb.var_screen_info, &fb.fix_screen_info);
            let g = Geometry {
                width: v.xres,
                height: v.yres,
                bits_per_pixel: v.bits_per_pixel,
                line_length: f.line_length,
                red: Channel {
                    offset: v.red.offset,
                    length: v.red.length,
                },
                green: Channel {
                    offset: v.green.offset,
                    length: v.green.length,
                },
                blue: Channel {
                    offset: v.blue.offset,
                    length: v.blue.length,
                },
                big_endian: cfg!(target_endian = "big"),
                origin: v.yoffset as usize * f.line_length as usize
                    + v.xoffset as usize * v.bits_per_pixel.div_ceil(8) as usize,
            };
            g.check(&shown)?;
            if !g.fits_in(fb.frame.len()) {
                return Err(Error::display(format!(
                    "fb: {shown}: visible area beyond the mapped memory"
                )));
            }
            (Memory::Device(Box::new(fb)), g, ConsoleMode::enter())
        };
        Ok(FbScreen {
            target: FbTarget { memory, geometry },
            rotation,
            name: format!(
                "framebuffer {shown} {}x{} {} bpp",
                geometry.width, geometry.height, geometry.bits_per_pixel
            ),
            _console: console,
        })
    }

    pub fn geometry(&self) -> Geometry {
        self.target.geometry
    }
}

impl Screen for FbScreen {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn size(&self) -> Size {
        self.rotation.logical(self.target.size())
    }

    fn draw(&mut self, layout: &Layout, scene: &Scene, parts: Parts) -> Result<()> {
        let mut d = Rotated {
            inner: &mut self.target,
            rotation: self.rotation,
        };
        let Ok(()) = draw_scene(&mut d, layout, scene, parts);
        if parts.last {
            if let Memory::File(m) = &self.target.memory {
                m.flush().map_err(|e| Error::display(format!("fb: {e}")))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb565() -> Geometry {
        Geometry {
            width: 4,
            height: 2,
            bits_per_pixel: 16,
            line_length: 10,
            red: Channel {
                offset: 11,
                length: 5,
            },
            green: Channel {
                offset: 5,
                length: 6,
            },
            blue: Channel {
                offset: 0,
                length: 5,
            },
            big_endian: false,
            origin: 0,
        }
    }

    /// A 100-byte XWD header: version 7, ZPixmap, the given geometry and masks.
    fn xwd(w: u32, h: u32, bpp: u32, line: u32, ncolors: u32, masks: [u32; 3]) -> Vec<u8> {
        let mut f = [0u32; 25];
        f[0] = 100;
        f[1] = 7;
        f[2] = 2;
        (f[4], f[5], f[11], f[12], f[19]) = (w, h, bpp, line, ncolors);
        (f[14], f[15], f[16]) = (masks[0], masks[1], masks[2]);
        f.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    #[test]
    fn crafted_xwd_headers_are_refused_without_overflow() {
        let rgb = [0xff0000, 0xff00, 0xff];
        let ok = Geometry::from_xwd(&xwd(4, 2, 32, 16, 0, rgb)).unwrap();
        ok.check("ok").unwrap();
        assert!(ok.fits_in(100 + 32) && !ok.fits_in(100 + 31));
        // line × height + origin beyond any address space, and a colour map that pushes the
        // origin past the end.
        let huge =
            Geometry::from_xwd(&xwd(u32::MAX / 4, u32::MAX, 32, u32::MAX, u32::MAX, rgb)).unwrap();
        assert!(!huge.fits_in(usize::MAX));
        // Masks wider than the pixel, a line shorter than its pixels.
        let wide = Geometry::from_xwd(&xwd(4, 2, 16, 8, 0, [0xffff_0000, 0xff00, 0xff])).unwrap();
        assert!(wide
            .check("x")
            .unwrap_err()
            .to_string()
            .contains("red channel"));
        let short = Geometry::from_xwd(&xwd(4, 2, 32, 15, 0, rgb)).unwrap();
        assert!(short
            .check("x")
            .unwrap_err()
            .to_string()
            .contains("line length"));
        assert!(Geometry::from_xwd(&[0u8; 99]).is_err());
        // Found by the xwd fuzz target: a 0×0 screen (the layout's margins underflowed).
        for (w, h) in [(0, 0), (0, 4096), (4, 0), (16385, 2)] {
            let g = Geometry::from_xwd(&xwd(w, h, 32, 4 * w.max(1), 0, rgb)).unwrap();
            let e = g.check("x").unwrap_err().to_string();
            assert!(e.contains(&format!("a {w}x{h} screen")), "{e}");
        }
    }

    #[test]
    fn packs_rgb565_and_xrgb8888() {
        let g = rgb565();
        assert_eq!(g.pack(Rgb888::new(255, 0, 0))[..2], 0xf800u16.to_le_bytes());
        assert_eq!(g.pack(Rgb888::new(0, 255, 0))[..2], 0x07e0u16.to_le_bytes());
        assert_eq!(
            g.pack(Rgb888::new(0x10, 0x20, 0x30))[..2],
            ((2 << 11) | (8 << 5) | 6u16).to_le_bytes()
        );
        let g32 = Geometry {
            bits_per_pixel: 32,
            red: Channel::from_mask(0xff0000),
            green: Channel::from_mask(0xff00),
            blue: Channel::from_mask(0xff),
            ..g
        };
        assert_eq!(g32.pack(Rgb888::new(1, 2, 3)), [3, 2, 1, 0]);
        let be = Geometry {
            big_endian: true,
            ..g
        };
        assert_eq!(be.pack(Rgb888::new(255, 0, 0))[..2], [0xf8, 0x00]);
    }

    #[test]
    fn honours_stride_and_clips() {
        let g = rgb565();
        let map = memmap2::MmapMut::map_anon(20).unwrap();
        let mut t = FbTarget {
            memory: Memory::File(map),
            geometry: g,
        };
        t.fill_contiguous(
            &Rectangle::new(Point::new(1, 0), Size::new(2, 2)),
            [Rgb888::WHITE; 4],
        )
        .unwrap();
        t.draw_iter([Pixel(Point::new(9, 9), Rgb888::WHITE)])
            .unwrap(); // off screen
        let b = t.bytes().to_vec();
        assert_eq!(&b[0..2], &[0, 0]);
        assert_eq!(&b[2..6], &[0xff; 4]);
        assert_eq!(&b[8..10], &[0, 0], "padding bytes of the line untouched");
        assert_eq!(&b[12..16], &[0xff; 4], "second row starts at line_length");
    }
}
