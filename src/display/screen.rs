//! What every screen sink shares: the screen families ([`Kind`]), their configuration from a
//! board profile or a `--display` spec ([`ScreenConfig`], [`DisplaySpec`]), the [`Screen`]
//! trait the sinks implement, and device errors.

use std::path::Path;

use embedded_graphics::prelude::*;
use serde::Deserialize;

use super::adapt::Rotation;
use super::layout::{Layout, Parts, Scene};
use crate::error::{Error, Result};

/// One screen family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Png,
    Fb,
    St7789,
    Ili9341,
    Ili9486,
    St7735s,
    Gc9a01,
    St7796,
    Ssd1306,
}

pub const KIND_NAMES: &str =
    "png:PATH, fb[:DEVICE], st7789, ili9341, ili9486, st7735s, gc9a01, st7796, ssd1306";

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Png => "png",
            Kind::Fb => "fb",
            Kind::St7789 => "st7789",
            Kind::Ili9341 => "ili9341",
            Kind::Ili9486 => "ili9486",
            Kind::St7735s => "st7735s",
            Kind::Gc9a01 => "gc9a01",
            Kind::St7796 => "st7796",
            Kind::Ssd1306 => "ssd1306",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "png" => Kind::Png,
            "fb" | "framebuffer" => Kind::Fb,
            "st7789" => Kind::St7789,
            "ili9341" => Kind::Ili9341,
            "ili9486" => Kind::Ili9486,
            "st7735s" | "st7735" => Kind::St7735s,
            "gc9a01" => Kind::Gc9a01,
            "st7796" => Kind::St7796,
            "ssd1306" | "oled" => Kind::Ssd1306,
            _ => return None,
        })
    }

    pub fn is_tft(self) -> bool {
        matches!(
            self,
            Kind::St7789
                | Kind::Ili9341
                | Kind::Ili9486
                | Kind::St7735s
                | Kind::Gc9a01
                | Kind::St7796
        )
    }

    /// The device node a screen of this kind opens when none is configured.
    pub fn default_device(self) -> &'static str {
        match self {
            Kind::Png => "screen.png",
            Kind::Fb => "/dev/fb0",
            Kind::Ssd1306 => "/dev/i2c-1",
            _ => "/dev/spidev0.0",
        }
    }

    /// The group that owns this kind's device nodes on Raspberry Pi OS and Ubuntu for Jetson.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Png => "",
            Kind::Fb => "video",
            Kind::Ssd1306 => "i2c",
            _ => "spi",
        }
    }
}

/// A screen's wiring and panel settings, from a board profile, a display spec, or both.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenConfig {
    pub kind: Kind,
    /// What it is, for listings ("Waveshare 1.3\" LCD HAT").
    #[serde(default)]
    pub title: Option<String>,
    /// /dev/fbN, /dev/spidevB.C, /dev/i2c-N, or the PNG path.
    #[serde(default)]
    pub device: Option<String>,
    /// GPIO character device of the DC/RST/backlight lines.
    #[serde(default)]
    pub gpiochip: Option<String>,
    #[serde(default)]
    pub dc: Option<u32>,
    #[serde(default)]
    pub rst: Option<u32>,
    #[serde(default)]
    pub backlight: Option<u32>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub offset_x: Option<u16>,
    #[serde(default)]
    pub offset_y: Option<u16>,
    #[serde(default)]
    pub invert: Option<bool>,
    #[serde(default)]
    pub bgr: Option<bool>,
    #[serde(default)]
    pub spi_hz: Option<u32>,
    /// I2C address of an OLED (0x3c or 0x3d).
    #[serde(default)]
    pub address: Option<u16>,
    /// Rotation the board's mounting needs (added to --rotate).
    #[serde(default)]
    pub rotate: Option<u32>,
}

impl ScreenConfig {
    pub fn new(kind: Kind) -> ScreenConfig {
        ScreenConfig {
            kind,
            title: None,
            device: None,
            gpiochip: None,
            dc: None,
            rst: None,
            backlight: None,
            width: None,
            height: None,
            offset_x: None,
            offset_y: None,
            invert: None,
            bgr: None,
            spi_hz: None,
            address: None,
            rotate: None,
        }
    }

    pub fn device(&self) -> &str {
        self.device
            .as_deref()
            .unwrap_or_else(|| self.kind.default_device())
    }

    /// `self` with every setting `over` has replaced.
    pub fn merged(&self, over: &ScreenConfig) -> ScreenConfig {
        macro_rules! pick {
            ($($f:ident),*) => { ScreenConfig { kind: over.kind, $($f: over.$f.clone().or_else(|| self.$f.clone()),)* } };
        }
        pick!(
            title, device, gpiochip, dc, rst, backlight, width, height, offset_x, offset_y, invert,
            bgr, spi_hz, address, rotate
        )
    }

    /// One line for listings.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.kind.name(), self.device());
        if let (Some(w), Some(h)) = (self.width, self.height) {
            s += &format!(" {w}x{h}");
        }
        if self.kind.is_tft() {
            let pin = |p: Option<u32>| p.map_or("-".to_string(), |v| v.to_string());
            s += &format!(
                " dc={} rst={} bl={}",
                pin(self.dc),
                pin(self.rst),
                pin(self.backlight)
            );
        }
        if let Some(a) = self.address {
            s += &format!(" addr=0x{a:02x}");
        }
        if let Some(t) = &self.title {
            s += &format!(" ({t})");
        }
        s
    }
}

/// What `--display` asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum DisplaySpec {
    /// The board profile's screen whose device is present; none otherwise.
    Auto,
    None,
    /// A screen of this kind; settings not given come from the board profile.
    Screen(ScreenConfig),
}

