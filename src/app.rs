//! The commands behind the CLI: sample (the main job), info, bench, models, boards, frame.
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::boards;
use crate::denoiser::tract::cpu_has_fp16;
use crate::denoiser::{Engine, LoadOptions, Model, ModelSource, Precision};
use crate::error::{Error, Result};
use crate::image::{encode_png, grid, upscale, write_png, Pixels, GRID_PAD};
use crate::output;
use crate::pipeline::{generate, img2img_start, Samples};
use crate::plan::{BenchPlan, FramePlan, ModelPlan, Plan, SamplePlan};
use crate::show::{self, Opened, View};
use crate::{budget, models, npy, settings};

/// Runs a checked plan.
pub fn run(plan: &Plan) -> Result<()> {
    match plan {
        Plan::Sample(p) => sample(p),
        Plan::Frame(p) => frame(p),
        Plan::Bench(p) => bench(p),
        Plan::Info { model, precision } => info(model, *precision),
        Plan::Models => list_models(),
        Plan::Samplers => list_samplers(),
        Plan::Boards => list_boards(),
    }
}

fn load(m: &ModelPlan) -> Result<Model> {
    let source = models::resolve(m.model.as_deref())?;
    if m.precision == Precision::F16 && !cpu_has_fp16() {
        eprintln!(
            "edge-sample: warning: this CPU has no FP16 arithmetic (FEAT_FP16): --precision f16 \
             runs emulated, tens to hundreds of times slower than f32 (--precision auto picks \
             the fast path)"
        );
    }
    load_within_ceiling(
        &source,
        &LoadOptions {
            batch: m.batch,
            precision: m.precision,
            kernels: settings::kernels(),
            conv: settings::conv_algorithm(),
        },
    )
}

/// Loads a model under the heap ceiling of [`settings::load_memory`] (see [`budget`]).
fn load_within_ceiling(source: &ModelSource, opts: &LoadOptions) -> Result<Model> {
    let file_bytes = match source {
        ModelSource::Path(p) => std::fs::metadata(p).map_or(0, |m| m.len() as usize),
        ModelSource::Embedded { bytes, .. } => bytes.len(),
    };
    let limit = settings::load_memory(file_bytes);
    let _ceiling = budget::Ceiling::arm(
        limit,
        &format!(
            "{}: loading this model takes more than {} MiB of memory, the limit for a file of \
             {file_bytes} bytes (EDGE_SAMPLE_LOAD_MEMORY_MB={} raises it)",
            source.display(),
            limit >> 20,
            (limit >> 20) * 2
        ),
    );
    Model::load(source, opts)
}

