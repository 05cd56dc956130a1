//! Screens: the layout through the simulator (golden images plus independent checks), the
//! simulated screen against the PNG the same run writes, and the framebuffer sink end to end
//! on a real X server's framebuffer (Xvfb -fbdir, read back with xwd) at 16 and 32 bpp.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_sample::display::layout::{Fit, BAR_DONE, BAR_TODO};
use edge_sample::display::sim::SimScreen;
use edge_sample::display::{Layout, Parts, Rotation, Scene, Screen};
use edge_sample::image::Pixels;
use embedded_graphics::mono_font::{ascii::FONT_6X10, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Baseline, Text};
use embedded_graphics_simulator::SimulatorDisplay;

use common::{fixture, read_rgb, run_ok};

/// A test card: a 2×2 grid of 28×28 tiles with distinct gradients, 1-pixel features and
/// a bright corner, so scaling, centring and orientation errors all show.
fn test_card() -> Pixels {
    let (w, h) = (60, 60);
    let mut data = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (tx, ty) = (x / 30, y / 30);
            let (u, v) = (x % 30, y % 30);
            let i = (y * w + x) * 3;
            if u < 28 && v < 28 {
                data[i] = (u * 9) as u8;
                data[i + 1] = (v * 9) as u8;
                data[i + 2] = (64 * (tx + 2 * ty) + 40) as u8;
                if u == 0 && v == 0 {
                    data[i..i + 3].copy_from_slice(&[255, 255, 255]);
                }
            }
        }
    }
    Pixels {
        width: w,
        height: h,
        channels: 3,
        data,
    }
}

fn render(
    size: Size,
    rotation: Rotation,
    caption: Option<&str>,
    progress: Option<f32>,
) -> (Layout, Pixels) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = SimScreen::new(dir.path().join("s.png"), size, rotation).unwrap();
    let card = test_card();
    let layout = Layout::new(
        s.size(),
        Size::new(card.width as u32, card.height as u32),
        caption.is_some(),
        progress.is_some(),
    );
    let scene = Scene {
        image: Some(&card),
        caption,
        progress,
    };
    s.draw(&layout, &scene, Parts::ALL).unwrap();
    (layout, s.pixels())
}

fn px(p: &Pixels, x: usize, y: usize) -> [u8; 3] {
    let i = (y * p.width + x) * 3;
    [p.data[i], p.data[i + 1], p.data[i + 2]]
}

/// Compares with tests/fixtures/display/NAME.png. With EDGE_SAMPLE_BLESS set the file is
/// rewritten from `got` and the test FAILS (a blessing run never passes a comparison with
/// what it just wrote); tests/fixtures/display/bless.sh then reruns the tests without it.
fn golden(name: &str, got: &Pixels) {
    let path = fixture(&format!("display/{name}.png"));
    if std::env::var_os("EDGE_SAMPLE_BLESS").is_some() {
        edge_sample::image::write_png(&path, got, &[]).unwrap();
        panic!(
            "{name}: EDGE_SAMPLE_BLESS is set: rewrote {}; look at it, then rerun without \
             EDGE_SAMPLE_BLESS to compare",
            path.display()
        );
    }
    let (w, h, want) = read_rgb(&path);
    assert_eq!((w, h), (got.width, got.height), "{name}: size");
    let diff = want.iter().zip(&got.data).filter(|(a, b)| a != b).count();
    assert_eq!(
        diff,
        0,
        "{name}: {diff} bytes differ from {}",
        path.display()
    );
}

/// The test card on a `w`×`h` screen with nothing else on it, placed by the test's own
/// arithmetic (the layout's documented rule: the largest integer factor k that fits, every
/// source pixel a k×k block, centred, black around), without edge-sample's drawing code.
fn card_on_screen(w: usize, h: usize) -> Pixels {
    let card = test_card();
    let k = (w / card.width).min(h / card.height);
    assert!(k >= 1, "the reference covers integer scales only");
    let (x0, y0) = ((w - k * card.width) / 2, (h - k * card.height) / 2);
    let mut data = vec![0u8; w * h * 3];
    for y in 0..k * card.height {
        for x in 0..k * card.width {
            let s = ((y / k) * card.width + x / k) * 3;
            let d = ((y0 + y) * w + x0 + x) * 3;
            data[d..d + 3].copy_from_slice(&card.data[s..s + 3]);
        }
    }
    Pixels {
        width: w,
        height: h,
        channels: 3,
        data,
    }
}

