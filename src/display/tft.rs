//! SPI TFT panels (ST7789, ILI9341, ILI9486, ST7735S, GC9A01, ST7796) through `mipidsi`, on
//! any embedded-hal 1.0 SPI device and output pins: spidev and the GPIO character device on a
//! board ([`open_linux`]), a recording bus in the tests. Rotation is the panel's own
//! (MADCTL), so pixels stream in address-window bursts whatever the orientation.
use embedded_graphics::pixelcolor::{Rgb565, Rgb888};
use embedded_graphics::prelude::*;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiDevice;
use mipidsi::interface::SpiInterface;
use mipidsi::models::Model;
use mipidsi::options::{ColorInversion, ColorOrder, Orientation};

use super::adapt::Rotation;
use super::layout::{draw_scene, Layout, Parts, Scene};
use super::screen::{Kind, Screen, ScreenConfig};
use crate::error::{Error, Result};

/// Bytes gathered per SPI transfer (spidev's default limit is 4096).
pub const SPI_CHUNK: usize = 4096;

/// Panel settings of a TFT, resolved from its [`ScreenConfig`].
#[derive(Clone, Copy, Debug)]
pub struct Panel {
    pub width: u16,
    pub height: u16,
    pub offset: (u16, u16),
    pub invert: bool,
    pub bgr: bool,
    pub rotation: Rotation,
}

impl Panel {
    pub fn from_config(cfg: &ScreenConfig, rotation: Rotation, size: Option<Size>) -> Panel {
        // 240×240 ST7789 HATs are the common case; the others default to their native size.
        let (w, h) = match cfg.kind {
            Kind::St7789 => (240, 240),
            Kind::Ili9341 => (240, 320),
            Kind::Ili9486 => (320, 480),
            Kind::St7735s => (128, 160),
            Kind::Gc9a01 => (240, 240),
            _ => (320, 480),
        };
        let w = size.map(|s| s.width).or(cfg.width).unwrap_or(w);
        let h = size.map(|s| s.height).or(cfg.height).unwrap_or(h);
        Panel {
            width: w.min(u16::MAX as u32) as u16,
            height: h.min(u16::MAX as u32) as u16,
            offset: (cfg.offset_x.unwrap_or(0), cfg.offset_y.unwrap_or(0)),
            // IPS ST7789 and GC9A01 panels need inversion for true colours.
            invert: cfg
                .invert
                .unwrap_or(matches!(cfg.kind, Kind::St7789 | Kind::Gc9a01)),
            bgr: cfg
                .bgr
                .unwrap_or(matches!(cfg.kind, Kind::Ili9341 | Kind::Ili9486)),
            rotation,
        }
    }
}

fn orientation(r: Rotation) -> Orientation {
    use mipidsi::options::Rotation as R;
    Orientation::new().rotate(match r {
        Rotation::R0 => R::Deg0,
        Rotation::R90 => R::Deg90,
        Rotation::R180 => R::Deg180,
        Rotation::R270 => R::Deg270,
    })
}

/// A TFT panel with its optional backlight pin (held so the line stays driven high).
pub struct Tft<D, BL> {
    display: D,
    _backlight: Option<BL>,
    name: String,
}

/// Initialises a panel of `model` on `spi`/`dc` (hardware reset through `rst` when wired,
/// else the SWRESET command), turns the backlight on, and returns it as a [`Screen`].
#[allow(clippy::too_many_arguments)]
pub fn screen<M, SPI, DC, P>(
    model: M,
    spi: SPI,
    dc: DC,
    rst: Option<P>,
    backlight: Option<P>,
    panel: Panel,
    name: String,
    delay: &mut impl DelayNs,
) -> Result<Box<dyn Screen>>
where
    M: Model<ColorFormat = Rgb565> + Send + 'static,
    SPI: SpiDevice + Send + 'static,
    DC: OutputPin + Send + 'static,
    P: OutputPin + Send + 'static,
{
    let buffer: &'static mut [u8] = Box::leak(vec![0u8; SPI_CHUNK].into_boxed_slice());
    let di = SpiInterface::new(spi, dc, buffer);
    let builder = mipidsi::Builder::new(model, di)
        .display_size(panel.width, panel.height)
        .display_offset(panel.offset.0, panel.offset.1)
        .invert_colors(if panel.invert {
            ColorInversion::Inverted
        } else {
            ColorInversion::Normal
        })
        .color_order(if panel.bgr {
            ColorOrder::Bgr
        } else {
            ColorOrder::Rgb
        })
        .orientation(orientation(panel.rotation));
    let init_err = |e: &dyn std::fmt::Debug| {
        Error::display(format!(
            "{name}: panel initialisation failed ({e:?}): check the wiring and the size/offset of the display spec"
        ))
    };
    let mut backlight = backlight;
    if let Some(bl) = &mut backlight {
        bl.set_high()
            .map_err(|e| Error::display(format!("{name}: backlight pin: {e:?}")))?;
    }
    match rst {
        Some(rst) => {
            let display = builder
                .reset_pin(rst)
                .init(delay)
                .map_err(|e| init_err(&e))?;
            Ok(Box::new(Tft {
                display,
                _backlight: backlight,
                name,
            }))
        }
        None => {
            let display = builder.init(delay).map_err(|e| init_err(&e))?;
            Ok(Box::new(Tft {
                display,
                _backlight: backlight,
                name,
            }))
        }
    }
}

