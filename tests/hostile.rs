//! Hostile and careless input through the real binary: outputs that would replace inputs,
//! each other or special files, links planted where output goes. Each case must fail with one
//! line naming the problem (exit 2, no panic) and leave every file as it was; or, where the
//! request is legitimate, succeed without touching anything else.
mod common;

use std::path::Path;

use common::*;

/// `args` + a fast run's flags, expected to fail naming `needle`, with `guarded` unchanged.
fn refused(dir: &Path, args: &[&str], needle: &str, guarded: &[&Path]) {
    let before: Vec<Option<Vec<u8>>> = guarded.iter().map(|p| std::fs::read(p).ok()).collect();
    let mut all = args.to_vec();
    all.push("-q");
    for (flag, value) in [("-n", "1"), ("--steps", "2"), ("--display", "none")] {
        if !args.contains(&flag) {
            all.extend([flag, value]);
        }
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

// ---- Models that declare more than they hold -------------------------------------------
// Each is crafted here as an ONNX protobuf: a denoiser-shaped graph (image x, timestep t,
// output of x's shape) plus the hostile part.

use prost::Message;
use tract_onnx::pb;

fn value_info(name: &str, elem: i32, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_{}", outputs.join("_")),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// `out = x` (+ the extra nodes and initializers), x of `dims`, t an int64 of shape [1].
fn onnx(dims: &[i64], init: Vec<pb::TensorProto>, extra: Vec<pb::NodeProto>) -> Vec<u8> {
    const FLOAT: i32 = 1;
    const INT64: i32 = 7;
    let mut nodes = extra;
    nodes.push(node("Identity", &["x"], &["out"]));
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "hostile".into(),
            node: nodes,
            initializer: init,
            input: vec![value_info("x", FLOAT, dims), value_info("t", INT64, &[1])],
            output: vec![value_info("out", FLOAT, dims)],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn tensor(name: &str, data_type: i32, dims: &[i64], raw: &[u8]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        data_type,
        dims: dims.to_vec(),
        raw_data: raw.to_vec(),
        ..Default::default()
    }
}

/// `model` (from [`onnx`]) with its output made to depend on the float tensor `name`:
/// `out = x + 0 · ReduceMax(name)`, so that the loader cannot drop `name` as read by nothing.
fn feeding_the_output(model: &[u8], name: &str) -> Vec<u8> {
    let mut m = pb::ModelProto::decode(model).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.initializer
        .push(tensor("zero_", 1, &[], &0f32.to_le_bytes()));
    let mut max = node("ReduceMax", &[name], &["max_"]);
    max.attribute.push(pb::AttributeProto {
        name: "keepdims".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 0,
        ..Default::default()
    });
    let identity = g.node.pop().unwrap();
    g.node.extend([
        max,
        node("Mul", &["max_", "zero_"], &["nothing_"]),
        node(
            "Add",
            &["x", "nothing_"],
            &identity
                .output
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        ),
    ]);
    m.encode_to_vec()
}

/// Runs the main job on `bytes` as a model file; expects one line naming `needle`, exit 2.
fn refused_model(name: &str, bytes: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), bytes).unwrap();
    let o = run_in(
        dir.path(),
        &[
            "-m",
            name,
            "-q",
            "-n",
            "1",
            "--steps",
            "2",
            "--display",
            "none",
        ],
    );
    assert_fails(&o, 2, needle);
    assert!(!dir.path().join("edge-sample.png").exists());
    no_temp_files(dir.path());
}

#[test]
fn the_crafted_model_itself_samples() {
    // The base graph of the cases below is a valid (if useless) denoiser: what they refuse is
    // their hostile part, not the frame. With a 4 GB Range that nothing reads, it still loads:
    // the loader drops dead nodes before tract would fold them (under the peak limit below).
    for bytes in [
        onnx(&[1, 1, 8, 8], vec![], vec![]),
        onnx(
            &[1, 1, 8, 8],
            ["a", "b", "d"]
                .iter()
                .zip([0f32, 1e9, 1.0])
                .map(|(n, v)| tensor(n, 1, &[], &v.to_le_bytes()))
                .collect(),
            vec![node("Range", &["a", "b", "d"], &["r"])],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), bytes).unwrap();
        samples(dir.path());
    }
    assert_children_peak_below(PEAK_RSS_LIMIT_KIB);
}

