//! Where things go on a screen, and drawing them on any embedded-graphics [`DrawTarget`].
//!
//! The screen (in its rotated, logical orientation) is split top to bottom into the image
//! area, an optional caption line and an optional progress bar. The image is scaled by the
//! largest integer factor that fits (nearest neighbour, so pixels stay square and sharp),
//! or shrunk by nearest-neighbour sampling when even 1× does not fit, and centred.
use embedded_graphics::mono_font::ascii::FONT_6X10;
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use embedded_graphics::text::{Baseline, Text};

use crate::image::Pixels;

/// Caption font: 6×10 px ASCII.
pub const FONT: embedded_graphics::mono_font::MonoFont<'static> = FONT_6X10;
const CAPTION_H: u32 = 12;
const BAR_H: u32 = 4;
const BAR_GAP: u32 = 1;
pub const BACKGROUND: Rgb888 = Rgb888::BLACK;
pub const TEXT: Rgb888 = Rgb888::WHITE;
pub const BAR_DONE: Rgb888 = Rgb888::new(0x3d, 0xdc, 0x84);
pub const BAR_TODO: Rgb888 = Rgb888::new(0x30, 0x30, 0x30);

/// How the image is fitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Every source pixel drawn as k×k screen pixels.
    Integer(u32),
    /// The screen is smaller than the image: shrunk (nearest neighbour).
    Shrunk,
}

/// Rectangles of one screen layout, in logical (rotated) coordinates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub screen: Size,
    pub source: Size,
    pub image: Rectangle,
    pub fit: Fit,
    pub caption: Option<Rectangle>,
    pub bar: Option<Rectangle>,
}

impl Layout {
    /// Lays out an image of `source` pixels on a `screen`, reserving a caption line and a
    /// progress bar when asked.
    pub fn new(screen: Size, source: Size, caption: bool, bar: bool) -> Layout {
        let (sw, sh) = (screen.width, screen.height);
        let mut bottom = sh;
        let bar = bar.then(|| {
            let h = BAR_H.min(sh / 8).max(1);
            bottom = bottom.saturating_sub(h);
            let r = Rectangle::new(Point::new(0, bottom as i32), Size::new(sw, h));
            bottom = bottom.saturating_sub(BAR_GAP);
            r
        });
        let caption = (caption && bottom > 2 * CAPTION_H).then(|| {
            bottom -= CAPTION_H;
            Rectangle::new(Point::new(0, bottom as i32), Size::new(sw, CAPTION_H))
        });
        let (aw, ah) = (sw, bottom);
        let (w, h) = (source.width.max(1), source.height.max(1));
        let k = (aw / w).min(ah / h);
        let (fit, dw, dh) = if k >= 1 {
            (Fit::Integer(k), w * k, h * k)
        } else {
            // Shrink to fit, keeping the aspect ratio.
            let (dw, dh) = if aw as u64 * h as u64 <= ah as u64 * w as u64 {
                (aw, ((aw as u64 * h as u64) / w as u64).max(1) as u32)
            } else {
                (((ah as u64 * w as u64) / h as u64).max(1) as u32, ah)
            };
            (Fit::Shrunk, dw, dh)
        };
        let image = Rectangle::new(
            // A screen smaller than one pixel of image leaves no margin (not a negative one).
            Point::new(
                (aw.saturating_sub(dw) / 2) as i32,
                (ah.saturating_sub(dh) / 2) as i32,
            ),
            Size::new(dw, dh),
        );
        Layout {
            screen,
            source,
            image,
            fit,
            caption,
            bar,
        }
    }

    /// The caption that fits the caption line: `long` if it fits, else `short`, else `short`
    /// cut to the width.
    pub fn fit_caption<'a>(&self, long: &'a str, short: &'a str) -> &'a str {
        let chars = (self.screen.width / FONT.character_size.width) as usize;
        if long.len() <= chars {
            long
        } else if short.len() <= chars {
            short
        } else {
            &short[..chars.min(short.len())]
        }
    }
}

/// What is on the screen.
pub struct Scene<'a> {
    pub image: Option<&'a Pixels>,
    pub caption: Option<&'a str>,
    /// Fraction done, 0..=1.
    pub progress: Option<f32>,
}

/// Which parts to (re)draw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    /// Clear the whole screen first.
    pub clear: bool,
    pub image: bool,
    pub caption: bool,
    pub bar: bool,
    /// The finished picture of a run (sinks that save or present frames do it now).
    pub last: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        clear: true,
        image: true,
        caption: true,
        bar: true,
        last: false,
    };
    pub const BAR: Parts = Parts {
        clear: false,
        image: false,
        caption: false,
        bar: true,
        last: false,
    };
    pub const IMAGE: Parts = Parts {
        clear: false,
        image: true,
        caption: false,
        bar: true,
        last: false,
    };
}

fn color_at(p: &Pixels, x: usize, y: usize) -> Rgb888 {
    let i = (y * p.width + x) * p.channels;
    if p.channels >= 3 {
        Rgb888::new(p.data[i], p.data[i + 1], p.data[i + 2])
    } else {
        let v = p.data[i];
        Rgb888::new(v, v, v)
    }
}

