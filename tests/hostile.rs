//! Hostile and careless input through the real binary: outputs that would replace inputs,
//! each other or special files, links planted where output goes. Each case must fail with one
//! line naming the problem (exit 2, no panic) and leave every file as it was; or, where the
//! request is legitimate, succeed without touching anything else.
mod common;

use std::path::Path;

use common::*;

const FAST: [&str; 5] = ["-q", "-n", "1", "--steps", "2"];

/// `args` + a fast run's flags, expected to fail naming `needle`, with `guarded` unchanged.
fn refused(dir: &Path, args: &[&str], needle: &str, guarded: &[&Path]) {
    let before: Vec<Option<Vec<u8>>> = guarded.iter().map(|p| std::fs::read(p).ok()).collect();
    let mut all = args.to_vec();
    all.extend(FAST);
    if !args.contains(&"--display") {
        all.extend(["--display", "none"]);
    }
    let o = run_in(dir, &all);
    assert_fails(&o, 2, needle);
    for (p, b) in guarded.iter().zip(before) {
        assert_eq!(
            std::fs::read(p).ok(),
            b,
            "{} changed by {args:?}",
            p.display()
        );
    }
    no_temp_files(dir);
}

fn no_temp_files(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".es-") || n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// A copy of the digit fixture model (and a sidecar) in `dir`.
fn model_in(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let m = dir.join("m.onnx");
    std::fs::copy(fixture("models/sidecar.onnx"), &m).unwrap();
    let j = dir.join("m.json");
    std::fs::copy(fixture("models/sidecar.json"), &j).unwrap();
    (m, j)
}

#[test]
fn outputs_never_replace_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (m, j) = model_in(d);
    std::fs::copy(fixture("init_digit.png"), d.join("in.png")).unwrap();
    let guarded = [m.as_path(), j.as_path(), &d.join("in.png")];
    refused(
        d,
        &["-m", "m.onnx", "-o", "m.onnx"],
        "-o would replace the model (-m)",
        &guarded,
    );
    refused(
        d,
        &["-m", "m.onnx", "-o", "./m.onnx"],
        "the model (-m)",
        &guarded,
    );
    refused(
        d,
        &["-m", "m.onnx", "--save-npy", "m.onnx"],
        "--save-npy would replace the model",
        &guarded,
    );
    refused(
        d,
        &["-m", "m.onnx", "-o", "m.json"],
        "the model's sidecar",
        &guarded,
    );
    refused(
        d,
        &[
            "-m",
            "m.onnx",
            "--init-image",
            "in.png",
            "--strength",
            "0.5",
            "-o",
            "in.png",
        ],
        "--init-image",
        &guarded,
    );
    // The model is the first image --out-dir would write.
    std::fs::create_dir(d.join("out")).unwrap();
    std::fs::copy(&m, d.join("out/0000.png")).unwrap();
    refused(
        d,
        &["-m", "out/0000.png", "--out-dir", "out"],
        "--out-dir would replace the model",
        &[&d.join("out/0000.png")],
    );
}

#[test]
fn init_noise_is_not_overwritten_by_save_npy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let x = vec![0.5f32; 28 * 28];
    edge_sample::npy::write_f32(&d.join("x.npy"), &[1, 1, 28, 28], &x).unwrap();
    refused(
        d,
        &["--init-noise", "x.npy", "--save-npy", "x.npy"],
        "--save-npy would replace --init-noise",
        &[&d.join("x.npy")],
    );
}

#[test]
fn two_outputs_on_one_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    refused(
        d,
        &["--save-npy", "out.png", "-o", "out.png"],
        "name the same file",
        &[],
    );
    refused(
        d,
        &["--display", "png:out.png", "-o", "out.png"],
        "name the same file",
        &[],
    );
    assert!(!d.join("out.png").exists());
}

#[cfg(unix)]
#[test]
fn special_files_and_links_are_not_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    refused(d, &["-o", "/dev/null"], "not a regular file", &[]);
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    let fifo = d.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    refused(d, &["-o", "fifo"], "not a regular file", &[]);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    std::fs::write(d.join("victim"), b"precious").unwrap();
    std::os::unix::fs::symlink(d.join("victim"), d.join("link.png")).unwrap();
    refused(
        d,
        &["-o", "link.png"],
        "symbolic link",
        &[&d.join("victim")],
    );
    std::os::unix::fs::symlink("/proc/self/fd/1", d.join("stdout.png")).unwrap();
    refused(d, &["-o", "stdout.png"], "symbolic link", &[]);
    refused(d, &["-o", "."], "is a directory", &[]);
}

#[cfg(unix)]
#[test]
fn planted_links_at_old_temp_names_are_left_alone_and_long_names_work() {
    // The old writer used ".NAME.tmp-PID" with File::create (following links): a link planted
    // there emptied its target. Temporary names are now random and created exclusively.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("victim"), b"precious").unwrap();
    for pid in 1..64 {
        let _ = std::os::unix::fs::symlink(d.join("victim"), d.join(format!(".out.png.tmp-{pid}")));
    }
    run_ok(
        d,
        &[
            "-q",
            "-n",
            "1",
            "--steps",
            "2",
            "--display",
            "none",
            "-o",
            "out.png",
        ],
    );
    assert_eq!(std::fs::read(d.join("victim")).unwrap(), b"precious");
    let (w, _, _) = read_rgb(&d.join("out.png"));
    assert!(w > 0);
    // A 255-byte file name (the longest most filesystems take) is a fine output name.
    let long = format!("{}.png", "x".repeat(251));
    run_ok(
        d,
        &[
            "-q",
            "-n",
            "1",
            "--steps",
            "2",
            "--display",
            "none",
            "-o",
            &long,
        ],
    );
    assert!(d.join(&long).is_file());
    let left: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".es-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_run_writes_all_its_files_or_none() {
    // --save-npy, --out-dir and -o together: all appear; a refused run leaves none of them.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(
        d,
        &[
            "-q",
            "-n",
            "2",
            "--steps",
            "2",
            "--display",
            "none",
            "--save-npy",
            "s.npy",
            "--out-dir",
            "each",
            "-o",
            "grid.png",
        ],
    );
    for f in ["s.npy", "each/0000.png", "each/0001.png", "grid.png"] {
        assert!(d.join(f).is_file(), "{f} missing");
    }
    no_temp_files(d);
    no_temp_files(&d.join("each"));
}