/// Runs the main job on `dir`/m.onnx: one image, two steps; expects success.
fn samples(dir: &std::path::Path) {
    run_ok(
        dir,
        &[
            "-m",
            "m.onnx",
            "-q",
            "-n",
            "1",
            "--steps",
            "2",
            "--display",
            "none",
        ],
    );
}

#[test]
fn models_declaring_huge_tensors_are_refused_before_allocating() {
    // The image input: 10¹⁰ and 2.7·10⁸ elements (an abort at 40 GB, a panic at 3.1 GB before).
    refused_model(
        "huge.onnx",
        &onnx(&[1, 1, 100_000, 100_000], vec![], vec![]),
        "the image input",
    );
    refused_model(
        "big.onnx",
        &onnx(&[1, 1, 16_384, 16_384], vec![], vec![]),
        "at most 67108864",
    );
    // ConstantOfShape building 10¹⁰ floats from an 16-byte shape tensor.
    let shape = tensor(
        "s",
        7,
        &[2],
        &[100_000i64, 100_000].map(i64::to_le_bytes).concat(),
    );
    refused_model(
        "cos.onnx",
        &onnx(
            &[1, 1, 8, 8],
            vec![shape],
            vec![node("ConstantOfShape", &["s"], &["c"])],
        ),
        "ConstantOfShape node",
    );
    // An initializer whose dims claim 10¹² floats but holds 4 bytes.
    let lie = tensor("w", 1, &[1_000_000, 1_000_000], &[0; 4]);
    refused_model(
        "lie.onnx",
        &onnx(&[1, 1, 8, 8], vec![lie], vec![]),
        "tensor 'w'",
    );
    let short = tensor("w", 1, &[4, 4], &[0; 60]);
    refused_model(
        "short.onnx",
        &onnx(&[1, 1, 8, 8], vec![short], vec![]),
        "60 bytes of data, expected 64",
    );
    assert_children_peak_below(PEAK_RSS_LIMIT_KIB);
}

/// The issue's bound: any input file under 1 MB stays under 256 MB of memory.
const PEAK_RSS_LIMIT_KIB: i64 = 256 * 1024;

/// The largest peak RSS of any child this test process has waited for (every run of the
/// binary so far, by any test of this file), in KiB.
#[cfg(unix)]
fn assert_children_peak_below(kib: i64) {
    // SAFETY: getrusage writes one rusage struct into the zeroed value it is given.
    let peak = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut u), 0);
        u.ru_maxrss
    };
    eprintln!("largest child peak RSS: {peak} KiB");
    assert!(peak < kib, "a run peaked at {peak} KiB (limit {kib} KiB)");
}

