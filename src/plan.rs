//! The command line → one validated plan per command. Every check of what the user typed is
//! made here, once, in the flags' own words; the layers below (pipeline, samplers, screens)
//! take the plan's plain values and never name a flag. The checks that need the loaded model
//! (steps against its T, the shape of `--init-noise`) are here too, run right after it loads.
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::boards::{self, Board};
use crate::cli::{
    BenchArgs, Cli, Command, DisplayArgs, FrameArgs, ModelArgs, OnExit, SampleArgs, SamplerArgs,
};
use crate::denoiser::tract::cpu_has_fp16;
use crate::denoiser::{ModelSpec, Precision};
use crate::display::{DisplaySpec, Kind as ScreenKind};
use crate::error::{Error, Result};
use crate::image::{grid_width, load_image, GRID_PAD};
use crate::npy;
use crate::output::{self, check_writable, Named};
use crate::pipeline::{InitImage, Job};
use crate::sampler::SamplerConfig;
use crate::show::ViewOptions;

/// What one invocation does, every option checked.
#[derive(Debug)]
pub enum Plan {
    /// The main job: generate images and write them (and show them).
    Sample(Box<SamplePlan>),
    /// The photo frame.
    Frame(Box<FramePlan>),
    /// Time the denoiser.
    Bench(BenchPlan),
    /// Print what is detected in a model.
    Info { model: String, precision: Precision },
    /// List the bundled models.
    Models,
    /// List the samplers.
    Samplers,
    /// List the board profiles.
    Boards,
}

impl Plan {
    pub fn from_cli(cli: &Cli) -> Result<Plan> {
        Ok(match &cli.command {
            None => Plan::Sample(Box::new(SamplePlan::from_args(&cli.sample)?)),
            Some(Command::Info { model, precision }) => Plan::Info {
                model: model.clone(),
                precision: *precision,
            },
            Some(Command::Bench(b)) => Plan::Bench(BenchPlan::from_args(b)?),
            Some(Command::Models) => Plan::Models,
            Some(Command::Samplers) => Plan::Samplers,
            Some(Command::Boards) => Plan::Boards,
            Some(Command::Frame(f)) => Plan::Frame(Box::new(FramePlan::from_args(f)?)),
        })
    }
}

/// All the cores this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Which model, and how to run it.
#[derive(Clone, Debug)]
pub struct ModelPlan {
    /// A model file or a bundled model's name; `None`: the default bundled model.
    pub model: Option<String>,
    pub precision: Precision,
    /// Images per network call (≥ 1).
    pub batch: usize,
    /// Threads for the whole run (≥ 1).
    pub threads: usize,
}

impl ModelPlan {
    pub fn from_args(m: &ModelArgs) -> Result<ModelPlan> {
        if m.batch == 0 {
            return Err(Error::usage("--batch must be at least 1"));
        }
        if m.threads == Some(0) {
            return Err(Error::usage("--threads must be at least 1"));
        }
        if m.batch > MAX_BATCH {
            return Err(Error::usage(format!(
                "--batch must be at most {MAX_BATCH}, found {}",
                m.batch
            )));
        }
        let max_threads = MAX_THREADS_PER_CORE * default_threads();
        if m.threads.is_some_and(|t| t > max_threads) {
            return Err(Error::usage(format!(
                "--threads must be at most {max_threads} ({MAX_THREADS_PER_CORE} × this machine's {} cores), found {}",
                default_threads(),
                m.threads.unwrap_or(0)
            )));
        }
        Ok(ModelPlan {
            model: m.model.clone(),
            precision: m.precision,
            batch: m.batch,
            threads: m.threads.unwrap_or_else(default_threads),
        })
    }

