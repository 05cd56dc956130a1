//! The photo frame, board profiles and screen errors, through the real binary.
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{binary, read_rgb, run_in as run, run_ok};

/// Asserts that a `w`×`h` screen (RGB bytes) shows `picture` as the layout rules place it,
/// worked out here: a bar of min(4, h/8) rows at the bottom and a blank row above it, the
/// picture scaled by the largest integer factor k that fits the rows left, centred, every
/// picture pixel a k×k block, black around it.
fn assert_shows(screen: &(usize, usize, Vec<u8>), picture: &(usize, usize, Vec<u8>)) {
    let (w, h, s) = screen;
    let (pw, ph, p) = picture;
    let area = h - (h / 8).clamp(1, 4) - 1;
    let k = (w / pw).min(area / ph);
    assert!(k >= 1, "the picture fits");
    let (x0, y0) = ((w - k * pw) / 2, (area - k * ph) / 2);
    for y in 0..area {
        for x in 0..*w {
            let got = &s[(y * w + x) * 3..][..3];
            let inside = (x0..x0 + k * pw).contains(&x) && (y0..y0 + k * ph).contains(&y);
            let want = if inside {
                let i = ((y - y0) / k * pw + (x - x0) / k) * 3;
                &p[i..i + 3]
            } else {
                &[0u8; 3][..]
            };
            assert_eq!(got, want, "screen pixel ({x}, {y}), {k}× at ({x0}, {y0})");
        }
    }
    assert!(p.iter().any(|&v| v > 0), "the picture is not black");
}

/// A usage or screen error: exit 2, one line naming `needle`.
fn assert_fails(o: &Output, needle: &str) {
    common::assert_fails(o, 2, needle)
}

#[test]
fn frame_shows_a_new_seed_each_picture() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_ok(
        dir.path(),
        &[
            "frame",
            "--display",
            "png:screen.png",
            "--screen",
            "96x96",
            "--count",
            "2",
            "--interval",
            "0s",
            "--seed",
            "5",
            "--steps",
            "4",
            "-o",
            "latest.png",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("picture 1, seed 5") && err.contains("picture 2, seed 6"),
        "{err}"
    );
    // The last picture is the main job's image for seed 6.
    run_ok(
        dir.path(),
        &[
            "--num", "1", "--seed", "6", "--steps", "4", "-o", "ref.png", "--scale", "1", "-q",
        ],
    );
    assert_eq!(
        read_rgb(&dir.path().join("latest.png")),
        read_rgb(&dir.path().join("ref.png"))
    );
    let screen = read_rgb(&dir.path().join("screen.png"));
    assert_eq!((screen.0, screen.1), (96, 96));
    assert_shows(&screen, &read_rgb(&dir.path().join("ref.png")));
}

/// The boot unit's command line (boards/edge-sample-frame.service), run with a simulated screen
/// and no wait: what reaches the journal is one line per picture, plus where it shows and why it
/// stopped.
#[test]
fn the_boot_unit_logs_one_line_per_picture() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/edge-sample-frame.service"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= line");
    let mut words = exec.split_whitespace().skip(1).peekable();
    let mut args = vec![];
    while let Some(w) = words.next() {
        assert!(
            w != "--quiet" && w != "-q",
            "the unit silences the journal: {exec}"
        );
        match w {
            "--interval" => {
                words.next();
            }
            _ => args.push(w.to_string()),
        }
    }
    assert_eq!(args.first().map(String::as_str), Some("frame"), "{exec}");
    let dir = tempfile::tempdir().unwrap();
    #[rustfmt::skip]
    args.extend(
        ["--interval", "0s", "--count", "2", "--seed", "3", "--steps", "2",
         "--display", "png:screen.png", "--screen", "96x96"].map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run_ok(dir.path(), &args);
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let pictures: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("edge-sample frame: picture "))
        .collect();
    assert_eq!(pictures.len(), 2, "{err}");
    assert!(
        pictures[0].starts_with("edge-sample frame: picture 1, seed 3, "),
        "{err}"
    );
    assert_eq!(lines.len(), 4, "showing on, two pictures, stopped: {err}");
    assert_eq!(
        lines[3], "edge-sample frame: stopped after 2 pictures",
        "{err}"
    );
}