#[test]
fn models_that_build_huge_constants_or_activations_are_refused() {
    // Range(0, 10⁹, 1) and Tile of 1 000 floats × 10⁶: 4 GB folded from a few bytes while the
    // model loads (the heap ceiling of a load, 192 MiB + 8 × the file).
    let f = |name: &str, v: f32| tensor(name, 1, &[], &v.to_le_bytes());
    // (Each feeds the output: the loader drops nodes nothing reads before tract folds them.)
    refused_model(
        "range.onnx",
        &feeding_the_output(
            &onnx(
                &[1, 1, 8, 8],
                vec![f("a", 0.0), f("b", 1e9), f("d", 1.0)],
                vec![node("Range", &["a", "b", "d"], &["r"])],
            ),
            "r",
        ),
        "loading this model takes more than 192 MiB of memory",
    );
    let w = tensor("w", 1, &[1000], &[0u8; 4000]);
    let reps = tensor("k", 7, &[1], &1_000_000i64.to_le_bytes());
    refused_model(
        "tile.onnx",
        &feeding_the_output(
            &onnx(
                &[1, 1, 8, 8],
                vec![w, reps],
                vec![node("Tile", &["w", "k"], &["r"])],
            ),
            "r",
        ),
        "loading this model takes more than",
    );
    // A Resize inside the graph making 8×8 into 80 000²: 6.4·10⁹ floats on every call.
    let scales = tensor(
        "sc",
        1,
        &[4],
        &[1f32, 1.0, 10_000.0, 10_000.0]
            .map(f32::to_le_bytes)
            .concat(),
    );
    let empty = tensor("roi", 1, &[0], &[]);
    let mut resize = node("Resize", &["x", "roi", "sc"], &["y"]);
    resize.name = "grow".into();
    let shrink_scales = tensor(
        "sc2",
        1,
        &[4],
        &[1f32, 1.0, 1e-4, 1e-4].map(f32::to_le_bytes).concat(),
    );
    let mut bytes_model = pb::ModelProto::decode(
        onnx(
            &[1, 1, 8, 8],
            vec![scales, empty, shrink_scales],
            vec![resize, node("Resize", &["y", "roi", "sc2"], &["z"])],
        )
        .as_slice(),
    )
    .unwrap();
    // out = z (the 80 000² activation lies between the input and the output).
    let g = bytes_model.graph.as_mut().unwrap();
    g.node.last_mut().unwrap().input[0] = "z".into();
    refused_model(
        "resize.onnx",
        &bytes_model.encode_to_vec(),
        "node 'grow' (output 0, shape [1, 1, 80000, 80000]) declares 6400000000 elements",
    );
    assert_children_peak_below(PEAK_RSS_LIMIT_KIB);
}

#[test]
fn models_with_tensors_tract_cannot_decode_are_refused() {
    // A STRING initializer in raw_data: tract-onnx panicked ("not implemented: FIXME, raw
    // tensor loading").
    let s = tensor("s", 8, &[1], b"abcd");
    refused_model(
        "string.onnx",
        &onnx(&[1, 1, 8, 8], vec![s], vec![]),
        "String",
    );
}

#[test]
fn a_graph_of_millions_of_nodes_is_refused() {
    // 3·10⁶ empty nodes in 6 MB peaked at 4.3 GB; 100 001 nodes are enough to trip the limit.
    let nodes = (0..100_001).map(|_| pb::NodeProto::default()).collect();
    refused_model(
        "nodes.onnx",
        &onnx(&[1, 1, 8, 8], vec![], nodes),
        "nodes (at most 100000)",
    );
}

#[cfg(unix)]
#[test]
fn models_that_are_not_regular_files_are_refused_without_reading() {
    for dev in ["/dev/zero", "/dev/urandom"] {
        let o = run_in(
            Path::new("."),
            &[
                "-m",
                dev,
                "-q",
                "-n",
                "1",
                "--display",
                "none",
                "-o",
                "/tmp/never.png",
            ],
        );
        assert_fails(&o, 2, "not a regular file");
    }
    // A FIFO as the model or as its sidecar would block the read forever.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["fifo.onnx", "m.json"] {
        let c = std::ffi::CString::new(d.join(name).to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
    std::fs::write(d.join("m.onnx"), onnx(&[1, 1, 8, 8], vec![], vec![])).unwrap();
    let o = run_in(
        d,
        &["-m", "fifo.onnx", "-q", "-n", "1", "--display", "none"],
    );
    assert_fails(&o, 2, "not a regular file");
    let o = run_in(d, &["-m", "m.onnx", "-q", "-n", "1", "--display", "none"]);
    assert_fails(&o, 2, "sidecar");
}

/// A full disk during the writes: nothing of the run may appear (before, 16 complete PNGs were
/// left and the run exited 2). Needs a 16 KiB tmpfs, so root (as in CI); elsewhere it says so.
#[cfg(target_os = "linux")]
#[test]
fn a_disk_that_fills_during_the_writes_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(d)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root); CI runs it as root");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(d);
    std::fs::write(d.join("keep"), b"kept").unwrap();
    let o = run_in(
        d,
        &[
            "-q",
            "-n",
            "16",
            "--steps",
            "2",
            "--display",
            "none",
            "--scale",
            "4",
            "--out-dir",
            "each",
            "--save-npy",
            "s.npy",
            "-o",
            "grid.png",
        ],
    );
    assert_fails(&o, 2, "No space left on device");
    assert_eq!(std::fs::read(d.join("keep")).unwrap(), b"kept");
    for f in ["s.npy", "grid.png", "each/0000.png"] {
        assert!(!d.join(f).exists(), "{f} was left");
    }
    no_temp_files(d);
    no_temp_files(&d.join("each"));
}

