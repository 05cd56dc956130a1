//! The commands behind the CLI: sample (the main job), info, bench, models, boards, frame.
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::boards;
use crate::cli::{BenchArgs, FrameArgs, ModelArgs, OnExit, SampleArgs, SamplerArgs};
use crate::denoiser::tract::cpu_has_fp16;
use crate::denoiser::{LoadOptions, Model, Precision};
use crate::error::{Error, Result};
use crate::fsutil::check_writable;
use crate::image::{grid, load_image, to_pixels, upscale, write_png, Pixels};
use crate::pipeline::{generate, InitImage, Job, Samples};
use crate::sampler::SamplerConfig;
use crate::show::{self, View};
use crate::{models, npy, settings};

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn sampler_config(a: &SamplerArgs) -> Result<SamplerConfig> {
    if !(a.eta >= 0.0 && a.eta.is_finite()) {
        return Err(Error::usage(format!("--eta must be >= 0, found {}", a.eta)));
    }
    if a.steps == 0 {
        return Err(Error::usage("--steps must be at least 1, found 0"));
    }
    Ok(SamplerConfig {
        kind: a.sampler,
        steps: a.steps,
        eta: a.eta,
        spacing: a.spacing,
        variance: a.variance,
        clip: !a.no_clip,
        ..Default::default()
    })
}

/// `--precision auto` takes the board profile's precision, but f16 only where the CPU has
/// FEAT_FP16: without it tract's f16 arithmetic is emulated (30× the instructions of f32
/// measured under qemu), so a misdetected board stays on f32.
fn with_board(m: &ModelArgs, board: Option<&boards::Board>) -> ModelArgs {
    let mut m = m.clone();
    if let (Precision::Auto, Some(b)) = (m.precision, board) {
        let p = b.precision();
        if p != Precision::F16 || cpu_has_fp16() {
            m.precision = p;
        }
    }
    m
}

fn load(m: &ModelArgs) -> Result<Model> {
    if m.batch == 0 {
        return Err(Error::usage("--batch must be at least 1"));
    }
    if m.threads == Some(0) {
        return Err(Error::usage("--threads must be at least 1"));
    }
    let source = models::resolve(m.model.as_deref())?;
    Model::load(
        &source,
        &LoadOptions {
            batch: m.batch,
            precision: m.precision,
            kernels: settings::kernels(),
            conv: settings::conv_algorithm(),
        },
    )
}

/// A progress bar on stderr, drawn only on a terminal, at most every 100 ms.
pub(crate) struct Progress {
    total: usize,
    done: AtomicUsize,
    last: Mutex<Instant>,
    enabled: bool,
    start: Instant,
}

impl Progress {
    pub(crate) fn new(total: usize, quiet: bool) -> Progress {
        Progress {
            total,
            done: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
            enabled: !quiet && std::io::stderr().is_terminal(),
            start: Instant::now(),
        }
    }
    pub(crate) fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.enabled {
            return;
        }
        let mut last = self.last.lock().unwrap();
        if done < self.total && last.elapsed() < Duration::from_millis(100) {
            return;
        }
        *last = Instant::now();
        let width = 30;
        let filled = done * width / self.total.max(1);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {done}/{} steps {:.1} s",
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.total,
            self.start.elapsed().as_secs_f64()
        );
        if done >= self.total {
            let _ = write!(err, "\r{}\r", " ".repeat(width + 40));
        }
        let _ = err.flush();
    }
}