/// Rows `y0..y0 + h` of a picture, as pixels.
fn rows(p: &Pixels, y0: usize, h: usize) -> Vec<[u8; 3]> {
    (y0..y0 + h)
        .flat_map(|y| (0..p.width).map(move |x| (x, y)))
        .map(|(x, y)| px(p, x, y))
        .collect()
}

/// Caption line height and the font's cell (the layout's documented 12-row line, 6×10 font).
const CAPTION_ROWS: usize = 12;
const CELL: (usize, usize) = (6, 10);

/// A `w`×12 caption line as embedded-graphics' own font renderer draws `text`: a
/// `MonoTextStyle` of FONT_6X10 in white on a fresh black SimulatorDisplay, centred
/// horizontally ((w − 6·len)/2, 0 when it overflows) and vertically ((12 − 10)/2 = 1 row down).
fn caption_reference(text: &str, w: usize) -> Vec<[u8; 3]> {
    let mut d = SimulatorDisplay::<Rgb888>::new(Size::new(w as u32, CAPTION_ROWS as u32));
    let x = w.saturating_sub(CELL.0 * text.len()) / 2;
    let y = (CAPTION_ROWS - CELL.1) / 2;
    Text::with_baseline(
        text,
        Point::new(x as i32, y as i32),
        MonoTextStyle::new(&FONT_6X10, Rgb888::WHITE),
        Baseline::Top,
    )
    .draw(&mut d)
    .unwrap();
    (0..CAPTION_ROWS)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| {
            let c = d.get_pixel(Point::new(x as i32, y as i32));
            [c.r(), c.g(), c.b()]
        })
        .collect()
}

/// Reads the caption line at rows `y0..y0 + 12` of `p` back as text: every 6×10 cell is
/// matched against the printable ASCII glyphs embedded-graphics renders, for every text length
/// whose centring puts cells on a whole-glyph grid, and a reading counts only when the
/// independent render of the text read equals the whole line pixel for pixel. Blank cells
/// around the text read the same at every length, so the reading without leading or trailing
/// spaces is the text; exactly one must be left.
fn read_caption(p: &Pixels, y0: usize) -> String {
    let w = p.width;
    let line = rows(p, y0, CAPTION_ROWS);
    let line_ref = &line;
    let glyph = |c: char| caption_reference(&c.to_string(), CELL.0);
    let glyphs: Vec<(char, Vec<[u8; 3]>)> = (' '..='~').map(|c| (c, glyph(c))).collect();
    let cell = |x0: usize| -> Vec<[u8; 3]> {
        (0..CAPTION_ROWS)
            .flat_map(|y| (x0..x0 + CELL.0).map(move |x| line_ref[y * w + x]))
            .collect()
    };
    let mut readings = vec![];
    for len in 1..=w / CELL.0 {
        let x0 = (w - CELL.0 * len) / 2;
        let text: Option<String> = (0..len)
            .map(|i| {
                let c = cell(x0 + CELL.0 * i);
                glyphs.iter().find(|(_, g)| *g == c).map(|(ch, _)| *ch)
            })
            .collect();
        if let Some(text) = text.filter(|t| t.trim() == t) {
            if caption_reference(&text, w) == line {
                readings.push(text);
            }
        }
    }
    assert_eq!(readings.len(), 1, "caption readings: {readings:?}");
    readings.pop().unwrap()
}

#[test]
fn image_is_integer_scaled_and_centred() {
    let (layout, got) = render(Size::new(240, 240), Rotation::R0, None, None);
    assert_eq!(layout.fit, Fit::Integer(4));
    let card = test_card();
    let r = layout.image;
    assert_eq!(
        r,
        embedded_graphics::primitives::Rectangle::new(Point::zero(), Size::new(240, 240))
    );
    same_pixels(&got, &card_on_screen(240, 240), "240×240");
    for y in 0..240 {
        for x in 0..240 {
            let want = if r.contains(Point::new(x as i32, y as i32)) {
                let (sx, sy) = (
                    (x - r.top_left.x as usize) / 4,
                    (y - r.top_left.y as usize) / 4,
                );
                let i = (sy * card.width + sx) * 3;
                [card.data[i], card.data[i + 1], card.data[i + 2]]
            } else {
                [0, 0, 0]
            };
            assert_eq!(px(&got, x, y), want, "({x}, {y})");
        }
    }
    golden("card-240x240", &got);
}

