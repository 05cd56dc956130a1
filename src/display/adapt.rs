//! DrawTarget adapters between the layout (Rgb888, logical orientation) and a sink's panel:
//! rotation by quarter turns and ordered dithering to one bit per pixel.
use embedded_graphics::pixelcolor::{BinaryColor, Rgb888};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

/// Clockwise rotation of the picture on the panel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rotation {
    #[default]
    R0,
    R90,
    R180,
    R270,
}

impl Rotation {
    pub fn degrees(self) -> u32 {
        match self {
            Rotation::R0 => 0,
            Rotation::R90 => 90,
            Rotation::R180 => 180,
            Rotation::R270 => 270,
        }
    }

    /// The logical size a panel of `physical` size has under this rotation.
    pub fn logical(self, physical: Size) -> Size {
        match self {
            Rotation::R0 | Rotation::R180 => physical,
            Rotation::R90 | Rotation::R270 => Size::new(physical.height, physical.width),
        }
    }

    /// Maps a logical point to the panel of `physical` size.
    pub fn map(self, p: Point, physical: Size) -> Point {
        let (pw, ph) = (physical.width as i32, physical.height as i32);
        match self {
            Rotation::R0 => p,
            Rotation::R90 => Point::new(pw - 1 - p.y, p.x),
            Rotation::R180 => Point::new(pw - 1 - p.x, ph - 1 - p.y),
            Rotation::R270 => Point::new(p.y, ph - 1 - p.x),
        }
    }

    fn map_rect(self, r: &Rectangle, physical: Size) -> Rectangle {
        match r.bottom_right() {
            None => Rectangle::new(self.map(r.top_left, physical), Size::zero()),
            Some(br) => {
                Rectangle::with_corners(self.map(r.top_left, physical), self.map(br, physical))
            }
        }
    }
}

impl std::str::FromStr for Rotation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "0" => Ok(Rotation::R0),
            "90" => Ok(Rotation::R90),
            "180" => Ok(Rotation::R180),
            "270" => Ok(Rotation::R270),
            other => Err(format!(
                "unknown rotation '{other}' (valid: 0, 90, 180, 270)"
            )),
        }
    }
}

/// A panel seen through a rotation: draw in logical coordinates.
pub struct Rotated<'a, D> {
    pub inner: &'a mut D,
    pub rotation: Rotation,
}

impl<D: DrawTarget> Dimensions for Rotated<'_, D> {
    fn bounding_box(&self) -> Rectangle {
        let size = self.rotation.logical(self.inner.bounding_box().size);
        Rectangle::new(Point::zero(), size)
    }
}

impl<D: DrawTarget> DrawTarget for Rotated<'_, D> {
    type Color = D::Color;
    type Error = D::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let (rot, phys) = (self.rotation, self.inner.bounding_box().size);
        self.inner.draw_iter(
            pixels
                .into_iter()
                .map(|Pixel(p, c)| Pixel(rot.map(p, phys), c)),
        )
    }

    fn fill_contiguous<I>(&mut self, area: &Rectangle, colors: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Self::Color>,
    {
        if self.rotation == Rotation::R0 {
            return self.inner.fill_contiguous(area, colors);
        }
        let (rot, phys) = (self.rotation, self.inner.bounding_box().size);
        self.inner.draw_iter(
            area.points()
                .zip(colors)
                .map(|(p, c)| Pixel(rot.map(p, phys), c)),
        )
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        let phys = self.inner.bounding_box().size;
        self.inner
            .fill_solid(&self.rotation.map_rect(area, phys), color)
    }
}

/// The 8×8 Bayer threshold matrix (values 0..64).
const BAYER8: [[u8; 8]; 8] = [
    [0, 32, 8, 40, 2, 34, 10, 42],
    [48, 16, 56, 24, 50, 18, 58, 26],
    [12, 44, 4, 36, 14, 46, 6, 38],
    [60, 28, 52, 20, 62, 30, 54, 22],
    [3, 35, 11, 43, 1, 33, 9, 41],
    [51, 19, 59, 27, 49, 17, 57, 25],
    [15, 47, 7, 39, 13, 45, 5, 37],
    [63, 31, 55, 23, 61, 29, 53, 21],
];

/// Luma (ITU-R BT.601, integer) of a colour, 0..=255.
pub fn luma(c: Rgb888) -> u8 {
    ((77 * c.r() as u32 + 150 * c.g() as u32 + 29 * c.b() as u32 + 128) >> 8) as u8
}

