//! Screens: the layout drawn through embedded-graphics on one sink per screen family.
//!
//! | spec            | sink                                                        |
//! |-----------------|-------------------------------------------------------------|
//! | `png:PATH`      | embedded-graphics-simulator: what a `--screen WxH` panel shows, saved as PNG |
//! | `fb[:DEVICE]`   | Linux framebuffer (/dev/fbN, 16/24/32 bpp) or an XWD file (Xvfb -fbdir) |
//! | `st7789` …      | SPI TFTs through mipidsi over spidev + GPIO character device |
//! | `ssd1306`       | 128×64 I2C OLED, ordered-dithered to one bit                |
//!
//! Wiring comes from the board profile (`boards/*.toml`) and can be overridden in the spec:
//! `st7789:device=/dev/spidev0.1,dc=25,rst=27,backlight=24,size=240x240,invert`.
pub mod adapt;
#[cfg(target_os = "linux")]
pub mod fb;
pub mod layout;
pub mod live;
pub mod oled;
pub mod screen;
pub mod sim;
pub mod tft;

use std::path::{Path, PathBuf};

use embedded_graphics::prelude::*;

pub use adapt::Rotation;
pub use layout::{Layout, Parts, Scene};

pub use screen::{
    device_error, parse_screen_size, present, probe, Common, DisplaySpec, Kind, Screen,
    ScreenConfig, KIND_NAMES,
};

use crate::error::{Error, Result};

/// Opens the screen `cfg` describes.
pub fn open(cfg: &ScreenConfig, common: Common) -> Result<Box<dyn Screen>> {
    let rotation = add_rotation(common.rotation, cfg.rotate)?;
    let common = Common { rotation, ..common };
    match cfg.kind {
        Kind::Png => {
            let size = common
                .size
                .or_else(|| Some(Size::new(cfg.width?, cfg.height?)))
                .unwrap_or(Size::new(240, 240));
            Ok(Box::new(sim::SimScreen::new(
                PathBuf::from(cfg.device()),
                size,
                rotation,
            )?))
        }
        #[cfg(target_os = "linux")]
        Kind::Fb => Ok(Box::new(fb::FbScreen::open(
            Path::new(cfg.device()),
            rotation,
        )?)),
        #[cfg(target_os = "linux")]
        k if k.is_tft() => tft::open_linux(cfg, common),
        #[cfg(target_os = "linux")]
        Kind::Ssd1306 => oled::open_linux(cfg, common),
        #[cfg(not(target_os = "linux"))]
        k => Err(Error::display(format!(
            "{}: screens other than png: need Linux",
            k.name()
        ))),
        #[cfg(target_os = "linux")]
        _ => unreachable!("every kind is handled above"),
    }
}

fn add_rotation(r: Rotation, extra: Option<u32>) -> Result<Rotation> {
    let deg = (r.degrees() + extra.unwrap_or(0)) % 360;
    deg.to_string()
        .parse()
        .map_err(|e: String| Error::display(format!("board profile rotate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!("auto".parse::<DisplaySpec>(), Ok(DisplaySpec::Auto));
        assert_eq!("none".parse::<DisplaySpec>(), Ok(DisplaySpec::None));
        let DisplaySpec::Screen(c) = "png:out/screen.png".parse().unwrap() else {
            panic!()
        };
        assert_eq!((c.kind, c.device()), (Kind::Png, "out/screen.png"));
        let DisplaySpec::Screen(c) = "fb".parse().unwrap() else {
            panic!()
        };
        assert_eq!(c.device(), "/dev/fb0");
        let DisplaySpec::Screen(c) =
            "st7789:device=/dev/spidev0.1,dc=25,rst=27,bl=24,size=240x240,invert,hz=40000000"
                .parse()
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(c.device(), "/dev/spidev0.1");
        assert_eq!((c.dc, c.rst, c.backlight), (Some(25), Some(27), Some(24)));
        assert_eq!(
            (c.width, c.height, c.invert),
            (Some(240), Some(240), Some(true))
        );
        assert_eq!(c.spi_hz, Some(40_000_000));
        let DisplaySpec::Screen(c) = "ssd1306:addr=0x3d".parse().unwrap() else {
            panic!()
        };
        assert_eq!(c.address, Some(0x3d));
    }

    #[test]
    fn bad_specs_name_the_valid_choices() {
        let e = "hdmi".parse::<DisplaySpec>().unwrap_err();
        assert!(
            e.contains("unknown display 'hdmi'") && e.contains("st7789"),
            "{e}"
        );
        let e = "st7789:dc=x".parse::<DisplaySpec>().unwrap_err();
        assert!(e.contains("invalid value 'x' for 'dc'"), "{e}");
        let e = "st7789:colour=red".parse::<DisplaySpec>().unwrap_err();
        assert!(e.contains("unknown setting 'colour'"), "{e}");
        assert!("png"
            .parse::<DisplaySpec>()
            .unwrap_err()
            .contains("png:PATH"));
        assert!(parse_screen_size("240").is_err());
        assert_eq!(parse_screen_size("320x240"), Ok(Size::new(320, 240)));
    }

    #[test]
    fn device_errors_say_how_to_fix_them() {
        use std::io::{Error as IoError, ErrorKind};
        let denied = IoError::from(ErrorKind::PermissionDenied);
        let e = device_error(Kind::Fb, "/dev/fb0", &denied).to_string();
        assert!(
            e.contains("permission denied opening /dev/fb0") && e.contains("'video' group"),
            "{e}"
        );
        let e = device_error(Kind::St7789, "/dev/spidev0.0", &denied).to_string();
        assert!(
            e.contains("'spi' group") && e.contains("usermod -aG spi"),
            "{e}"
        );
        let e = device_error(Kind::St7789, "/dev/gpiochip0", &denied).to_string();
        assert!(e.contains("'gpio' group"), "{e}");
        let e = device_error(Kind::Ssd1306, "/dev/i2c-1", &denied).to_string();
        assert!(e.contains("'i2c' group"), "{e}");
        let missing = IoError::from(ErrorKind::NotFound);
        let e = device_error(Kind::St7789, "/dev/spidev0.0", &missing).to_string();
        assert!(
            e.contains("does not exist") && e.contains("dtparam=spi=on"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn spec_settings_override_the_board() {
        let mut board = ScreenConfig::new(Kind::St7789);
        (board.dc, board.rst, board.width) = (Some(25), Some(27), Some(240));
        let mut over = ScreenConfig::new(Kind::St7789);
        over.dc = Some(9);
        let m = board.merged(&over);
        assert_eq!((m.dc, m.rst, m.width), (Some(9), Some(27), Some(240)));
    }
}