/// Starts a frame that waits an hour between pictures, waits for its first picture, sends
/// `signal`, and returns its exit status, stderr and the screen.
fn stop_frame(signal: i32, on_exit: &str) -> (Option<i32>, String, (usize, usize, Vec<u8>)) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = binary()
        .args([
            "frame",
            "--display",
            "png:screen.png",
            "--screen",
            "64x64",
            "--interval",
            "1h",
            "--seed",
            "1",
            "--steps",
            "4",
            "--on-exit",
            on_exit,
        ])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = vec![];
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("first picture within 2 min");
        let first = line.contains("picture 1,");
        lines.push(line);
        if first {
            break;
        }
    }
    // SAFETY: plain kill(2) on our child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = child.wait().unwrap();
    lines.extend(rx.iter());
    let screen = read_rgb(&dir.path().join("screen.png"));
    (status.code(), lines.join("\n"), screen)
}

#[test]
fn frame_clears_the_screen_on_sigterm() {
    let (code, err, screen) = stop_frame(libc::SIGTERM, "clear");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.lines().any(|l| l.ends_with("stopped after 1 picture")),
        "{err}"
    );
    assert_eq!((screen.0, screen.1), (64, 64));
    assert!(screen.2.iter().all(|&v| v == 0), "screen cleared");
}

#[test]
fn frame_keeps_the_last_picture_on_sigint() {
    let (code, err, screen) = stop_frame(libc::SIGINT, "keep");
    assert_eq!(code, Some(0), "{err}");
    // The picture kept is the main job's image for the frame's first seed.
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        dir.path(),
        &[
            "--num", "1", "--seed", "1", "--steps", "4", "-o", "ref.png", "--scale", "1", "-q",
        ],
    );
    assert_shows(&screen, &read_rgb(&dir.path().join("ref.png")));
}

#[test]
fn frame_needs_somewhere_to_show() {
    let dir = tempfile::tempdir().unwrap();
    assert_fails(
        &run(dir.path(), &["frame", "--display", "none"]),
        "no screen to show pictures on",
    );
    assert_fails(
        &run(dir.path(), &["frame", "--interval", "5x"]),
        "invalid duration unit 'x'",
    );
}

#[test]
fn boards_are_listed_and_detected() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_ok(dir.path(), &["boards"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for name in [
        "pi-zero-2w",
        "pi3",
        "pi4",
        "pi5",
        "jetson-nano",
        "jetson-orin-nano",
    ] {
        assert!(out.contains(name), "{name} in {out}");
    }
    let model = dir.path().join("model");
    std::fs::write(&model, b"Raspberry Pi 4 Model B Rev 1.4\0").unwrap();
    let o = binary()
        .arg("boards")
        .env("EDGE_SAMPLE_DT_MODEL", &model)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().find(|l| l.starts_with("pi4 ")).unwrap();
    assert!(line.contains("this board"), "{out}");
    // On a Pi 4 without its screens attached, auto draws nothing and the run still succeeds.
    let o = binary()
        .args(["--num", "2", "--steps", "2"])
        .env("EDGE_SAMPLE_DT_MODEL", &model)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stderr.is_empty() || !String::from_utf8_lossy(&o.stderr).contains("warning"));
    assert!(dir.path().join("edge-sample.png").exists());
}

#[test]
fn screen_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    assert_fails(
        &run(dir.path(), &["--board", "pi9"]),
        "unknown board 'pi9' (valid: auto, none, pi-zero-2w",
    );
    assert_fails(
        &run(dir.path(), &["--display", "hdmi"]),
        "unknown display 'hdmi'",
    );
    assert_fails(
        &run(
            dir.path(),
            &["--display", "st7789:dc=25,device=/dev/spidev7.7"],
        ),
        "/dev/spidev7.7 does not exist (enable SPI",
    );
    assert_fails(
        &run(dir.path(), &["--display", "ssd1306:device=/dev/i2c-77"]),
        "/dev/i2c-77 does not exist (enable I2C",
    );
    assert_fails(
        &run(dir.path(), &["--board", "pi4", "--display", "ili9341"]),
        "ili9341: no DC pin",
    );
    assert_fails(
        &run(dir.path(), &["--rotate", "45"]),
        "unknown rotation '45' (valid: 0, 90, 180, 270)",
    );
    assert_fails(
        &run(dir.path(), &["--display", "png:s.png", "--screen", "0x5"]),
        "invalid screen size '0x5'",
    );
    assert!(
        !dir.path().join("edge-sample.png").exists(),
        "no output from failed runs"
    );
    // A screen smaller than the picture is a note, not a failure.
    let o = run_ok(
        dir.path(),
        &[
            "--display",
            "png:s.png",
            "--screen",
            "48x48",
            "--steps",
            "2",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the 48x48 screen is smaller than the 122x122 picture of 16 images"),
        "{err}"
    );
}