#[test]
fn caption_and_progress_bar() {
    let (layout, got) = render(
        Size::new(320, 240),
        Rotation::R0,
        Some("dpmpp-2m, 20 steps, seed 42, 0.41 s"),
        Some(0.25),
    );
    // 240 − 4 (bar) − 1 − 12 (caption) = 223 rows: 3× (180 px), centred.
    assert_eq!(layout.fit, Fit::Integer(3));
    assert_eq!(layout.image.top_left, Point::new(70, 21));
    let bar = layout.bar.unwrap();
    let y = bar.top_left.y as usize;
    let done = (0..320)
        .filter(|&x| px(&got, x, y) == [BAR_DONE.r(), BAR_DONE.g(), BAR_DONE.b()])
        .count();
    let todo = (0..320)
        .filter(|&x| px(&got, x, y) == [BAR_TODO.r(), BAR_TODO.g(), BAR_TODO.b()])
        .count();
    assert_eq!((done, todo), (80, 240));
    // The caption line sits on rows 223..235 and is, pixel for pixel, the text as
    // embedded-graphics' font renderer draws it (independent of edge-sample's caption code).
    let text = "dpmpp-2m, 20 steps, seed 42, 0.41 s";
    let cap = layout.caption.unwrap();
    assert_eq!(
        cap,
        embedded_graphics::primitives::Rectangle::new(Point::new(0, 223), Size::new(320, 12))
    );
    let line = rows(&got, 223, CAPTION_ROWS);
    let want = caption_reference(text, 320);
    let diff = line.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        diff, 0,
        "{diff} caption pixels differ from the font's own render"
    );
    assert!(
        want.iter().filter(|&&c| c == [255, 255, 255]).count() > 200,
        "the reference caption has text pixels"
    );
    assert_eq!(read_caption(&got, 223), text);
    // The rows between the image and the caption, and the gap above the bar, stay black.
    for y in (21 + 180)..223 {
        assert!(rows(&got, y, 1).iter().all(|&c| c == [0, 0, 0]), "row {y}");
    }
    assert!(
        rows(&got, 235, 1).iter().all(|&c| c == [0, 0, 0]),
        "gap row 235"
    );
    golden("card-320x240-caption", &got);
}

/// A picture turned clockwise by `quarter` quarter turns, by index arithmetic: a quarter turn
/// of a W×H picture is the H×W picture with out(H−1−y, x) = in(x, y).
fn turned(p: &Pixels, quarter: u32) -> Pixels {
    let mut p = Pixels {
        width: p.width,
        height: p.height,
        channels: 3,
        data: p.data.clone(),
    };
    for _ in 0..quarter {
        let (w, h) = (p.width, p.height);
        let mut data = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let (ox, oy) = (h - 1 - y, x);
                let (s, d) = ((y * w + x) * 3, (oy * h + ox) * 3);
                data[d..d + 3].copy_from_slice(&p.data[s..s + 3]);
            }
        }
        p = Pixels {
            width: h,
            height: w,
            channels: 3,
            data,
        };
    }
    p
}

fn same_pixels(got: &Pixels, want: &Pixels, what: &str) {
    assert_eq!(
        (got.width, got.height),
        (want.width, want.height),
        "{what}: size"
    );
    for y in 0..got.height {
        for x in 0..got.width {
            assert_eq!(px(got, x, y), px(want, x, y), "{what} at ({x}, {y})");
        }
    }
}

#[test]
fn rotation_turns_the_picture_clockwise() {
    // The unrotated 128×64 picture, placed by the test (1×, at (34, 2)), then turned by the
    // test: each rotated panel must be exactly that.
    let reference = card_on_screen(128, 64);
    let (_, r0) = render(Size::new(128, 64), Rotation::R0, None, None);
    let (_, r90) = render(Size::new(64, 128), Rotation::R90, None, None);
    let (_, r180) = render(Size::new(128, 64), Rotation::R180, None, None);
    let (_, r270) = render(Size::new(64, 128), Rotation::R270, None, None);
    same_pixels(&r0, &reference, "0°");
    // The panel of r90 is 64 wide, 128 tall; its logical screen is 128×64 like r0's.
    assert_eq!((r90.width, r90.height), (64, 128));
    same_pixels(&r90, &turned(&reference, 1), "90°");
    same_pixels(&r180, &turned(&reference, 2), "180°");
    same_pixels(&r270, &turned(&reference, 3), "270°");
    // Clockwise: the card's bright top-left pixel (at (34, 2) unrotated) lands top right.
    assert_eq!(px(&r90, 63 - 2, 34), [255, 255, 255]);
    golden("card-64x128-rot90", &r90);
}

