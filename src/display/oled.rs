//! SSD1306 OLED panels (128×64 I2C, monochrome) through the `ssd1306` driver: the layout is
//! ordered-dithered to one bit (see [`super::adapt::dither`]) into the driver's frame buffer,
//! which is then sent whole (1 KiB).
use embedded_graphics::prelude::*;
use embedded_hal::i2c::I2c;
use ssd1306::mode::BufferedGraphicsMode;
use ssd1306::prelude::*;
use ssd1306::Ssd1306;

use super::adapt::{Dithered, Rotation};
use super::layout::{draw_scene, Layout, Parts, Scene};
use super::screen::{probe, Common, Screen, ScreenConfig};
use crate::error::{Error, Result};

type Panel<I> =
    Ssd1306<I2CInterface<I>, DisplaySize128x64, BufferedGraphicsMode<DisplaySize128x64>>;

pub struct Oled<I> {
    display: Panel<I>,
    name: String,
}

fn rotation(r: Rotation) -> DisplayRotation {
    match r {
        Rotation::R0 => DisplayRotation::Rotate0,
        Rotation::R90 => DisplayRotation::Rotate90,
        Rotation::R180 => DisplayRotation::Rotate180,
        Rotation::R270 => DisplayRotation::Rotate270,
    }
}

/// Initialises a 128×64 SSD1306 at I2C `address` on `i2c` and returns it as a [`Screen`].
pub fn screen<I>(i2c: I, address: u8, r: Rotation, name: String) -> Result<Box<dyn Screen>>
where
    I: I2c + Send + 'static,
{
    let di = ssd1306::I2CDisplayInterface::new_custom_address(i2c, address);
    let mut display =
        Ssd1306::new(di, DisplaySize128x64, rotation(r)).into_buffered_graphics_mode();
    display.init().map_err(|e| {
        Error::display(format!(
            "{name}: no answer at I2C address 0x{address:02x} ({e:?}): check the wiring, \
             or try the display spec ssd1306:addr=0x3d"
        ))
    })?;
    Ok(Box::new(Oled { display, name }))
}

impl<I: I2c + Send> Screen for Oled<I> {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn size(&self) -> Size {
        self.display.bounding_box().size
    }

    fn draw(&mut self, layout: &Layout, scene: &Scene, parts: Parts) -> Result<()> {
        let mut d = Dithered {
            inner: &mut self.display,
        };
        draw_scene(&mut d, layout, scene, parts)
            .map_err(|e| Error::display(format!("{}: {e:?}", self.name)))?;
        self.display
            .flush()
            .map_err(|e| Error::display(format!("{}: I2C write failed: {e:?}", self.name)))
    }
}

#[cfg(target_os = "linux")]
pub fn open_linux(cfg: &ScreenConfig, common: Common) -> Result<Box<dyn Screen>> {
    let dev = cfg.device().to_string();
    probe(cfg.kind, &dev)?;
    let i2c = linux_embedded_hal::I2cdev::new(&dev)
        .map_err(|e| Error::display(format!("ssd1306: {dev}: {e}")))?;
    let address = cfg.address.unwrap_or(0x3c);
    if address > 0x7f {
        return Err(Error::display(format!(
            "ssd1306: I2C address 0x{address:x} is not a 7-bit address"
        )));
    }
    screen(
        i2c,
        address as u8,
        common.rotation,
        format!("ssd1306 128x64 on {dev} at 0x{address:02x}"),
    )
}