/// The main job.
pub fn sample(a: &SampleArgs) -> Result<()> {
    let cfg = sampler_config(&a.sampler)?;
    if a.num == 0 {
        return Err(Error::usage("--num must be at least 1"));
    }
    if a.scale == 0 || a.scale > 64 {
        return Err(Error::usage(format!(
            "--scale must be in 1..=64, found {}",
            a.scale
        )));
    }
    let grid_path = match (&a.output, &a.out_dir) {
        (Some(p), _) => Some(p.clone()),
        (None, None) => Some("edge-sample.png".into()),
        (None, Some(_)) => None,
    };
    // Outputs are checked before the model loads, so a typo costs nothing.
    if let Some(p) = &grid_path {
        check_writable(p)?;
    }
    if let Some(p) = &a.save_npy {
        check_writable(p)?;
    }
    if let Some(d) = &a.out_dir {
        std::fs::create_dir_all(d).map_err(|e| Error::output(d, e))?;
        check_writable(&d.join("0000.png"))?;
    }
    let board = boards::resolve(&a.display.board)?;
    // The screen is opened before the model loads, so wiring problems show at once.
    let screen = show::open_screen(&a.display, board.as_ref(), a.quiet)?;
    let stop = match screen {
        Some(_) => Some(show::stop_flag()?),
        None => None,
    };
    let model = load(&with_board(&a.model, board.as_ref()))?;
    cfg.validate(model.info.schedule.num_train_timesteps)?;
    let shape = model.io.image_shape;
    let chw: usize = shape.iter().product();
    let init_noise = match &a.init_noise {
        Some(p) => {
            let (s, v) = npy::read_f32(p)?;
            let want = [a.num, shape[0], shape[1], shape[2]];
            if s != want {
                return Err(Error::input(format!(
                    "{}: shape {s:?}, expected {want:?} (--num × the model's C, H, W)",
                    p.display()
                )));
            }
            Some(v)
        }
        None => None,
    };
    let init_image = match &a.init_image {
        Some(p) => {
            let (x0, note) = load_image(p, shape, model.info.pixel_range)?;
            if let (Some(n), false) = (note, a.quiet) {
                eprintln!("note: {n}");
            }
            Some(InitImage {
                x0,
                strength: a.strength,
            })
        }
        None => None,
    };
    let threads = a.model.threads.unwrap_or_else(default_threads);
    let job = Job {
        sampler: cfg,
        seed: a.seed,
        num: a.num,
        threads,
        init_image,
        init_noise,
    };
    let start = match &job.init_image {
        Some(i) => crate::pipeline::img2img_start(cfg.steps, i.strength)?,
        None => 0,
    };
    let total = a.num.div_ceil(model.batch) * (cfg.steps - start);
    let progress = Progress::new(total, a.quiet);
    let view = View {
        display: &a.display,
        sampler: cfg.kind.name(),
        steps: cfg.steps,
        quiet: a.quiet,
    };
    let shown = show::run(
        &model,
        &job,
        screen,
        &view,
        &|| progress.tick(),
        stop.as_deref(),
        total,
    )?;
    let samples = shown.samples;

    let params = parameters(&model, &cfg, a);
    let images: Vec<Pixels> = samples
        .data
        .chunks(chw)
        .map(|x| upscale(&to_pixels(x, shape, model.info.pixel_range), a.scale))
        .collect();
    let mut written = vec![];
    if let Some(p) = &a.save_npy {
        npy::write_f32(p, &[a.num, shape[0], shape[1], shape[2]], &samples.data)?;
        written.push(p.display().to_string());
    }
    if let Some(d) = &a.out_dir {
        for (k, img) in images.iter().enumerate() {
            let p = d.join(format!("{k:04}.png"));
            write_png(&p, img, &[("parameters", format!("{params}, image: {k}"))])?;
        }
        written.push(format!("{}/NNNN.png", d.display()));
    }
    if let Some(p) = &grid_path {
        write_png(
            p,
            &grid(&images, 2 * a.scale),
            &[("parameters", params.clone())],
        )?;
        written.push(p.display().to_string());
    }
    if !a.quiet {
        println!(
            "{} → {}",
            summary(&samples, a.num, model.batch),
            written.join(", ")
        );
        if let (Some(s), Some(st)) = (&shown.screen, shown.stats) {
            println!(
                "screen: {}, {} frames drawn in {:.1} ms on the display thread",
                s.describe(),
                st.frames,
                st.time.as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}

/// `edge-sample boards`.
pub fn list_boards() -> Result<()> {
    let here = boards::detect()?;
    for b in boards::all()? {
        let mark = if here.as_ref().is_some_and(|h| h.name == b.name) {
            "  ← this board"
        } else {
            ""
        };
        println!(
            "{:<17} {} — {} cores {}, {}, precision {}{mark}",
            b.name,
            b.title,
            b.cores,
            b.cpu,
            b.target,
            b.precision()
        );
        for s in &b.screens {
            println!("{:<17}   screen: {}", "", s.describe());
        }
    }
    if here.is_none() {
        println!("(this machine matches no profile: --display auto draws nothing here)");
    }
    Ok(())
}

/// `edge-sample frame`: a new picture every interval until SIGINT/SIGTERM (or --count).
pub fn frame(f: &FrameArgs) -> Result<()> {
    let cfg = sampler_config(&f.sampler)?;
    if f.num == 0 {
        return Err(Error::usage("--num must be at least 1"));
    }
    if let Some(p) = &f.output {
        check_writable(p)?;
    }
    let board = boards::resolve(&f.display.board)?;
    let mut screen = show::open_screen(&f.display, board.as_ref(), f.quiet)?;
    if screen.is_none() && f.output.is_none() {
        return Err(Error::usage(
            "frame: no screen to show pictures on (--display auto found none):              give --display SPEC (e.g. png:frame.png, fb, st7789) or --output PNG",
        ));
    }
    let stop = show::stop_flag()?;
    let model = load(&with_board(&f.model, board.as_ref()))?;
    cfg.validate(model.info.schedule.num_train_timesteps)?;
    let shape = model.io.image_shape;
    let chw: usize = shape.iter().product();
    let first_seed = f.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let threads = f.model.threads.unwrap_or_else(default_threads);
    let view = View {
        display: &f.display,
        sampler: cfg.kind.name(),
        steps: cfg.steps,
        quiet: true,
    };
    if !f.quiet {
        if let Some(s) = &screen {
            eprintln!("edge-sample frame: showing on {}", s.describe());
        }
    }
    let mut layout = None;
    let mut shown_count = 0u64;
    while f.count.is_none_or(|c| shown_count < c) {
        let t0 = Instant::now();
        let seed = first_seed.wrapping_add(shown_count);
        let job = Job {
            sampler: cfg,
            seed,
            num: f.num,
            threads,
            init_image: None,
            init_noise: None,
        };
        let total = f.num.div_ceil(model.batch) * cfg.steps;
        let shown = match show::run(
            &model,
            &job,
            screen.take(),
            &view,
            &|| {},
            Some(&stop),
            total,
        ) {
            Err(Error::Interrupted) => break,
            other => other?,
        };
        screen = shown.screen;
        layout = shown.layout.or(layout);
        if let Some(p) = &f.output {
            let images: Vec<Pixels> = shown
                .samples
                .data
                .chunks(chw)
                .map(|x| to_pixels(x, shape, model.info.pixel_range))
                .collect();
            let params = format!(
                "model: {}, sampler: {}, steps: {}, seed: {seed}, edge-sample {}",
                model.info.name,
                cfg.kind,
                cfg.steps,
                env!("CARGO_PKG_VERSION")
            );
            write_png(p, &grid(&images, 2), &[("parameters", params)])?;
        }
        shown_count += 1;
        if !f.quiet {
            eprintln!(
                "edge-sample frame: picture {shown_count}, seed {seed}, {:.2} s",
                shown.samples.elapsed.as_secs_f64()
            );
        }
        if f.count.is_some_and(|c| shown_count >= c) {
            break;
        }
        if show::sleep_unless(&stop, f.interval.saturating_sub(t0.elapsed())) {
            break;
        }
    }
    if let (OnExit::Clear, Some(s), Some(l)) = (f.on_exit, screen.as_mut(), layout.as_ref()) {
        show::clear(&mut **s, l)?;
    }
    if !f.quiet {
        eprintln!("edge-sample frame: stopped after {shown_count} pictures");
    }
    Ok(())
}

fn parameters(model: &Model, cfg: &SamplerConfig, a: &SampleArgs) -> String {
    let mut s = format!(
        "model: {}, sampler: {}, steps: {}, seed: {}, eta: {}, spacing: {}, clip: {}, prediction: {}",
        model.info.name,
        cfg.kind,
        cfg.steps,
        a.seed,
        cfg.eta,
        cfg.spacing(),
        cfg.clip,
        model.info.prediction.name()
    );
    if cfg.kind == crate::sampler::SamplerKind::Ddpm {
        s.push_str(&format!(", variance: {}", cfg.variance));
    }
    if a.init_image.is_some() {
        s.push_str(&format!(", strength: {}", a.strength));
    }
    s.push_str(&format!(", edge-sample {}", env!("CARGO_PKG_VERSION")));
    s
}

fn summary(s: &Samples, num: usize, batch: usize) -> String {
    let secs = s.elapsed.as_secs_f64();
    let calls = num.div_ceil(batch) * s.steps_run;
    format!(
        "{num} images, {} steps in {secs:.2} s: {:.2} ms/step, {:.1} images/s",
        s.steps_run,
        secs * 1e3 / calls as f64,
        num as f64 / secs
    )
}

/// Peak resident memory of this process in KiB (Linux VmHWM), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn info(model: &str, precision: Precision) -> Result<()> {
    let source = models::resolve(Some(model))?;
    let m = Model::load(
        &source,
        &LoadOptions {
            batch: 1,
            precision,
            kernels: settings::kernels(),
            conv: settings::conv_algorithm(),
        },
    )?;
    let i = &m.info;
    let io = &m.io;
    let src = |k: &str| i.sources.get(k).copied().unwrap_or("default");
    println!("model:        {} ({} bytes)", m.source, m.file_size);
    println!("name:         {} [{}]", i.name, src("name"));
    println!(
        "image input:  {} {} [{},{},{},{}]",
        io.image_input,
        io.image_type_name(),
        io.fixed_batch.map_or("N".to_string(), |b| b.to_string()),
        io.image_shape[0],
        io.image_shape[1],
        io.image_shape[2]
    );
    println!(
        "timestep:     {} {} {}",
        io.time_input,
        io.time_type_name(),
        io.time_shape
    );
    println!("output:       {}", io.output);
    println!(
        "schedule:     {} T={} beta {}..{} [{}]",
        i.schedule.beta_schedule,
        i.schedule.num_train_timesteps,
        i.schedule.beta_start,
        i.schedule.beta_end,
        src("beta_schedule")
    );
    println!(
        "prediction:   {} [{}]",
        i.prediction.name(),
        src("prediction_type")
    );
    println!("pixel range:  {}..{}", i.pixel_range.0, i.pixel_range.1);
    let weights = match (io.int8, io.fp16_weights) {
        (Some(q), _) => q,
        (None, true) => "fp16",
        (None, false) => "fp32",
    };
    println!("weights:      {weights}");
    println!(
        "compute:      {} (precision {precision}; CPU FEAT_FP16: {})",
        m.compute,
        if cpu_has_fp16() { "yes" } else { "no" }
    );
    println!("kernels:      {}", m.kernels);
    if !m.rewrites.is_empty() {
        println!("rewrites:     {}", m.rewrites.join("; "));
    }
    Ok(())
}

pub fn list_models() -> Result<()> {
    for b in models::BUNDLED {
        println!(
            "{:<8} {:>5.2} MB {}  {}",
            b.name,
            b.bytes.len() as f64 / 1e6,
            b.precision,
            b.description
        );
        println!("{:<8} quality at 20 steps: {}", "", b.quality);
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn bench(a: &BenchArgs) -> Result<()> {
    let cfg = sampler_config(&a.sampler)?;
    if a.num == 0 || a.runs == 0 {
        return Err(Error::usage("--num and --runs must be at least 1"));
    }
    let model = load(&a.model)?;
    let threads = a.model.threads.unwrap_or_else(default_threads);
    let job = Job {
        sampler: cfg,
        seed: 0,
        num: a.num,
        threads,
        init_image: None,
        init_noise: None,
    };
    generate(&model, &job, &|| {})?; // warm-up
    let mut step_times = vec![];
    let mut walls = vec![];
    for _ in 0..a.runs {
        let s = generate(&model, &job, &|| {})?;
        walls.push(s.elapsed);
        step_times.extend(s.step_times);
    }
    step_times.sort();
    walls.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "model {} ({}, compute {}, kernels {}), batch {}, {} threads, {} images × {} steps ({}), {} runs",
        model.info.name,
        model.source,
        model.compute,
        model.kernels,
        model.batch,
        threads,
        a.num,
        cfg.steps,
        cfg.kind,
        a.runs
    );
    println!(
        "denoiser call: median {:.3} ms, min {:.3} ms, max {:.3} ms ({} calls)",
        ms(percentile(&step_times, 0.5)),
        ms(step_times[0]),
        ms(*step_times.last().unwrap()),
        step_times.len()
    );
    let med = percentile(&walls, 0.5);
    println!(
        "run: median {:.1} ms, {:.1} images/s, {:.3} ms per image-step",
        ms(med),
        a.num as f64 / med.as_secs_f64(),
        ms(med) / (a.num * cfg.steps) as f64
    );
    if let Some(kib) = peak_rss_kib() {
        println!("peak memory: {:.1} MiB", kib as f64 / 1024.0);
    }
    if a.profile {
        // As the pipeline splits threads: workers for batches, the rest inside each call.
        let workers = threads.clamp(1, a.num.div_ceil(model.batch));
        profile(&model, threads / workers, a.runs * 10, a.profile_nodes)?;
    }
    Ok(())
}

/// Per-node and per-operator time of one denoiser call on seeded noise at t = T/2.
fn profile(model: &Model, threads: usize, calls: usize, list: usize) -> Result<()> {
    let mut den = model.denoiser_with_threads(threads)?;
    let chw: usize = model.io.image_shape.iter().product();
    let mut x = vec![0f32; model.batch * chw];
    crate::noise::NoiseStream::new(0, 0).fill(&mut x);
    let t = model.info.schedule.num_train_timesteps / 2;
    den.profile(&x, t, 2)?; // warm-up
    let nodes = den.profile(&x, t, calls.max(1))?;
    let total: Duration = nodes.iter().map(|n| n.time).sum();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "profile: {} nodes, {:.1} µs per call in nodes (batch {}, {threads} thread{}, {calls} calls)",
        nodes.len(),
        us(total),
        model.batch,
        if threads == 1 { "" } else { "s" }
    );
    let mut by_op: std::collections::BTreeMap<&str, (Duration, usize)> = Default::default();
    for n in &nodes {
        let e = by_op.entry(n.op.as_str()).or_default();
        e.0 += n.time;
        e.1 += 1;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by_key(|o| std::cmp::Reverse(o.1 .0));
    println!("  by operator:");
    for (op, (d, k)) in &ops {
        println!(
            "    {:<24} {:>4} nodes {:>9.1} µs {:>5.1} %",
            op,
            k,
            us(*d),
            100.0 * d.as_secs_f64() / total.as_secs_f64()
        );
    }
    println!("  costliest nodes:");
    for n in nodes.iter().take(list) {
        println!(
            "    {:>9.1} µs {:>5.1} %  {:<18} {}{}{}",
            us(n.time),
            100.0 * n.time.as_secs_f64() / total.as_secs_f64(),
            n.op,
            n.name,
            if n.info.is_empty() { "" } else { ": " },
            n.info
        );
    }
    Ok(())
}