#[test]
fn smaller_screen_shrinks_the_picture() {
    let (layout, got) = render(Size::new(48, 32), Rotation::R0, None, None);
    assert_eq!(layout.fit, Fit::Shrunk);
    assert_eq!(layout.image.size, Size::new(32, 32));
    // Nearest-neighbour: every drawn pixel is a colour of the card.
    let card = test_card();
    let colours: std::collections::HashSet<[u8; 3]> =
        card.data.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
    for y in 0..32 {
        for x in 8..40 {
            assert!(colours.contains(&px(&got, x, y)), "({x}, {y})");
        }
    }
}

/// A PNG read back: width, height, RGB bytes.
type Rgb = (usize, usize, Vec<u8>);

/// Runs the binary on a simulated screen and returns (screen, grid written by the same run).
fn run_on_screen(dir: &Path, extra: &[&str]) -> (Rgb, Rgb) {
    let mut args = vec![
        "--num", "4", "--seed", "7", "--steps", "8", "-o", "grid.png", "--scale", "1", "-j", "2",
    ];
    args.extend_from_slice(extra);
    run_ok(dir, &args);
    (
        read_rgb(&dir.join("screen.png")),
        read_rgb(&dir.join("grid.png")),
    )
}

#[test]
fn screen_shows_the_images_the_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ((sw, sh, screen), (gw, gh, grid)) = run_on_screen(
        dir.path(),
        &[
            "--display",
            "png:screen.png",
            "--screen",
            "240x240",
            "--caption",
        ],
    );
    assert_eq!((sw, sh), (240, 240));
    // 4 digits of 28 px with 2-px gaps: 62×62, 3× on 240 − 17 rows → 186 px, centred.
    assert_eq!((gw, gh), (62, 62));
    let (k, x0, y0) = (3, (240 - 186) / 2, (223 - 186) / 2);
    for y in 0..186 {
        for x in 0..186 {
            let s = ((y0 + y) * sw + x0 + x) * 3;
            let g = ((y / k) * gw + x / k) * 3;
            assert_eq!(
                screen[s..s + 3],
                grid[g..g + 3],
                "screen ({}, {})",
                x0 + x,
                y0 + y
            );
        }
    }
    // The caption names the sampler, steps, seed and time: read back from the screen's
    // caption line (rows 223..235) glyph by glyph against embedded-graphics' own font, and
    // the whole line equal to the font's render of the text read.
    let caption = read_caption(
        &Pixels {
            width: sw,
            height: sh,
            channels: 3,
            data: screen.clone(),
        },
        223,
    );
    let secs = caption
        .strip_prefix("dpmpp-2m, 8 steps, seed 7, ")
        .and_then(|r| r.strip_suffix(" s"))
        .unwrap_or_else(|| panic!("caption '{caption}'"));
    let (int, frac) = secs.split_once('.').expect("seconds with two decimals");
    assert!(
        !int.is_empty()
            && frac.len() == 2
            && int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()),
        "caption '{caption}'"
    );
    let o = run_ok(
        dir.path(),
        &["--num", "1", "--display", "png:s1.png", "--quiet"],
    );
    assert!(o.stdout.is_empty(), "--quiet prints nothing");
}

// ---------------------------------------------------------------------------------------
// Framebuffer: a real X server's screen memory as the device.
// ---------------------------------------------------------------------------------------

