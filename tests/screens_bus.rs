//! The SPI and I2C screen sinks through their real drivers (mipidsi, ssd1306) over recording
//! embedded-hal buses: the controller's command stream is decoded as the datasheets define
//! it (ST7789/ILI9341: MIPI DCS; SSD1306: its command table), the panel memory is rebuilt
//! from the address windows and pixel bytes, and compared with the simulator's picture of the
//! same scene.
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use edge_sample::display::layout::{BAR_DONE, BAR_TODO};
use edge_sample::display::tft::{self, Panel};
use edge_sample::display::{oled, Layout, Parts, Rotation, Scene, Screen};
use edge_sample::image::Pixels;
use embedded_graphics::mono_font::{ascii::FONT_6X10, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use embedded_graphics::text::{Baseline, Text};
use embedded_graphics_simulator::SimulatorDisplay;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{ErrorType as PinErrorType, OutputPin};
use embedded_hal::i2c::{ErrorType as I2cErrorType, I2c, Operation as I2cOp};
use embedded_hal::spi::{ErrorType as SpiErrorType, Operation, SpiDevice};

// ---------------------------------------------------------------------------------------
// Recording buses
// ---------------------------------------------------------------------------------------

/// What went over a 4-wire SPI display bus: each command byte (DC low) with the data bytes
/// (DC high) that followed it.
#[derive(Default)]
struct SpiLog {
    dc_high: bool,
    commands: Vec<(u8, Vec<u8>)>,
    pins: Vec<(&'static str, bool)>,
}

#[derive(Clone)]
struct SpiBus(Arc<Mutex<SpiLog>>);
struct Pin(Arc<Mutex<SpiLog>>, &'static str);

impl SpiErrorType for SpiBus {
    type Error = Infallible;
}

impl SpiDevice for SpiBus {
    fn transaction(&mut self, ops: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        let mut log = self.0.lock().unwrap();
        for op in ops {
            let Operation::Write(bytes) = op else {
                panic!("a display bus only writes")
            };
            for &b in bytes.iter() {
                if log.dc_high {
                    log.commands
                        .last_mut()
                        .expect("data before any command")
                        .1
                        .push(b);
                } else {
                    log.commands.push((b, vec![]));
                }
            }
        }
        Ok(())
    }
}

impl PinErrorType for Pin {
    type Error = Infallible;
}

impl OutputPin for Pin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        let mut log = self.0.lock().unwrap();
        if self.1 == "dc" {
            log.dc_high = false;
        }
        log.pins.push((self.1, false));
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        let mut log = self.0.lock().unwrap();
        if self.1 == "dc" {
            log.dc_high = true;
        }
        log.pins.push((self.1, true));
        Ok(())
    }
}

struct NoDelay;
impl DelayNs for NoDelay {
    fn delay_ns(&mut self, _: u32) {}
}

/// Every I2C write: (address, bytes).
#[derive(Clone, Default)]
struct I2cBus(Arc<Mutex<Vec<Write>>>);

/// One I2C write: address and bytes.
type Write = (u8, Vec<u8>);
/// A display command and its data bytes.
type Command = (u8, Vec<u8>);

/// What a TFT case recorded: init commands, pin changes, panel size, panel memory rebuilt from
/// the bus, and the simulator's picture in the panel's format.
struct TftRun {
    init: Vec<Command>,
    pins: Vec<(&'static str, bool)>,
    size: Size,
    got: Vec<[u8; 2]>,
    want: Vec<[u8; 2]>,
}

impl I2cErrorType for I2cBus {
    type Error = Infallible;
}

impl I2c for I2cBus {
    fn transaction(&mut self, address: u8, ops: &mut [I2cOp<'_>]) -> Result<(), Infallible> {
        let mut bytes = vec![];
        for op in ops {
            match op {
                I2cOp::Write(b) => bytes.extend_from_slice(b),
                I2cOp::Read(_) => panic!("the SSD1306 is write-only here"),
            }
        }
        self.0.lock().unwrap().push((address, bytes));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The scene, and its reference picture from the simulator
// ---------------------------------------------------------------------------------------

fn card(w: usize, h: usize) -> Pixels {
    let mut data = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) * 3;
            data[i] = (x * 255 / (w - 1)) as u8;
            data[i + 1] = (y * 255 / (h - 1)) as u8;
            data[i + 2] = if (x / 4 + y / 4) % 2 == 0 { 200 } else { 30 };
        }
    }
    Pixels {
        width: w,
        height: h,
        channels: 3,
        data,
    }
}

/// Where a case's parts go, worked out by hand from the layout rules (bar of min(4, h/8)
/// rows at the bottom, one blank row above it, a 12-row caption line above that, the image
/// scaled by the largest integer factor that fits the rest, or shrunk by nearest neighbour,
/// and centred): checked against edge-sample's `Layout` and used to build the reference.
struct Geometry {
    screen: Size,
    /// x, y, width, height of the drawn image.
    image: (usize, usize, usize, usize),
    /// First row of the caption line.
    caption: Option<usize>,
    /// First row and rows of the bar.
    bar: Option<(usize, usize)>,
}

impl Geometry {
    fn check(&self, layout: &Layout) {
        let (x, y, w, h) = self.image;
        assert_eq!(layout.screen, self.screen);
        assert_eq!(
            layout.image,
            Rectangle::new(
                Point::new(x as i32, y as i32),
                Size::new(w as u32, h as u32)
            ),
            "image area"
        );
        let sw = self.screen.width;
        assert_eq!(
            layout.caption,
            self.caption
                .map(|y| Rectangle::new(Point::new(0, y as i32), Size::new(sw, 12))),
            "caption line"
        );
        assert_eq!(
            layout.bar,
            self.bar
                .map(|(y, h)| Rectangle::new(Point::new(0, y as i32), Size::new(sw, h as u32))),
            "bar"
        );
    }
}

/// The bar's colours by value (done: #3ddc84, to do: #303030), the same as edge-sample's
/// published constants.
const DONE: Rgb888 = Rgb888::new(0x3d, 0xdc, 0x84);
const TODO: Rgb888 = Rgb888::new(0x30, 0x30, 0x30);

/// The scene as the test draws it itself: black, the picture nearest-neighbour into the image
/// area (source pixel ⌊dx·W/dw⌋, ⌊dy·H/dh⌋ — at an integer scale k that is ⌊dx/k⌋), the
/// caption centred in FONT_6X10 by embedded-graphics' own text renderer, and the bar with
/// round(progress·width) columns done.
fn reference(g: &Geometry, picture: &Pixels, caption: Option<&str>, progress: f32) -> Vec<Rgb888> {
    assert_eq!((BAR_DONE, BAR_TODO), (DONE, TODO));
    let (sw, sh) = (g.screen.width as usize, g.screen.height as usize);
    let mut d = SimulatorDisplay::<Rgb888>::new(g.screen);
    let (x0, y0, dw, dh) = g.image;
    for dy in 0..dh {
        for dx in 0..dw {
            let (sx, sy) = (dx * picture.width / dw, dy * picture.height / dh);
            let i = (sy * picture.width + sx) * 3;
            let c = Rgb888::new(picture.data[i], picture.data[i + 1], picture.data[i + 2]);
            Pixel(Point::new((x0 + dx) as i32, (y0 + dy) as i32), c)
                .draw(&mut d)
                .unwrap();
        }
    }
    if let (Some(y), Some(text)) = (g.caption, caption) {
        let x = sw.saturating_sub(6 * text.len()) / 2;
        Text::with_baseline(
            text,
            Point::new(x as i32, y as i32 + 1),
            MonoTextStyle::new(&FONT_6X10, Rgb888::WHITE),
            Baseline::Top,
        )
        .draw(&mut d)
        .unwrap();
    }
    if let Some((y, h)) = g.bar {
        let done = (progress as f64 * sw as f64).round() as usize;
        for yy in y..y + h {
            for x in 0..sw {
                let c = if x < done { DONE } else { TODO };
                Pixel(Point::new(x as i32, yy as i32), c)
                    .draw(&mut d)
                    .unwrap();
            }
        }
    }
    (0..sh)
        .flat_map(|y| (0..sw).map(move |x| (x, y)))
        .map(|(x, y)| d.get_pixel(Point::new(x as i32, y as i32)))
        .collect()
}

/// The 2^k × 2^k Bayer index matrix from its recursive definition:
/// M₁ = [0], M₂ₙ(i, j) = 4·Mₙ(i mod n, j mod n) + M₂(⌊i/n⌋, ⌊j/n⌋) with M₂ = [[0, 2], [3, 1]].
fn bayer(size: usize) -> Vec<Vec<u32>> {
    let m2 = [[0u32, 2], [3, 1]];
    let mut m = vec![vec![0u32]];
    while m.len() < size {
        let n = m.len();
        m = (0..2 * n)
            .map(|i| {
                (0..2 * n)
                    .map(|j| 4 * m[i % n][j % n] + m2[i / n][j / n])
                    .collect()
            })
            .collect();
    }
    m
}

/// Ordered dithering as documented: luma by ITU-R BT.601 in 8-bit fixed point
/// ((77·R + 150·G + 29·B + 128) >> 8), quantised to 0..=64 levels (round(luma·64/255)), and a
/// pixel at panel position (x, y) is on when that level exceeds the 8×8 Bayer index at
/// (y mod 8, x mod 8): a flat grey lights its share of every 8×8 tile.
fn dithered_on(m: &[Vec<u32>], c: Rgb888, x: usize, y: usize) -> bool {
    let luma = (77 * c.r() as u32 + 150 * c.g() as u32 + 29 * c.b() as u32 + 128) >> 8;
    let level = (luma * 64 + 127) / 255;
    level > m[y % 8][x % 8]
}

/// RGB565 as a panel receives it (big-endian on the wire) from an Rgb888 colour, each channel
/// rounded to its width as embedded-graphics converts colours.
fn rgb565(c: Rgb888) -> [u8; 2] {
    let q = |v: u8, bits: u32| ((v as u32 * ((1 << bits) - 1) + 127) / 255) as u16;
    let v = (q(c.r(), 5) << 11) | (q(c.g(), 6) << 5) | q(c.b(), 5);
    v.to_be_bytes()
}

/// Replays DCS commands into panel memory: CASET (0x2A) and RASET (0x2B) set the window,
/// RAMWR (0x2C) fills it row by row with 16-bit pixels.
fn replay_dcs(commands: &[Command], w: usize, h: usize) -> Vec<[u8; 2]> {
    let mut mem = vec![[0u8; 2]; w * h];
    let (mut cols, mut rows) = ((0usize, w - 1), (0usize, h - 1));
    let be = |a: &[u8]| ((a[0] as usize) << 8) | a[1] as usize;
    for (cmd, args) in commands {
        match cmd {
            0x2A => cols = (be(&args[0..2]), be(&args[2..4])),
            0x2B => rows = (be(&args[0..2]), be(&args[2..4])),
            0x2C => {
                assert_eq!(args.len() % 2, 0, "whole pixels");
                let ww = cols.1 - cols.0 + 1;
                for (k, px) in args.chunks(2).enumerate() {
                    let (x, y) = (cols.0 + k % ww, rows.0 + k / ww);
                    assert!(y <= rows.1, "RAMWR overflows its window");
                    mem[y * w + x] = [px[0], px[1]];
                }
            }
            _ => {}
        }
    }
    mem
}

fn tft_case(model: &str, panel: Panel, rst: bool, geometry: Geometry) -> TftRun {
    let log = Arc::new(Mutex::new(SpiLog::default()));
    let spi = SpiBus(log.clone());
    let dc = Pin(log.clone(), "dc");
    let rst = rst.then(|| Pin(log.clone(), "rst"));
    let bl = Some(Pin(log.clone(), "backlight"));
    let mut screen: Box<dyn Screen> = match model {
        "st7789" => tft::screen(
            mipidsi::models::ST7789,
            spi,
            dc,
            rst,
            bl,
            panel,
            "st7789".into(),
            &mut NoDelay,
        ),
        "ili9341" => tft::screen(
            mipidsi::models::ILI9341Rgb565,
            spi,
            dc,
            rst,
            bl,
            panel,
            "ili9341".into(),
            &mut NoDelay,
        ),
        _ => unreachable!(),
    }
    .unwrap();
    let size = screen.size();
    let picture = card(50, 30);
    let layout = Layout::new(size, Size::new(50, 30), true, true);
    geometry.check(&layout);
    let scene = Scene {
        image: Some(&picture),
        caption: Some("ddim 20 steps"),
        progress: Some(0.5),
    };
    let init_len = log.lock().unwrap().commands.len();
    screen.draw(&layout, &scene, Parts::ALL).unwrap();
    drop(screen);
    let log = Arc::try_unwrap(log)
        .ok()
        .expect("the screen released the bus")
        .into_inner()
        .unwrap();
    let (w, h) = (size.width as usize, size.height as usize);
    let got = replay_dcs(&log.commands[init_len..], w, h);
    let want: Vec<[u8; 2]> = reference(&geometry, &picture, scene.caption, 0.5)
        .into_iter()
        .map(rgb565)
        .collect();
    let init = log.commands[..init_len].to_vec();
    TftRun {
        init,
        pins: log.pins,
        size,
        got,
        want,
    }
}

fn opcodes(cmds: &[Command]) -> Vec<u8> {
    cmds.iter().map(|c| c.0).collect()
}

#[test]
fn st7789_init_sequence_window_and_pixels() {
    let panel = Panel {
        width: 240,
        height: 240,
        offset: (0, 0),
        invert: true,
        bgr: false,
        rotation: Rotation::R0,
    };
    let TftRun {
        init,
        pins,
        size,
        got,
        want,
    } = tft_case(
        "st7789",
        panel,
        false,
        // 240 rows: bar 236..240, gap 235, caption 223..235; 223 rows left: 50×30 at
        // min(240/50, 223/30) = 4× → 200×120 at ((240 − 200)/2, (223 − 120)/2) = (20, 51).
        Geometry {
            screen: Size::new(240, 240),
            image: (20, 51, 200, 120),
            caption: Some(223),
            bar: Some((236, 4)),
        },
    );
    assert_eq!(size, Size::new(240, 240));
    // Without a reset line: SWRESET, SLPOUT, MADCTL, INVON (IPS panel), COLMOD, NORON, DISPON.
    assert_eq!(opcodes(&init), [0x01, 0x11, 0x36, 0x21, 0x3A, 0x13, 0x29]);
    let colmod = &init[4].1;
    assert_eq!(
        colmod,
        &[0x55],
        "COLMOD: 16 bits per pixel on both interfaces"
    );
    assert_eq!(init[2].1, [0x00], "MADCTL: no rotation, RGB order");
    assert!(pins.contains(&("backlight", true)), "backlight switched on");
    let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        diff,
        0,
        "{diff} of {} panel pixels differ from the simulator",
        got.len()
    );
}

#[test]
fn ili9341_rotated_with_reset_line() {
    let panel = Panel {
        width: 240,
        height: 320,
        offset: (0, 0),
        invert: false,
        bgr: true,
        rotation: Rotation::R90,
    };
    let TftRun {
        init,
        pins,
        size,
        got,
        want,
    } = tft_case(
        "ili9341",
        panel,
        true,
        // Logical 320×240: bar 236..240, caption 223..235; 50×30 at min(320/50, 223/30) = 6×
        // → 300×180 at ((320 − 300)/2, (223 − 180)/2) = (10, 21).
        Geometry {
            screen: Size::new(320, 240),
            image: (10, 21, 300, 180),
            caption: Some(223),
            bar: Some((236, 4)),
        },
    );
    // A 90° turn exchanges rows and columns (MADCTL MV, bit 5) and the panel is 320×240.
    assert_eq!(size, Size::new(320, 240));
    let madctl = init.iter().find(|c| c.0 == 0x36).expect("MADCTL sent").1[0];
    assert_ne!(madctl & 0x20, 0, "MV set: {madctl:#04x}");
    assert_ne!(madctl & 0x08, 0, "BGR set: {madctl:#04x}");
    assert!(
        !opcodes(&init).contains(&0x01),
        "hardware reset replaces SWRESET"
    );
    let rst: Vec<bool> = pins.iter().filter(|p| p.0 == "rst").map(|p| p.1).collect();
    assert_eq!(rst, [false, true], "reset pulse low then high");
    assert!(opcodes(&init).contains(&0x29), "DISPON");
    assert!(
        !opcodes(&init).contains(&0x21),
        "no inversion for this TN panel"
    );
    let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        diff,
        0,
        "{diff} of {} panel pixels differ from the simulator",
        got.len()
    );
}