    /// `--precision auto` takes the board profile's precision, but f16 only where the CPU has
    /// FEAT_FP16: without it tract's f16 arithmetic is emulated (30× the instructions of f32
    /// measured under qemu), so a misdetected board stays on f32.
    pub fn with_board(mut self, board: Option<&Board>) -> ModelPlan {
        if let (Precision::Auto, Some(b)) = (self.precision, board) {
            let p = b.precision();
            if p != Precision::F16 || cpu_has_fp16() {
                self.precision = p;
            }
        }
        self
    }
}

/// `--sampler`, `--steps`, `--eta`, … as far as they can be checked before the model loads.
pub fn sampler_config(a: &SamplerArgs) -> Result<SamplerConfig> {
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
        sigmas: a.sigmas,
        ..Default::default()
    })
}

/// Images per run: the samples of 65 536 digit-sized images are 200 MB.
pub const MAX_NUM: usize = 65_536;
/// Images per network call.
pub const MAX_BATCH: usize = 1024;
/// Threads beyond a few per core only add switching.
pub const MAX_THREADS_PER_CORE: usize = 4;
/// The samples a run keeps (num × C × H × W floats) and the pixels it writes (the grid at
/// `--scale`), in bytes: what a 512 MB board can hold with the model beside it.
pub const MAX_RUN_BYTES: u64 = 256 << 20;

fn check_num(num: usize) -> Result<()> {
    if num == 0 {
        return Err(Error::usage("--num must be at least 1"));
    }
    if num > MAX_NUM {
        return Err(Error::usage(format!(
            "--num must be at most {MAX_NUM}, found {num} (split the images over several runs)"
        )));
    }
    Ok(())
}

/// The contact sheet's default width at least: readable on a desktop screen.
pub const SHEET_MIN_WIDTH: usize = 480;

/// `--num` images of the model's C × H × W, kept as f32 and written upscaled by `--scale`.
fn check_memory(num: usize, scale: usize, [c, h, w]: [usize; 3]) -> Result<()> {
    let image = (c * h * w) as u64;
    let samples = num as u64 * image * 4;
    let pixels = num as u64 * image * (scale * scale) as u64;
    let need = samples.max(pixels);
    if need > MAX_RUN_BYTES {
        return Err(Error::usage(format!(
            "--num {num} images of {c}×{h}×{w} at --scale {scale} need {} MiB (at most {} MiB): \
             use fewer images or a smaller scale",
            need >> 20,
            MAX_RUN_BYTES >> 20
        )));
    }
    Ok(())
}

/// `--steps` against the loaded model's number of training timesteps.
pub fn check_steps(cfg: &SamplerConfig, spec: &ModelSpec) -> Result<()> {
    let t_max = spec.schedule.num_train_timesteps;
    if cfg.steps == 0 || cfg.steps > t_max {
        return Err(Error::usage(format!(
            "--steps must be between 1 and the model's {t_max} training timesteps, found {}",
            cfg.steps
        )));
    }
    // Timesteps the spacing repeats (named with the largest step count that has none).
    cfg.validate(t_max)
}

/// `--display`, `--screen`, `--rotate`, `--caption`, `--preview-every` as the screen layer
/// takes them.
pub fn view_options(d: &DisplayArgs) -> ViewOptions {
    ViewOptions {
        display: d.display.clone(),
        size: d.screen,
        rotation: d.rotate,
        caption: d.caption,
        preview_every: d.preview_every,
    }
}

/// `--strength` with `--steps`: diffusers' img2img runs `int(steps · strength)` of the steps.
fn check_strength(strength: f64, steps: usize) -> Result<()> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(Error::usage(format!(
            "--strength must be in (0, 1], found {strength}"
        )));
    }
    if ((steps as f64 * strength) as usize).min(steps) == 0 {
        return Err(Error::usage(format!(
            "--strength {strength} with {steps} steps runs no step: raise --strength or --steps"
        )));
    }
    Ok(())
}

