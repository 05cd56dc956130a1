//! The SPI and I2C screen sinks through their real drivers (mipidsi, ssd1306) over recording
//! embedded-hal buses: the controller's command stream is decoded as the datasheets define
//! it (ST7789/ILI9341: MIPI DCS; SSD1306: its command table), the panel memory is rebuilt
//! from the address windows and pixel bytes, and compared with the simulator's picture of the
//! same scene.
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use edge_sample::display::adapt::dither;
use edge_sample::display::layout::draw_scene;
use edge_sample::display::tft::{self, Panel};
use edge_sample::display::{oled, Layout, Parts, Rotation, Scene, Screen};
use edge_sample::image::Pixels;
use embedded_graphics::pixelcolor::{BinaryColor, Rgb888};
use embedded_graphics::prelude::*;
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

fn reference(size: Size, layout: &Layout, scene: &Scene) -> SimulatorDisplay<Rgb888> {
    let mut d = SimulatorDisplay::new(size);
    draw_scene(&mut d, layout, scene, Parts::ALL).unwrap();
    d
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

fn tft_case(model: &str, panel: Panel, rst: bool) -> TftRun {
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
    let sim = reference(size, &layout, &scene);
    let want: Vec<[u8; 2]> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| rgb565(sim.get_pixel(Point::new(x as i32, y as i32))))
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
    } = tft_case("st7789", panel, false);
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
    } = tft_case("ili9341", panel, true);
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

    let sim = reference(Size::new(128, 64), &layout, &scene);
    let mut lit = 0;
    for y in 0..64 {
        for x in 0..128 {
            let p = Point::new(x, y);
            let want = dither(sim.get_pixel(p), p) == BinaryColor::On;
            let got = ram[(y as usize / 8) * 128 + x as usize] >> (y % 8) & 1 == 1;
            assert_eq!(got, want, "pixel ({x}, {y})");
            lit += got as usize;
        }
    }
    assert!(lit > 500, "a picture is on the panel ({lit} pixels lit)");
}