#[test]
fn settings_that_made_silent_nan_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // --steps 1000 with DPM-Solver++ repeated a timestep: all-NaN samples, a black PNG, exit 0.
    for spacing in ["linspace", "leading"] {
        refused(
            d,
            &["--steps", "1000", "--spacing", spacing, "-o", "x.png"],
            "repeats timesteps of the model's 1000: at most 999 steps",
            &[],
        );
    }
    // Sidecar values that are not finite (1e39 is infinite as f32), of the wrong JSON type,
    // or an impossible β range.
    let (m, _) = model_in(d);
    for (json, needle) in [
        (
            r#"{"pixel_min": "NaN"}"#,
            "setting pixel_min = 'NaN' is invalid: not a finite number",
        ),
        (
            r#"{"pixel_max": 1e39}"#,
            "setting pixel_max = '1e+39' is invalid",
        ),
        (
            r#"{"beta_start": 1e-300}"#,
            "setting beta_start = '1e-300' is invalid",
        ),
        (r#"{"beta_end": 0.9999999}"#, "setting beta_end"),
        (
            r#"{"prediction_type": ["epsilon"]}"#,
            "setting prediction_type is an array",
        ),
    ] {
        std::fs::write(d.join("m.json"), json).unwrap();
        refused(d, &["-m", "m.onnx", "-o", "x.png"], needle, &[&m]);
    }
    assert!(!d.join("x.png").exists());
}

#[test]
fn init_noise_that_is_not_finite_or_lies_about_its_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut x = vec![0.5f32; 28 * 28];
    x[17] = f32::NAN;
    edge_sample::npy::write_f32(&d.join("nan.npy"), &[1, 1, 28, 28], &x).unwrap();
    refused(
        d,
        &["--init-noise", "nan.npy", "-o", "x.png"],
        "value 17 is NaN",
        &[],
    );
    // A header claiming 4e9 × 1 × 28 × 28 (12.5 TB) on a 3 KB file.
    let mut bytes = std::fs::read(d.join("nan.npy")).unwrap();
    let text =
        String::from_utf8_lossy(&bytes[10..10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize])
            .into_owned();
    let lie = text.replace("(1, 1, 28, 28)", "(4000000000, 1, 28, 28)");
    assert_eq!(lie.len(), text.len() + 9);
    let lie = lie.replacen("    ", "", 1).replacen("     ", "", 1);
    let lie = format!(
        "{}{}\n",
        lie.trim_end(),
        " ".repeat(text.len() - lie.trim_end().len() - 1)
    );
    assert_eq!(lie.len(), text.len());
    bytes.splice(10..10 + text.len(), lie.bytes());
    std::fs::write(d.join("lie.npy"), &bytes).unwrap();
    refused(
        d,
        &["--init-noise", "lie.npy", "-o", "x.png"],
        "needs 12544000000000 bytes of data",
        &[],
    );
    std::fs::write(d.join("junk.npy"), b"\x93NUMPY\x01\x00\x08\x00garbage!").unwrap();
    refused(
        d,
        &["--init-noise", "junk.npy", "-o", "x.png"],
        "not a valid .npy file",
        &[],
    );
}

// ---- Signals during the final writes ----------------------------------------------------

/// Files in `dir`: (finished outputs, temporary files).
fn outputs_and_temps(dir: &Path) -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let temps = names.iter().filter(|n| n.starts_with(".es-")).count();
    (names.len() - temps, temps)
}