/// The main job, checked.
#[derive(Debug)]
pub struct SamplePlan {
    /// The board profile's precision already applied.
    pub model: ModelPlan,
    pub sampler: SamplerConfig,
    pub seed: u64,
    /// Images (≥ 1).
    pub num: usize,
    /// `--scale`: upscaling of the written PNGs, 1..=64 (None: [`SamplePlan::scales`]' default).
    pub scale: Option<usize>,
    /// The contact sheet, writable.
    pub grid: Option<PathBuf>,
    /// The folder of one PNG per image, created.
    pub out_dir: Option<PathBuf>,
    /// The raw samples, writable.
    pub save_npy: Option<PathBuf>,
    /// x_T from a file (its shape is checked once the model is known).
    pub init_noise: Option<PathBuf>,
    /// img2img: the image and its strength (checked against the steps).
    pub init_image: Option<(PathBuf, f64)>,
    pub board: Option<Board>,
    pub view: ViewOptions,
    pub quiet: bool,
}

impl SamplePlan {
    pub fn from_args(a: &SampleArgs) -> Result<SamplePlan> {
        let sampler = sampler_config(&a.sampler)?;
        check_num(a.num)?;
        if let Some(k @ (0 | 65..)) = a.scale {
            return Err(Error::usage(format!(
                "--scale must be in 1..=64, found {k}"
            )));
        }
        if a.init_image.is_some() {
            check_strength(a.strength, sampler.steps)?;
        }
        let model = ModelPlan::from_args(&a.model)?;
        let grid = match (&a.output, &a.out_dir) {
            (Some(p), _) => Some(p.clone()),
            (None, None) => Some("edge-sample.png".into()),
            (None, Some(_)) => None,
        };
        let view = view_options(&a.display);
        // Outputs are checked before the model loads, so a typo costs nothing, and none may
        // replace an input, another output or anything but a regular file.
        if let Some(d) = &a.out_dir {
            std::fs::create_dir_all(d).map_err(|e| Error::output(d, e))?;
        }
        let out_files: Vec<PathBuf> = match &a.out_dir {
            Some(d) => out_dir_files(d, a.num)?,
            None => vec![],
        };
        let screen_png = screen_png(&view);
        let mut outputs = vec![];
        outputs.extend(grid.as_deref().map(|p| Named::new(p, "-o")));
        outputs.extend(a.save_npy.as_deref().map(|p| Named::new(p, "--save-npy")));
        outputs.extend(
            screen_png
                .as_deref()
                .map(|p| Named::new(p, "--display png:")),
        );
        outputs.extend(out_files.iter().map(|p| Named::new(p, "--out-dir")));
        let mut inputs = model_files(model.model.as_deref());
        inputs.extend(
            a.init_image
                .as_deref()
                .map(|p| Named::new(p, "--init-image")),
        );
        inputs.extend(
            a.init_noise
                .as_deref()
                .map(|p| Named::new(p, "--init-noise")),
        );
        output::check(&outputs, &inputs)?;
        if let Some(d) = &a.out_dir {
            check_writable(&d.join("0000.png"))?;
        }
        let board = boards::resolve(&a.display.board)?;
        Ok(SamplePlan {
            model: model.with_board(board.as_ref()),
            sampler,
            seed: a.seed,
            num: a.num,
            scale: a.scale,
            grid,
            out_dir: a.out_dir.clone(),
            save_npy: a.save_npy.clone(),
            init_noise: a.init_noise.clone(),
            init_image: a.init_image.clone().map(|p| (p, a.strength)),
            board,
            view,
            quiet: a.quiet,
        })
    }

    /// The upscaling of the `--out-dir` files and of the contact sheet for images of `[c, h, w]`:
    /// `--scale` for both, else raw files and a sheet at least [`SHEET_MIN_WIDTH`] wide.
    pub fn scales(&self, [_, _, w]: [usize; 3]) -> (usize, usize) {
        match self.scale {
            Some(k) => (k, k),
            None => {
                let width = grid_width(self.num, w, GRID_PAD);
                (1, SHEET_MIN_WIDTH.div_ceil(width).clamp(1, 64))
            }
        }
    }

