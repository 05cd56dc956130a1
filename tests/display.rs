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
use embedded_graphics::prelude::*;

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

/// Compares with tests/fixtures/display/NAME.png; EDGE_SAMPLE_BLESS=1 rewrites it
/// (tests/fixtures/display/bless.sh).
fn golden(name: &str, got: &Pixels) {
    let path = fixture(&format!("display/{name}.png"));
    if std::env::var_os("EDGE_SAMPLE_BLESS").is_some() {
        edge_sample::image::write_png(&path, got, &[]).unwrap();
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
    // The caption line has white text pixels and nothing else but black.
    let cap = layout.caption.unwrap();
    let mut white = 0;
    for y in cap.top_left.y as usize..(cap.top_left.y as u32 + cap.size.height) as usize {
        for x in 0..320 {
            match px(&got, x, y) {
                [255, 255, 255] => white += 1,
                [0, 0, 0] => {}
                other => panic!("caption pixel ({x}, {y}) is {other:?}"),
            }
        }
    }
    assert!(white > 200, "caption drawn ({white} white pixels)");
    golden("card-320x240-caption", &got);
}

#[test]
fn rotation_turns_the_picture_clockwise() {
    let (_, r0) = render(Size::new(128, 64), Rotation::R0, None, None);
    let (_, r90) = render(Size::new(64, 128), Rotation::R90, None, None);
    let (_, r180) = render(Size::new(128, 64), Rotation::R180, None, None);
    // The panel of r90 is 64 wide, 128 tall; its logical screen is 128×64 like r0's.
    assert_eq!((r90.width, r90.height), (64, 128));
    for y in 0..64 {
        for x in 0..128 {
            assert_eq!(px(&r90, 63 - y, x), px(&r0, x, y), "90° at ({x}, {y})");
            assert_eq!(
                px(&r180, 127 - x, 63 - y),
                px(&r0, x, y),
                "180° at ({x}, {y})"
            );
        }
    }
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
        "--num", "4", "--seed", "7", "--steps", "8", "-o", "grid.png", "-j", "2",
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
    // The caption names the sampler, steps and seed.
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