struct Xvfb {
    child: Child,
    display: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Xvfb {
    fn start(display: u32, depth: u32) -> Xvfb {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("Xvfb")
            .args([
                &format!(":{display}"),
                "-screen",
                "0",
                &format!("320x240x{depth}"),
            ])
            .args([
                "-fbdir",
                dir.path().to_str().unwrap(),
                "-noreset",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is needed for the framebuffer tests (apt install xvfb x11-apps)");
        let file = dir.path().join("Xvfb_screen0");
        let t = Instant::now();
        while !(file.exists() && std::fs::metadata(&file).unwrap().len() > 320 * 240 * 2) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "Xvfb :{display} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The file exists before the server has painted its root window: wait until it takes
        // clients, or its first paint can land on top of what a test draws (seen under load).
        while !Command::new("xwd")
            .args(["-root", "-silent", "-display", &format!(":{display}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "Xvfb :{display} did not take clients"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Xvfb {
            child,
            display: format!(":{display}"),
            file,
            _dir: dir,
        }
    }

    /// The X server's root window as X clients see it, through `xwd`: (r, g, b) 8-bit per
    /// pixel, decoded from the XWD header's own masks (independent of edge-sample's reader).
    fn screenshot(&self) -> (usize, usize, Vec<[u8; 3]>) {
        let t = Instant::now();
        let out = loop {
            let o = Command::new("xwd")
                .args(["-root", "-silent", "-display", &self.display])
                .output()
                .expect("xwd is needed for the framebuffer tests (apt install x11-apps)");
            if o.status.success() {
                break o.stdout;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "xwd failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let f = |i: usize| u32::from_be_bytes(out[4 * i..4 * i + 4].try_into().unwrap());
        let (hsize, w, h, order, bpp, stride) = (
            f(0) as usize,
            f(4) as usize,
            f(5) as usize,
            f(7),
            f(11),
            f(12) as usize,
        );
        let masks = [f(14), f(15), f(16)];
        let ncolors = f(19) as usize;
        let base = hsize + 12 * ncolors;
        let mut px = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let o = base + y * stride + x * (bpp as usize / 8);
                let bytes = &out[o..o + bpp as usize / 8];
                let v = bytes.iter().enumerate().fold(0u32, |acc, (i, &b)| {
                    if order == 0 {
                        acc | (b as u32) << (8 * i)
                    } else {
                        (acc << 8) | b as u32
                    }
                });
                let ch = |m: u32| -> u8 {
                    let bits = m.count_ones();
                    let raw = (v & m) >> m.trailing_zeros();
                    // widen to 8 bits the way the sink narrowed (top bits kept)
                    (raw << (8 - bits)) as u8
                };
                px.push([ch(masks[0]), ch(masks[1]), ch(masks[2])]);
            }
        }
        (w, h, px)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn framebuffer_matches_simulator(display: u32, depth: u32, rotate: &str) {
    let x = Xvfb::start(display, depth);
    let dir = tempfile::tempdir().unwrap();
    let fb = format!("fb:{}", x.file.display());
    // One run's settings, drawn on the X framebuffer and on a simulated 320×240 screen.
    let run = |screen: &[&str]| {
        let mut args = vec![
            "--num", "4", "--seed", "11", "--steps", "6", "--rotate", rotate, "-q",
        ];
        args.extend_from_slice(screen);
        run_ok(dir.path(), &args);
    };
    run(&["--display", &fb]);
    let (w, h, got) = x.screenshot();
    assert_eq!((w, h), (320, 240));
    // The same run on a simulated 320×240 screen is the reference.
    run(&["--display", "png:sim.png", "--screen", "320x240"]);
    let (_, _, sim) = read_rgb(&dir.path().join("sim.png"));
    let bits: [u32; 3] = if depth == 16 { [5, 6, 5] } else { [8, 8, 8] };
    let mut lit = 0;
    for (i, g) in got.iter().enumerate() {
        let want: [u8; 3] =
            std::array::from_fn(|c| sim[3 * i + c] >> (8 - bits[c]) << (8 - bits[c]));
        assert_eq!(*g, want, "pixel ({}, {}) at depth {depth}", i % w, i / w);
        lit += (g != &[0, 0, 0]) as usize;
    }
    assert!(
        lit > 2000,
        "the picture is on the X screen ({lit} lit pixels)"
    );
}

#[test]
fn framebuffer_16bpp_on_xvfb() {
    framebuffer_matches_simulator(71, 16, "0");
}

#[test]
fn framebuffer_32bpp_on_xvfb_rotated() {
    framebuffer_matches_simulator(72, 24, "90");
}

#[test]
fn framebuffer_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_in(dir.path(), &["--display", "fb:/nonexistent/fb9", "-q"]);
    common::assert_fails(&o, 2, "/nonexistent/fb9 does not exist");
    // A regular file that is no XWD screen is refused, not scribbled on.
    std::fs::write(dir.path().join("plain"), vec![1u8; 4096]).unwrap();
    let o = common::run_in(dir.path(), &["--display", "fb:plain", "-q"]);
    common::assert_fails(&o, 2, "not a framebuffer device and not an XWD");
    assert_eq!(
        std::fs::read(dir.path().join("plain")).unwrap(),
        vec![1u8; 4096]
    );
    assert!(
        !dir.path().join("edge-sample.png").exists(),
        "nothing written on a failed start"
    );
}