    /// The job for the loaded model: `--steps` checked against its T, `--init-noise` read and
    /// its shape checked, `--init-image` read into model space. Also returns notes for the
    /// user (an init image resized).
    pub fn job(&self, spec: &ModelSpec) -> Result<(Job, Vec<String>)> {
        check_steps(&self.sampler, spec)?;
        let shape = spec.image_shape;
        let (files, sheet) = self.scales(shape);
        check_memory(self.num, files.max(sheet), shape)?;
        let init_noise = match &self.init_noise {
            Some(p) => {
                let want = [self.num, shape[0], shape[1], shape[2]];
                let v = npy::read_f32_shaped(p, &want, "--num × the model's C, H, W")?;
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::input(format!(
                        "{}: value {i} is {} (--init-noise must be finite)",
                        p.display(),
                        v[i]
                    )));
                }
                Some(v)
            }
            None => None,
        };
        let mut notes = vec![];
        let init_image = match &self.init_image {
            Some((p, strength)) => {
                let (x0, note) = load_image(p, shape, spec.pixel_range)?;
                notes.extend(note);
                Some(InitImage {
                    x0,
                    strength: *strength,
                })
            }
            None => None,
        };
        Ok((
            Job {
                sampler: self.sampler,
                seed: self.seed,
                num: self.num,
                threads: self.model.threads,
                init_image,
                init_noise,
            },
            notes,
        ))
    }
}

/// The photo frame, checked.
#[derive(Debug)]
pub struct FramePlan {
    /// The board profile's precision already applied.
    pub model: ModelPlan,
    pub sampler: SamplerConfig,
    pub board: Option<Board>,
    pub view: ViewOptions,
    /// From one picture to the next.
    pub interval: Duration,
    /// The first picture's seed (`--seed`, else the clock); picture k takes `first_seed + k`.
    pub first_seed: u64,
    /// Images per picture (≥ 1).
    pub num: usize,
    /// Each picture also saved here, writable.
    pub output: Option<PathBuf>,
    /// Stop after this many pictures.
    pub count: Option<u64>,
    /// Clear the screen when stopped (else keep the last picture).
    pub clear_on_exit: bool,
    pub quiet: bool,
}

impl FramePlan {
    pub fn from_args(f: &FrameArgs) -> Result<FramePlan> {
        let sampler = sampler_config(&f.sampler)?;
        check_num(f.num)?;
        let model = ModelPlan::from_args(&f.model)?;
        let view = view_options(&f.display);
        let screen_png = screen_png(&view);
        let mut outputs = vec![];
        outputs.extend(f.output.as_deref().map(|p| Named::new(p, "--output")));
        outputs.extend(
            screen_png
                .as_deref()
                .map(|p| Named::new(p, "--display png:")),
        );
        output::check(&outputs, &model_files(model.model.as_deref()))?;
        let board = boards::resolve(&f.display.board)?;
        let first_seed = f.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        Ok(FramePlan {
            model: model.with_board(board.as_ref()),
            sampler,
            board,
            view,
            interval: f.interval,
            first_seed,
            num: f.num,
            output: f.output.clone(),
            count: f.count,
            clear_on_exit: f.on_exit == OnExit::Clear,
            quiet: f.quiet,
        })
    }

    /// A frame with neither a screen (none asked for, or `auto` found none) nor `--output`
    /// would show nothing.
    pub fn check_screen(&self, has_screen: bool) -> Result<()> {
        if !has_screen && self.output.is_none() {
            return Err(Error::usage(
                "frame: no screen to show pictures on (--display auto found none): give \
                 --display SPEC (e.g. png:frame.png, fb, st7789) or --output PNG",
            ));
        }
        Ok(())
    }