/// Draws `image` into `area`, nearest-neighbour, row by row through `fill_contiguous` (the
/// fast path of every sink).
pub fn draw_image<D: DrawTarget<Color = Rgb888>>(
    d: &mut D,
    area: &Rectangle,
    image: &Pixels,
) -> Result<(), D::Error> {
    let (w, h) = (area.size.width as usize, area.size.height as usize);
    if w == 0 || h == 0 || image.width == 0 || image.height == 0 {
        return Ok(());
    }
    let colors = (0..h).flat_map(move |dy| {
        let sy = dy * image.height / h;
        (0..w).map(move |dx| color_at(image, dx * image.width / w, sy))
    });
    d.fill_contiguous(area, colors)
}

/// Draws the progress bar: `done` of its width in [`BAR_DONE`], the rest in [`BAR_TODO`].
pub fn draw_bar<D: DrawTarget<Color = Rgb888>>(
    d: &mut D,
    area: &Rectangle,
    done: f32,
) -> Result<(), D::Error> {
    let w = area.size.width;
    let filled = ((done.clamp(0.0, 1.0) * w as f32).round() as u32).min(w);
    let h = area.size.height;
    d.fill_solid(
        &Rectangle::new(area.top_left, Size::new(filled, h)),
        BAR_DONE,
    )?;
    d.fill_solid(
        &Rectangle::new(
            area.top_left + Point::new(filled as i32, 0),
            Size::new(w - filled, h),
        ),
        BAR_TODO,
    )
}

/// Draws the caption line, centred, in [`FONT`].
pub fn draw_caption<D: DrawTarget<Color = Rgb888>>(
    d: &mut D,
    area: &Rectangle,
    text: &str,
) -> Result<(), D::Error> {
    d.fill_solid(area, BACKGROUND)?;
    let tw = text.len() as u32 * FONT.character_size.width;
    let x = area.top_left.x + (area.size.width.saturating_sub(tw) / 2) as i32;
    let y =
        area.top_left.y + (area.size.height.saturating_sub(FONT.character_size.height) / 2) as i32;
    Text::with_baseline(
        text,
        Point::new(x, y),
        MonoTextStyle::new(&FONT, TEXT),
        Baseline::Top,
    )
    .draw(d)?;
    Ok(())
}

/// Draws the chosen `parts` of `scene` laid out by `layout`.
pub fn draw_scene<D: DrawTarget<Color = Rgb888>>(
    d: &mut D,
    layout: &Layout,
    scene: &Scene,
    parts: Parts,
) -> Result<(), D::Error> {
    if parts.clear {
        d.clear(BACKGROUND)?;
    }
    if let (true, Some(img)) = (parts.image, scene.image) {
        draw_image(d, &layout.image, img)?;
    }
    if let (true, Some(area), Some(text)) = (parts.caption, &layout.caption, scene.caption) {
        draw_caption(d, area, text)?;
    }
    if let (true, Some(area)) = (parts.bar, &layout.bar) {
        match scene.progress {
            Some(p) => draw_bar(d, area, p)?,
            None => d.fill_solid(area, BACKGROUND)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_scale_is_the_largest_that_fits_and_centred() {
        let l = Layout::new(Size::new(240, 240), Size::new(28, 28), false, false);
        assert_eq!(l.fit, Fit::Integer(8));
        assert_eq!(
            l.image,
            Rectangle::new(Point::new(8, 8), Size::new(224, 224))
        );
        let l = Layout::new(Size::new(320, 240), Size::new(122, 122), true, true);
        // 240 − bar 4 − gap 1 − caption 12 = 223 rows for the image: 1×.
        assert_eq!(l.fit, Fit::Integer(1));
        assert_eq!(l.image.top_left, Point::new(99, 50));
        assert_eq!(l.bar.unwrap().top_left.y, 236);
        assert_eq!(l.caption.unwrap().top_left.y, 223);
    }

    #[test]
    fn smaller_screen_shrinks_keeping_aspect() {
        let l = Layout::new(Size::new(128, 64), Size::new(122, 122), false, false);
        assert_eq!(l.fit, Fit::Shrunk);
        assert_eq!(l.image.size, Size::new(64, 64));
        assert_eq!(l.image.top_left, Point::new(32, 0));
    }

    #[test]
    fn screens_too_small_for_a_pixel_of_image_lay_out_without_underflow() {
        for (w, h) in [(0, 0), (0, 4096), (4096, 0), (1, 1), (3, 2)] {
            for (caption, bar) in [(false, false), (true, true)] {
                let l = Layout::new(Size::new(w, h), Size::new(28, 28), caption, bar);
                // Inside the screen (drawing clips the rest), never at a wrapped offset.
                assert!(
                    l.image.top_left.x >= 0 && l.image.top_left.y >= 0,
                    "{w}x{h}"
                );
                assert!(l.image.top_left.x as u32 <= w && l.image.top_left.y as u32 <= h);
                assert!(l.image.size.width <= w.max(1) && l.image.size.height <= h.max(1));
            }
        }
    }

    #[test]
    fn caption_falls_back_to_the_short_form() {
        let l = Layout::new(Size::new(128, 64), Size::new(28, 28), true, false);
        assert_eq!(
            l.fit_caption("a much longer caption than 21 chars", "short"),
            "short"
        );
        let l = Layout::new(Size::new(240, 240), Size::new(28, 28), true, false);
        assert_eq!(
            l.fit_caption("fits in forty characters", "x"),
            "fits in forty characters"
        );
    }
}