impl<D, BL> Screen for Tft<D, BL>
where
    D: DrawTarget<Color = Rgb565> + Send,
    D::Error: std::fmt::Debug,
    BL: OutputPin + Send,
{
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn size(&self) -> Size {
        self.display.bounding_box().size
    }

    fn draw(&mut self, layout: &Layout, scene: &Scene, parts: Parts) -> Result<()> {
        let mut d = self.display.color_converted::<Rgb888>();
        draw_scene(&mut d, layout, scene, parts)
            .map_err(|e| Error::display(format!("{}: SPI write failed: {e:?}", self.name)))
    }
}

#[cfg(target_os = "linux")]
pub use linux::open_linux;

#[cfg(target_os = "linux")]
mod linux {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
    use linux_embedded_hal::{CdevPin, Delay, SpidevDevice};

    use super::*;
    use crate::display::{probe, Common};

    fn pin(chip: &mut Chip, path: &str, line: u32, what: &str, kind: Kind) -> Result<CdevPin> {
        let err = |e: &dyn std::fmt::Display| {
            Error::display(format!(
                "{}: GPIO line {line} ({what}) on {path}: {e}",
                kind.name()
            ))
        };
        let handle = chip
            .get_line(line)
            .and_then(|l| l.request(LineRequestFlags::OUTPUT, 0, "edge-sample"))
            .map_err(|e| err(&e))?;
        CdevPin::new(handle).map_err(|e| err(&e))
    }

    /// Opens a TFT on spidev + gpiochip as `cfg` wires it.
    pub fn open_linux(cfg: &ScreenConfig, common: Common) -> Result<Box<dyn Screen>> {
        let kind = cfg.kind;
        let dev = cfg.device().to_string();
        let chip_path = cfg
            .gpiochip
            .as_deref()
            .unwrap_or("/dev/gpiochip0")
            .to_string();
        let Some(dc_line) = cfg.dc else {
            return Err(Error::display(format!(
                "{}: no DC pin: give one in the display spec ({}:dc=N) or in a board profile",
                kind.name(),
                kind.name()
            )));
        };
        probe(kind, &dev)?;
        probe(kind, &chip_path)?;
        let mut spi = SpidevDevice::open(&dev)
            .map_err(|e| crate::display::device_error(kind, &dev, e.inner()))?;
        let hz = cfg.spi_hz.unwrap_or(40_000_000);
        spi.configure(
            &SpidevOptions::new()
                .bits_per_word(8)
                .max_speed_hz(hz)
                .mode(SpiModeFlags::SPI_MODE_0)
                .build(),
        )
        .map_err(|e| Error::display(format!("{}: configuring {dev}: {e}", kind.name())))?;
        let mut chip = Chip::new(&chip_path)
            .map_err(|e| Error::display(format!("{}: {chip_path}: {e}", kind.name())))?;
        let dc = pin(&mut chip, &chip_path, dc_line, "DC", kind)?;
        let rst = cfg
            .rst
            .map(|l| pin(&mut chip, &chip_path, l, "RST", kind))
            .transpose()?;
        let bl = cfg
            .backlight
            .map(|l| pin(&mut chip, &chip_path, l, "backlight", kind))
            .transpose()?;
        let panel = Panel::from_config(cfg, common.rotation, common.size);
        let name = format!("{} {}x{} on {dev}", kind.name(), panel.width, panel.height);
        let mut delay = Delay;
        use mipidsi::models::*;
        match kind {
            Kind::St7789 => screen(ST7789, spi, dc, rst, bl, panel, name, &mut delay),
            Kind::Ili9341 => screen(ILI9341Rgb565, spi, dc, rst, bl, panel, name, &mut delay),
            Kind::Ili9486 => screen(ILI9486Rgb565, spi, dc, rst, bl, panel, name, &mut delay),
            Kind::St7735s => screen(ST7735s, spi, dc, rst, bl, panel, name, &mut delay),
            Kind::Gc9a01 => screen(GC9A01, spi, dc, rst, bl, panel, name, &mut delay),
            Kind::St7796 => screen(ST7796, spi, dc, rst, bl, panel, name, &mut delay),
            _ => unreachable!("open_linux is called for TFT kinds"),
        }
    }
}