fn parse_size(v: &str) -> Option<(u32, u32)> {
    let (w, h) = v.split_once(['x', 'X'])?;
    let (w, h) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    (w > 0 && h > 0 && w <= 8192 && h <= 8192).then_some((w, h))
}

/// Parses `--screen WxH`.
pub fn parse_screen_size(s: &str) -> std::result::Result<Size, String> {
    parse_size(s)
        .map(|(w, h)| Size::new(w, h))
        .ok_or_else(|| format!("invalid screen size '{s}' (expected WIDTHxHEIGHT, e.g. 240x240)"))
}

fn parse_int(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

impl std::str::FromStr for DisplaySpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let unknown = || format!("unknown display '{s}' (valid: auto, none, {KIND_NAMES})");
        match s {
            "auto" => return Ok(DisplaySpec::Auto),
            "none" | "off" => return Ok(DisplaySpec::None),
            _ => {}
        }
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        let kind = Kind::parse(&kind.to_ascii_lowercase()).ok_or_else(unknown)?;
        let mut c = ScreenConfig::new(kind);
        let Some(rest) = rest else {
            if kind == Kind::Png {
                return Err(format!("png needs a path: png:PATH (got '{s}')"));
            }
            return Ok(DisplaySpec::Screen(c));
        };
        // png:PATH and fb:DEVICE take a bare path.
        if matches!(kind, Kind::Png | Kind::Fb) && !rest.contains('=') {
            if rest.is_empty() {
                return Err(format!("{s}: empty path"));
            }
            c.device = Some(rest.to_string());
            return Ok(DisplaySpec::Screen(c));
        }
        for kv in rest.split(',').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let bad = || format!("{s}: invalid value '{v}' for '{k}'");
            let num = || parse_int(v).ok_or_else(bad);
            match k {
                "device" | "dev" | "spi" | "i2c" | "path" => c.device = Some(v.to_string()),
                "gpiochip" | "chip" => c.gpiochip = Some(v.to_string()),
                "dc" => c.dc = Some(num()? as u32),
                "rst" | "reset" => c.rst = Some(num()? as u32),
                "bl" | "backlight" => c.backlight = Some(num()? as u32),
                "width" => c.width = Some(num()? as u32),
                "height" => c.height = Some(num()? as u32),
                "size" => {
                    let (w, h) = parse_size(v).ok_or_else(bad)?;
                    (c.width, c.height) = (Some(w), Some(h));
                }
                "offset" => {
                    let (x, y) = v
                        .split_once(['x', 'X', ','])
                        .and_then(|(x, y)| Some((x.parse().ok()?, y.parse().ok()?)))
                        .ok_or_else(bad)?;
                    (c.offset_x, c.offset_y) = (Some(x), Some(y));
                }
                "invert" => c.invert = Some(v.is_empty() || v == "true" || v == "1"),
                "bgr" => c.bgr = Some(v.is_empty() || v == "true" || v == "1"),
                "hz" | "spi_hz" | "speed" => c.spi_hz = Some(num()? as u32),
                "addr" | "address" => c.address = Some(num()? as u16),
                "rotate" => c.rotate = Some(num()? as u32),
                _ => {
                    return Err(format!(
                        "{s}: unknown setting '{k}' (valid: device, gpiochip, dc, rst, \
                         backlight, size, width, height, offset, invert, bgr, hz, addr, rotate)"
                    ))
                }
            }
        }
        Ok(DisplaySpec::Screen(c))
    }
}

/// A screen that shows [`Scene`]s. Dropping it restores what it changed (console mode).
pub trait Screen: Send {
    /// What it is, for messages: "st7789 240x240 on /dev/spidev0.0".
    fn describe(&self) -> String;
    /// Drawable size in the screen's rotated orientation.
    fn size(&self) -> Size;
    fn draw(&mut self, layout: &Layout, scene: &Scene, parts: Parts) -> Result<()>;
}

/// Settings every sink takes beside its wiring.
#[derive(Clone, Copy, Debug)]
pub struct Common {
    pub rotation: Rotation,
    /// `--screen WxH`: the simulator's size, or a panel size override.
    pub size: Option<Size>,
}

/// A one-line error for a device node that cannot be opened, with the usual fix.
pub fn device_error(kind: Kind, path: &str, e: &std::io::Error) -> Error {
    use std::io::ErrorKind::*;
    let what = kind.name();
    match e.kind() {
        NotFound => {
            let hint = match kind {
                Kind::Fb => "no framebuffer: is a screen connected and its driver loaded?",
                Kind::Ssd1306 => {
                    "enable I2C (raspi-config, or dtparam=i2c_arm=on in config.txt) and reboot"
                }
                _ if path.contains("gpiochip") => "no GPIO character device on this kernel",
                _ => "enable SPI (raspi-config, or dtparam=spi=on in config.txt) and reboot",
            };
            Error::display(format!("{what}: {path} does not exist ({hint})"))
        }
        PermissionDenied => {
            let group = if path.contains("gpiochip") {
                "gpio"
            } else {
                kind.group()
            };
            Error::display(format!(
                "{what}: permission denied opening {path} (add your user to the '{group}' group: \
                 sudo usermod -aG {group} $USER, then log in again)"
            ))
        }
        _ => Error::display(format!("{what}: cannot open {path}: {e}")),
    }
}

/// Opens `path` read-write once, to turn a missing node or a permission problem into a clear
/// message before a driver reports it in its own words.
pub fn probe(kind: Kind, path: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(|e| device_error(kind, path, &e))
}

/// Whether a configured screen's device node exists (what `--display auto` checks).
pub fn present(cfg: &ScreenConfig) -> bool {
    cfg.kind == Kind::Png || Path::new(cfg.device()).exists()
}