/// Ordered (Bayer 8×8) dithering of one pixel at panel position `p`: a pixel of luma `v`
/// is on where `v·64/255` exceeds the threshold, so a flat grey of level `v` lights
/// round(v·64/255) of every 64 pixels, and black and white stay pure.
pub fn dither(c: Rgb888, p: Point) -> BinaryColor {
    let level = (luma(c) as u32 * 64 + 127) / 255; // 0..=64
    let t = BAYER8[(p.y & 7) as usize][(p.x & 7) as usize] as u32;
    BinaryColor::from(level > t)
}

/// A one-bit panel seen as an Rgb888 one: every pixel dithered at its panel position.
pub struct Dithered<'a, D> {
    pub inner: &'a mut D,
}

impl<D: DrawTarget<Color = BinaryColor>> Dimensions for Dithered<'_, D> {
    fn bounding_box(&self) -> Rectangle {
        self.inner.bounding_box()
    }
}

impl<D: DrawTarget<Color = BinaryColor>> DrawTarget for Dithered<'_, D> {
    type Color = Rgb888;
    type Error = D::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        self.inner
            .draw_iter(pixels.into_iter().map(|Pixel(p, c)| Pixel(p, dither(c, p))))
    }

    fn fill_contiguous<I>(&mut self, area: &Rectangle, colors: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Rgb888>,
    {
        self.inner
            .fill_contiguous(area, area.points().zip(colors).map(|(p, c)| dither(c, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bayer_matrix_is_a_permutation_of_0_to_63() {
        let mut seen = [false; 64];
        for row in BAYER8 {
            for v in row {
                assert!(!seen[v as usize]);
                seen[v as usize] = true;
            }
        }
    }

    #[test]
    fn flat_grey_lights_its_share_of_every_8x8_tile() {
        for v in [0u8, 1, 2, 64, 100, 128, 200, 254, 255] {
            let c = Rgb888::new(v, v, v);
            let on = (0..8)
                .flat_map(|y| (0..8).map(move |x| Point::new(x, y)))
                .filter(|&p| dither(c, p) == BinaryColor::On)
                .count() as u32;
            // Closed form: round(v·64/255) pixels of 64.
            assert_eq!(on, (v as u32 * 64 + 127) / 255, "level {v}");
            // The same count in any 8×8 window offset by whole tiles.
            let on2 = (8..16)
                .flat_map(|y| (16..24).map(move |x| Point::new(x, y)))
                .filter(|&p| dither(c, p) == BinaryColor::On)
                .count() as u32;
            assert_eq!(on, on2);
        }
    }

    #[test]
    fn dithering_is_monotone_in_brightness() {
        for y in 0..8 {
            for x in 0..8 {
                let p = Point::new(x, y);
                let mut was_on = false;
                for v in 0..=255u8 {
                    let on = dither(Rgb888::new(v, v, v), p) == BinaryColor::On;
                    assert!(on || !was_on, "pixel {p:?} went dark at level {v}");
                    was_on = on;
                }
            }
        }
    }

    #[test]
    fn rotation_maps_corners() {
        let phys = Size::new(4, 2);
        let r = Rotation::R90;
        assert_eq!(r.logical(phys), Size::new(2, 4));
        // logical top-left goes to the panel's top-right
        assert_eq!(r.map(Point::new(0, 0), phys), Point::new(3, 0));
        assert_eq!(r.map(Point::new(1, 3), phys), Point::new(0, 1));
        assert_eq!(Rotation::R180.map(Point::new(0, 0), phys), Point::new(3, 1));
        assert_eq!(
            Rotation::R270.map(Point::new(0, 0), Size::new(2, 4)),
            Point::new(0, 3)
        );
        for rot in [Rotation::R90, Rotation::R180, Rotation::R270] {
            let l = rot.logical(phys);
            let mut hit = std::collections::HashSet::new();
            for y in 0..l.height as i32 {
                for x in 0..l.width as i32 {
                    let q = rot.map(Point::new(x, y), phys);
                    assert!(q.x >= 0 && q.y >= 0 && q.x < 4 && q.y < 2);
                    hit.insert(q);
                }
            }
            assert_eq!(hit.len(), 8, "{rot:?} is a bijection");
        }
    }
}