/// SIGINT or SIGTERM that arrives while the output files are written (sent as soon as the
/// first temporary file appears): the run ends with 130 / 143, silently, and leaves none of its
/// files and no temporary file (all of them only if the signal came during the final renames).
/// Before: a `.out.png.tmp-PID` was left, and with a screen SIGTERM was ignored (exit 0) and a
/// second SIGINT killed the process mid-write.
#[cfg(unix)]
#[test]
fn signals_during_the_writes_leave_all_files_or_none() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    const NUM: usize = 48;
    let cases: [(&str, &[i32], bool, i32); 4] = [
        ("SIGINT", &[libc::SIGINT], false, 130),
        ("SIGTERM", &[libc::SIGTERM], false, 143),
        ("SIGTERM, screen", &[libc::SIGTERM], true, 143),
        (
            "two SIGINTs, screen",
            &[libc::SIGINT, libc::SIGINT],
            true,
            130,
        ),
    ];
    for (what, signals, screen, code) in cases {
        let mut during = 0;
        let mut outcomes = vec![];
        for _attempt in 0..6 {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let each = d.join("each");
            std::fs::create_dir(&each).unwrap();
            let n = NUM.to_string();
            let mut args = vec![
                "-q",
                "-n",
                &n,
                "--steps",
                "1",
                "--scale",
                "4",
                "--out-dir",
                "each",
                "--save-npy",
                "each/s.npy",
            ];
            if screen {
                std::fs::create_dir(d.join("scr")).unwrap();
                args.extend(["--display", "png:scr/screen.png"]);
            } else {
                args.extend(["--display", "none"]);
            }
            let mut child = binary()
                .args(&args)
                .current_dir(d)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn edge-sample");
            let deadline = Instant::now() + Duration::from_secs(600);
            let seen = loop {
                if outputs_and_temps(&each).1 > 0 {
                    break true;
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_micros(200));
            };
            if seen {
                for s in signals {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(child.id() as i32, *s) };
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let o = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            let (outputs, temps) = outputs_and_temps(&each);
            assert_eq!(temps, 0, "{what}: temporary files left");
            assert_eq!(outputs_and_temps(d).1, 0, "{what}: temporary files left");
            assert!(!err.contains("panicked"), "{what}: {err}");
            match o.status.code() {
                // Finished before the signal: every file.
                Some(0) => assert_eq!(outputs, NUM + 1, "{what}: exit 0 with missing files"),
                Some(c) if c == code => {
                    // Silent, as a shell's Ctrl-C is (the exit status says it).
                    assert!(err.trim().is_empty(), "{what}: {err}");
                    assert!(
                        outputs == 0 || outputs == NUM + 1,
                        "{what}: {outputs} of {} files left",
                        NUM + 1
                    );
                    if outputs == 0 {
                        during += 1;
                    }
                }
                other => panic!("{what}: exit {other:?} ({:?}): {err}", o.status),
            }
            outcomes.push((o.status.code(), outputs));
            if during > 0 {
                break;
            }
        }
        eprintln!("{what}: outcomes (exit, files) {outcomes:?}");
        assert!(
            during > 0,
            "{what}: no attempt was signalled during the writes: {outcomes:?}"
        );
    }
}

// ---- Inputs found by fuzzing ------------------------------------------------------------

/// Every input a fuzz target crashed on (fuzz/regressions/TARGET/, the artifact as found),
/// through the real binary as the user would give it: a model (`-m`), init noise
/// (`--init-noise`), a screen file (`--display fb:`). Each must end in one line and exit 2
/// (or succeed), never a panic.
#[test]
fn inputs_that_crashed_a_fuzz_target_are_refused_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (target, flag) in [
        ("model", "-m"),
        ("npy", "--init-noise"),
        ("xwd", "--display"),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let dir = tempfile::tempdir().unwrap();
            let copy = dir.path().join(e.file_name());
            std::fs::copy(e.path(), &copy).unwrap();
            let value = match target {
                "xwd" => format!("fb:{}", copy.display()),
                _ => copy.display().to_string(),
            };
            let o = run_in(dir.path(), &["-q", "-n", "1", "--steps", "2", flag, &value]);
            let err = String::from_utf8_lossy(&o.stderr);
            let what = e.path().display().to_string();
            assert!(!err.contains("panicked"), "{what}: {err}");
            assert!(
                matches!(o.status.code(), Some(0 | 2)),
                "{what}: {:?} {err}",
                o.status
            );
            assert!(err.trim_end().lines().count() <= 1, "{what}: {err}");
            eprintln!("{what}: exit {:?}: {}", o.status.code(), err.trim_end());
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no regression inputs under {}",
        root.display()
    );
}