/// Argument counts of the SSD1306 commands (datasheet, section 9).
fn ssd1306_args(cmd: u8) -> usize {
    match cmd {
        0x20 | 0x81 | 0x8D | 0xA8 | 0xD3 | 0xD5 | 0xD9 | 0xDA | 0xDB => 1,
        0x21 | 0x22 | 0xA3 => 2,
        0x29 | 0x2A => 5,
        0x26 | 0x27 => 6,
        _ => 0,
    }
}

#[test]
fn ssd1306_over_i2c_dithered() {
    let bus = I2cBus::default();
    let mut screen = oled::screen(bus.clone(), 0x3c, Rotation::R0, "ssd1306".into()).unwrap();
    assert_eq!(screen.size(), Size::new(128, 64));
    let picture = card(60, 60);
    let layout = Layout::new(screen.size(), Size::new(60, 60), false, true);
    // 64 rows: bar min(4, 64/8) = 4 rows at 60, gap 59; 59 rows left, less than 60: shrunk to
    // 59×59 (aspect kept), centred at ((128 − 59)/2, 0) = (34, 0).
    let geometry = Geometry {
        screen: Size::new(128, 64),
        image: (34, 0, 59, 59),
        caption: None,
        bar: Some((60, 4)),
    };
    geometry.check(&layout);
    let scene = Scene {
        image: Some(&picture),
        caption: None,
        progress: Some(0.75),
    };
    screen.draw(&layout, &scene, Parts::ALL).unwrap();

    // Replay: control byte 0x00 = commands, 0x40 = GDDRAM data (horizontal addressing).
    let writes = bus.0.lock().unwrap().clone();
    let mut commands: Vec<Command> = vec![];
    let mut ram = vec![0u8; 128 * 8];
    let (mut cols, mut pages, mut mode) = ((0usize, 127usize), (0usize, 7usize), 2u8);
    let mut cursor = (0usize, 0usize);
    for (addr, bytes) in &writes {
        assert_eq!(*addr, 0x3c, "every write goes to the OLED's address");
        match bytes[0] {
            0x00 => {
                let mut it = bytes[1..].iter().copied();
                while let Some(c) = it.next() {
                    let args: Vec<u8> = (0..ssd1306_args(c))
                        .map(|_| it.next().expect("argument"))
                        .collect();
                    match c {
                        0x20 => mode = args[0],
                        0x21 => {
                            cols = (args[0] as usize, args[1] as usize);
                            cursor.0 = cols.0;
                        }
                        0x22 => {
                            pages = (args[0] as usize, args[1] as usize);
                            cursor.1 = pages.0;
                        }
                        _ => {}
                    }
                    commands.push((c, args));
                }
            }
            0x40 => {
                assert_eq!(mode, 0, "data only in horizontal addressing mode");
                for &b in &bytes[1..] {
                    ram[cursor.1 * 128 + cursor.0] = b;
                    cursor.0 += 1;
                    if cursor.0 > cols.1 {
                        cursor.0 = cols.0;
                        cursor.1 = if cursor.1 >= pages.1 {
                            pages.0
                        } else {
                            cursor.1 + 1
                        };
                    }
                }
            }
            other => panic!("unknown control byte {other:#04x}"),
        }
    }
    let ops = opcodes(&commands);
    assert_eq!(ops[0], 0xAE, "display off first");
    assert!(commands.contains(&(0x8D, vec![0x14])), "charge pump on");
    assert!(
        commands.contains(&(0xA8, vec![63])),
        "multiplex ratio for 64 rows"
    );
    assert!(ops.contains(&0xAF), "display on");

    let want = reference(&geometry, &picture, None, 0.75);
    let m = bayer(8);
    assert_eq!(
        m[0],
        [0, 32, 8, 40, 2, 34, 10, 42],
        "the classic 8×8 Bayer matrix"
    );
    let mut lit = 0;
    for y in 0..64 {
        for x in 0..128 {
            let want = dithered_on(&m, want[y * 128 + x], x, y);
            let got = ram[(y / 8) * 128 + x] >> (y % 8) & 1 == 1;
            assert_eq!(got, want, "pixel ({x}, {y})");
            lit += got as usize;
        }
    }
    assert!(lit > 500, "a picture is on the panel ({lit} pixels lit)");
}