/// The screen the plan asks for; with `--display auto`, a warning for each of the profile's
/// screens that is there but would not open.
fn open_screen(
    view: &show::ViewOptions,
    board: Option<&boards::Board>,
    quiet: bool,
) -> Result<Option<Box<dyn crate::display::Screen>>> {
    let Opened { screen, failures } = show::open_screen(view, board)?;
    if !quiet {
        for e in failures {
            eprintln!(
                "edge-sample: warning: {e}; not drawing on it (--display none silences this)"
            );
        }
    }
    Ok(screen)
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
pub fn sample(p: &SamplePlan) -> Result<()> {
    let cfg = p.sampler;
    // The screen is opened before the model loads, so wiring problems show at once.
    let screen = open_screen(&p.view, p.board.as_ref(), p.quiet)?;
    let stop = match screen {
        Some(_) => Some(show::stop_flag()?),
        None => None,
    };
    let model = load(&p.model)?;
    let spec = model.spec();
    let shape = spec.image_shape;
    let (job, notes) = p.job(&spec)?;
    if !p.quiet {
        for n in notes {
            eprintln!("note: {n}");
        }
    }
    let start = match &job.init_image {
        Some(i) => img2img_start(cfg.steps, i.strength)?,
        None => 0,
    };
    let total = p.num.div_ceil(spec.batch) * (cfg.steps - start);
    let progress = Progress::new(total, p.quiet);
    let view = View {
        options: &p.view,
        sampler: cfg.kind.name(),
        steps: cfg.steps,
        quiet: p.quiet,
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
    let samples = &shown.samples;

    let params = job.parameters(&spec);
    let (file_scale, sheet_scale) = p.scales(shape);
    let scaled = |k: usize| -> Vec<Pixels> { shown.images.iter().map(|i| upscale(i, k)).collect() };
    // Every file is written under a temporary name and renamed into place only when all are
    // complete; SIGINT/SIGTERM meanwhile are held until then (or the files are removed).
    let deferred = output::Deferred::new()?;
    show::disarm_second_interrupt();
    // With a screen, a signal that came after the sampling ended but before `Deferred` took
    // over only raised `stop`: it ends the run before anything is written.
    if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
        return Err(Error::Interrupted);
    }
    let mut staged = output::Staged::new();
    let mut written = vec![];
    if let Some(path) = &p.save_npy {
        npy::stage_f32(
            &mut staged,
            path,
            &[p.num, shape[0], shape[1], shape[2]],
            &samples.data,
        )?;
        written.push(path.display().to_string());
    }
    if let Some(d) = &p.out_dir {
        for (k, img) in scaled(file_scale).iter().enumerate() {
            let text = [("parameters", format!("{params}, image: {k}"))];
            staged.write(&d.join(format!("{k:04}.png")), |w| {
                encode_png(w, img, &text)
            })?;
        }
        written.push(format!("{}/NNNN.png", d.display()));
    }
    if let Some(path) = &p.grid {
        let sheet = grid(&scaled(sheet_scale), GRID_PAD * sheet_scale);
        let text = [("parameters", params.clone())];
        staged.write(path, |w| encode_png(w, &sheet, &text))?;
        written.push(path.display().to_string());
    }
    deferred.finish(staged)?;
    if !p.quiet {
        println!(
            "{} → {}",
            summary(samples, p.num, spec.batch),
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
pub fn frame(p: &FramePlan) -> Result<()> {
    let cfg = p.sampler;
    let mut screen = open_screen(&p.view, p.board.as_ref(), p.quiet)?;
    p.check_screen(screen.is_some())?;
    let stop = show::stop_flag()?;
    let model = load(&p.model)?;
    let spec = model.spec();
    p.check_model(&spec)?;
    let view = View {
        options: &p.view,
        sampler: cfg.kind.name(),
        steps: cfg.steps,
        quiet: true,
    };
    if !p.quiet {
        if let Some(s) = &screen {
            eprintln!("edge-sample frame: showing on {}", s.describe());
        }
    }
    let mut layout = None;
    let mut shown_count = 0u64;
    while p.count.is_none_or(|c| shown_count < c) {
        let t0 = Instant::now();
        let job = p.job(shown_count);
        let total = p.num.div_ceil(spec.batch) * cfg.steps;
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
        if let Some(path) = &p.output {
            // The same parameters as the main job writes.
            write_png(
                path,
                &grid(&shown.images, GRID_PAD),
                &[("parameters", job.parameters(&spec))],
            )?;
        }
        shown_count += 1;
        if !p.quiet {
            eprintln!(
                "edge-sample frame: picture {shown_count}, seed {}, {:.2} s",
                job.seed,
                shown.samples.elapsed.as_secs_f64()
            );
        }
        if p.count.is_some_and(|c| shown_count >= c) {
            break;
        }
        if show::sleep_unless(&stop, p.interval.saturating_sub(t0.elapsed())) {
            break;
        }
    }
    if let (true, Some(s), Some(l)) = (p.clear_on_exit, screen.as_mut(), layout.as_ref()) {
        show::clear(&mut **s, l)?;
    }
    if !p.quiet {
        eprintln!(
            "edge-sample frame: stopped after {}",
            plural(shown_count as usize, "picture")
        );
    }
    Ok(())
}

/// `n` and `word`, plural unless `n` is 1.
fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn summary(s: &Samples, num: usize, batch: usize) -> String {
    let secs = s.elapsed.as_secs_f64();
    let calls = num.div_ceil(batch) * s.steps_run;
    let steps = if s.sampler_steps == s.steps_run {
        plural(s.steps_run, "step")
    } else {
        format!(
            "{} ({})",
            plural(s.sampler_steps, "step"),
            plural(s.steps_run, "network call")
        )
    };
    format!(
        "{}, {steps} in {secs:.2} s: {:.2} ms per network call, {:.1} images/s",
        plural(num, "image"),
        secs * 1e3 / calls as f64,
        num as f64 / secs
    )
}

/// Peak resident memory of this process in KiB (Linux VmHWM), if known.
pub fn peak_rss_kib() -> Option<u64> {
    proc_status_kib("VmHWM:")
}

/// One KiB figure of /proc/self/status (Linux), if known.
fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn info(model: &str, precision: Precision) -> Result<()> {
    let source = models::resolve(Some(model))?;
    let before = proc_status_kib("VmRSS:");
    let m = load_within_ceiling(
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
    if let (Some(before), Some(after), Some(peak)) =
        (before, proc_status_kib("VmRSS:"), proc_status_kib("VmHWM:"))
    {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let winograd = if m.winograd_convs > 0 {
            " (Winograd layers keep their weights transformed, up to 4× their size: \
             EDGE_SAMPLE_CONV=direct for the least memory)"
        } else {
            ""
        };
        println!(
            "memory:       loading took {:.1} MiB resident ({:.1} MiB at its peak), batch 1, \
             the program code it ran included{winograd}",
            mib(after.saturating_sub(before)),
            mib(peak.saturating_sub(before)),
        );
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

/// `edge-sample samplers`: one block per sampler.
pub fn list_samplers() -> Result<()> {
    use crate::sampler::SamplerKind;
    for k in SamplerKind::ALL {
        let mut options = vec![format!("--spacing (default {})", k.default_spacing())];
        if k.takes_sigmas() {
            options.push("--sigmas".into());
        }
        match k {
            SamplerKind::Ddpm => options.extend(["--variance".into(), "--no-clip".into()]),
            SamplerKind::Ddim => options.extend(["--eta".into(), "--no-clip".into()]),
            _ => {}
        }
        let calls = match k {
            SamplerKind::Heun => "2·steps − 1 network calls",
            _ => "1 network call per step",
        };
        let noise = match k {
            SamplerKind::Ddim => "deterministic at --eta 0, draws noise above",
            _ if k.stochastic(0.0) => "draws noise",
            _ => "deterministic",
        };
        println!(
            "{:<9} diffusers {}; {calls}, {noise}",
            k.name(),
            k.diffusers()
        );
        println!("{:<9} also: {}", "", k.aliases().join(", "));
        println!("{:<9} options: {}", "", options.join(", "));
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn bench(a: &BenchPlan) -> Result<()> {
    let cfg = a.sampler;
    let model = load(&a.model)?;
    a.check_model(&model.spec())?;
    let threads = a.model.threads;
    let job = a.job();
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
        "model {} ({}, compute {}, kernels {}), batch {}, {}, {} × {} ({}), {}",
        model.info.name,
        model.source,
        model.compute,
        model.kernels,
        model.batch,
        plural(threads, "thread"),
        plural(a.num, "image"),
        plural(cfg.steps, "step"),
        cfg.kind,
        plural(a.runs, "run")
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
    if let Some(nodes) = a.profile {
        // As the pipeline splits threads: workers for batches, the rest inside each call.
        let workers = threads.clamp(1, a.num.div_ceil(model.batch));
        profile(&model, threads / workers, a.runs * 10, nodes)?;
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