    /// `--steps` against the loaded model.
    pub fn check_model(&self, spec: &ModelSpec) -> Result<()> {
        check_steps(&self.sampler, spec)?;
        check_memory(self.num, 1, spec.image_shape)
    }

    /// The job of picture number `k` (0-based).
    pub fn job(&self, k: u64) -> Job {
        Job {
            sampler: self.sampler,
            seed: self.first_seed.wrapping_add(k),
            num: self.num,
            threads: self.model.threads,
            init_image: None,
            init_noise: None,
        }
    }
}

/// `edge-sample bench`, checked.
#[derive(Debug)]
pub struct BenchPlan {
    pub model: ModelPlan,
    pub sampler: SamplerConfig,
    /// Images per timed run (≥ 1).
    pub num: usize,
    /// Timed runs (≥ 1).
    pub runs: usize,
    /// `--profile`: how many of the costliest nodes to list.
    pub profile: Option<usize>,
}

impl BenchPlan {
    pub fn from_args(a: &BenchArgs) -> Result<BenchPlan> {
        let sampler = sampler_config(&a.sampler)?;
        if a.num == 0 || a.runs == 0 {
            return Err(Error::usage("--num and --runs must be at least 1"));
        }
        Ok(BenchPlan {
            model: ModelPlan::from_args(&a.model)?,
            sampler,
            num: a.num,
            runs: a.runs,
            profile: a.profile.then_some(a.profile_nodes),
        })
    }

    /// `--steps` against the loaded model.
    pub fn check_model(&self, spec: &ModelSpec) -> Result<()> {
        check_steps(&self.sampler, spec)
    }

    /// The timed job (seed 0).
    pub fn job(&self) -> Job {
        Job {
            sampler: self.sampler,
            seed: 0,
            num: self.num,
            threads: self.model.threads,
            init_image: None,
            init_noise: None,
        }
    }
}

/// The files a model argument names: the model file and its sidecar, when they exist (a
/// bundled model's name names none).
fn model_files(model: Option<&str>) -> Vec<Named> {
    let Some(m) = model else { return vec![] };
    let path = Path::new(m);
    if !path.exists() {
        return vec![];
    }
    let mut files = vec![Named::new(path, "the model (-m)")];
    let sidecar = path.with_extension("json");
    if sidecar.exists() {
        files.push(Named::new(sidecar, "the model's sidecar"));
    }
    files
}

/// The PNG a `--display png:PATH` screen writes.
fn screen_png(view: &ViewOptions) -> Option<PathBuf> {
    match &view.display {
        DisplaySpec::Screen(c) if c.kind == ScreenKind::Png => Some(PathBuf::from(c.device())),
        _ => None,
    }
}

/// The files of `--out-dir` that a run of `num` images would replace: `NNNN.png` for image
/// numbers below `num` that exist now (the others are new names in a checked folder).
fn out_dir_files(dir: &Path, num: usize) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::output(dir, e))?;
    let mut files = vec![];
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".png")) else {
            continue;
        };
        let numbered = stem.len() >= 4 && stem.bytes().all(|b| b.is_ascii_digit());
        if numbered
            && stem
                .parse::<usize>()
                .is_ok_and(|k| k < num && format!("{k:04}") == stem)
        {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    fn plan(args: &[&str]) -> Result<Plan> {
        let mut full = vec!["edge-sample"];
        full.extend_from_slice(args);
        Plan::from_cli(&Cli::try_parse_from(full).expect("clap accepts the arguments"))
    }

    fn usage(args: &[&str]) -> String {
        match plan(args) {
            Err(e @ Error::Usage(_)) => e.to_string(),
            Err(e) => panic!("{args:?}: not a usage error: {e}"),
            Ok(p) => panic!("{args:?}: accepted: {p:?}"),
        }
    }

    #[test]
    fn bad_numbers_are_refused_in_the_flags_words() {
        let out = tempfile::tempdir().unwrap();
        let o = out.path().join("x.png");
        let o = o.to_str().unwrap();
        for (args, want) in [
            (vec!["--num", "0"], "--num must be at least 1"),
            (vec!["--steps", "0"], "--steps must be at least 1, found 0"),
            (vec!["--eta", "-0.5"], "--eta must be >= 0, found -0.5"),
            (vec!["--eta", "inf"], "--eta must be >= 0, found inf"),
            (vec!["--scale", "65"], "--scale must be in 1..=64, found 65"),
            (vec!["--batch", "0"], "--batch must be at least 1"),
            (vec!["-j", "0"], "--threads must be at least 1"),
            (
                vec!["--init-image", "x.png", "--strength", "1.5"],
                "--strength must be in (0, 1], found 1.5",
            ),
            (
                vec![
                    "--init-image",
                    "x.png",
                    "--strength",
                    "0.01",
                    "--steps",
                    "20",
                ],
                "--strength 0.01 with 20 steps runs no step: raise --strength or --steps",
            ),
            (
                vec!["bench", "--runs", "0"],
                "--num and --runs must be at least 1",
            ),
            (vec!["frame", "-n", "0"], "--num must be at least 1"),
            (vec!["--num", "1000000000"], "--num must be at most 65536"),
            (vec!["--batch", "1000000"], "--batch must be at most 1024"),
            (vec!["-j", "1000000"], "--threads must be at most"),
            (vec!["frame", "--steps", "0"], "--steps must be at least 1"),
        ] {
            let mut full = args.clone();
            full.extend(["--board", "none", "-o", o]);
            if full[0] == "bench" {
                full.truncate(full.len() - 4); // bench has neither --board nor -o
            }
            let e = usage(&full);
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert!(!Path::new(o).exists());
    }

    #[test]
    fn defaults_resolve_threads_and_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let o = dir.path().join("g.png");
        let Plan::Sample(p) = plan(&["--board", "none", "-o", o.to_str().unwrap()]).unwrap() else {
            panic!("the main job")
        };
        assert_eq!(p.model.threads, default_threads());
        assert_eq!(p.grid.as_deref(), Some(o.as_path()));
        assert_eq!((p.num, p.sampler.steps, p.seed), (16, 20, 42));
        assert!(p.init_image.is_none());
        let Plan::Frame(f) = plan(&[
            "frame",
            "--board",
            "none",
            "--seed",
            "7",
            "--on-exit",
            "clear",
        ])
        .unwrap() else {
            panic!("the frame")
        };
        assert_eq!((f.job(3).seed, f.clear_on_exit), (10, true));
        assert!(f.check_screen(false).is_err() && f.check_screen(true).is_ok());
    }

    #[test]
    fn runs_that_would_not_fit_in_memory_are_refused() {
        check_memory(16, 1, [1, 28, 28]).unwrap();
        check_memory(64, 8, [1, 28, 28]).unwrap();
        // --num 256 --scale 64 took 1.7 GB: 256 × 784 × 4096 bytes of pixels.
        let e = check_memory(256, 64, [1, 28, 28]).unwrap_err().to_string();
        assert!(e.contains("need 784 MiB (at most 256 MiB)"), "{e}");
        assert!(check_memory(MAX_NUM, 1, [3, 64, 64]).is_err());
    }

    #[test]
    fn steps_are_checked_against_the_model() {
        let spec = ModelSpec {
            name: "test".into(),
            image_shape: [1, 4, 4],
            batch: 1,
            schedule: Default::default(),
            prediction: crate::sampler::Prediction::Epsilon,
            pixel_range: (-1.0, 1.0),
        };
        let Plan::Bench(b) = plan(&["bench", "--steps", "1001"]).unwrap() else {
            panic!("bench")
        };
        let e = b.check_model(&spec).unwrap_err().to_string();
        assert_eq!(
            e,
            "--steps must be between 1 and the model's 1000 training timesteps, found 1001"
        );
    }
}
