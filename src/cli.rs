//! The command line as clap parses it. [`crate::plan`] turns it into one checked plan per
//! command; nothing below the plan sees these types.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use embedded_graphics::prelude::Size;

use crate::denoiser::Precision;
use crate::display::{parse_screen_size, DisplaySpec, Rotation};
use crate::sampler::{SamplerKind, SigmaSchedule, Spacing, Variance};

#[derive(Parser, Debug)]
#[command(
    name = "edge-sample",
    version,
    about = "Generate images with a diffusion model on a small CPU",
    long_about = "Generate images with an ONNX diffusion denoiser (run by tract) and write them \
                  as PNG. With no options: 16 digits from the built-in model, 20 DPM-Solver++(2M) steps, \
                  written to ./edge-sample.png.",
    after_help = ENVIRONMENT
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub sample: SampleArgs,
}

/// The "Environment" section of `--help`: the variables edge-sample reads.
pub const ENVIRONMENT: &str = "\
Environment:
  EDGE_SAMPLE_KERNELS=NAME       who runs convolutions, norms and softmax: auto (default: the best
                                 of edge-sample's own for this CPU), tract (tract's lowering, for
                                 A/B runs), portable, avx2, avx512 or neon
  EDGE_SAMPLE_CONV=NAME          3x3 stride-1 convolutions: auto (default: Winograd where it pays),
                                 direct, winograd, winograd-f2 or winograd-f4
  EDGE_SAMPLE_LOAD_MEMORY_MB=N   heap a model's load may take (default 192 + 8 x the file's size
                                 in MiB); past it the load stops with one line
  EDGE_SAMPLE_DT_MODEL=PATH      file naming the board for --board auto (default
                                 /proc/device-tree/model)
  TRACT_CPU_ISA=NAME             tract's own; when unset, edge-sample turns tract's AMX kernels
                                 off (x86-64)
  TRACT_CPU_AARCH64_KIND=NAME, TRACT_CPU_AARCH64_OVERRIDE_CPU_PART=ID
                                 tract's own; when both are unset and /proc/cpuinfo does not
                                 describe the CPU (qemu-user), edge-sample names the core from
                                 HWCAP";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print what edge-sample detects in a model: inputs, schedule, prediction, precision.
    Info {
        /// Model file (.onnx) or bundled model name.
        model: String,
        #[arg(long, default_value = "auto")]
        precision: Precision,
    },
    /// Time the denoiser: per-step latency (median/min/max), images/s and peak memory.
    Bench(BenchArgs),
    /// List the models built into this binary.
    Models,
    /// List the samplers: names and aliases, the diffusers scheduler each matches, its options.
    Samplers,
    /// List the board profiles (boards/*.toml) and which one this machine is.
    Boards,
    /// Photo frame: generate and show a new picture every --interval, until SIGINT/SIGTERM.
    Frame(Box<FrameArgs>),
}

/// Where pictures are shown.
#[derive(Args, Debug, Clone)]
pub struct DisplayArgs {
    /// Screen: auto (the board profile's screen if its device is present), none, png:PATH
    /// (simulated screen saved as PNG), fb[:DEVICE], st7789, ili9341, ili9486, st7735s, gc9a01,
    /// st7796 or ssd1306, with optional settings: st7789:dc=25,rst=27,backlight=24,size=240x240.
    #[arg(long, default_value = "auto", value_name = "SPEC")]
    pub display: DisplaySpec,
    /// Screen size WIDTHxHEIGHT (the simulated screen's, or a TFT's when not the profile's).
    #[arg(long, value_name = "WxH", value_parser = parse_screen_size)]
    pub screen: Option<Size>,
    /// Rotate the picture clockwise on the screen: 0, 90, 180 or 270.
    #[arg(long, default_value = "0", value_name = "DEG")]
    pub rotate: Rotation,
    /// Caption line under the picture: sampler, steps, seed, time.
    #[arg(long)]
    pub caption: bool,
    /// While denoising, show the predicted final images every K steps (0: progress bar only).
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub preview_every: usize,
    /// Board profile (`edge-sample boards`): auto (from /proc/device-tree/model), none, or a name.
    #[arg(long, default_value = "auto", value_name = "NAME")]
    pub board: String,
}

/// What the photo frame does with the screen when it is stopped.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExit {
    /// Leave the last picture on the screen.
    Keep,
    /// Clear the screen to black.
    Clear,
}

/// Parses 30s, 5m, 1h, 500ms or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}' (examples: 30s, 5m, 1h, 500ms)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" => v,
        "ms" => v / 1000.0,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => {
            return Err(format!(
                "invalid duration unit '{u}' in '{s}' (valid: ms, s, m, h)"
            ))
        }
    };
    if !(secs.is_finite() && secs <= 7.0 * 86400.0) {
        return Err(format!("duration '{s}' out of range (at most 7 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Args, Debug, Clone)]
pub struct FrameArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    #[command(flatten)]
    pub display: DisplayArgs,
    /// Time from one picture to the next (generation included): 30s, 5m, 1h.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Seed of the first picture (default: from the clock); each picture takes the next.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images per picture (a grid when more than one).
    #[arg(long, short = 'n', default_value_t = 1)]
    pub num: usize,
    /// Also save each picture to this PNG (replaced atomically).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Stop after this many pictures (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    pub count: Option<u64>,
    /// On SIGINT/SIGTERM: keep the last picture on the screen, or clear it.
    #[arg(long, value_enum, default_value = "keep")]
    pub on_exit: OnExit,
    /// No per-picture log line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// ONNX model file, or the name of a bundled model (see `edge-sample models`).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Arithmetic: auto (f32 with edge-sample's kernels; the board profile's choice), f32, or
    /// f16 (tract's f16 kernels; emulated, and warned about, on CPUs without FEAT_FP16).
    #[arg(long, default_value = "auto")]
    pub precision: Precision,
    /// Threads; each runs whole batches of images. Default: all cores.
    #[arg(long, short = 'j')]
    pub threads: Option<usize>,
    /// Images per network call, for models with a free batch dimension.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    /// Sampler: ddpm, ddim, euler, euler-a, heun, dpmpp-2m or dpmpp-3m (diffusers' and A1111's
    /// names work too; `edge-sample samplers` lists them).
    #[arg(long, short = 's', default_value = "dpmpp-2m")]
    pub sampler: SamplerKind,
    /// Sampler steps (diffusers' num_inference_steps): one network call each, heun two but
    /// the last (2·steps − 1). ddpm with --steps equal to the model's T (1000) is the seed's
    /// exact chain; fewer steps respace it.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// DDIM stochasticity: 0 deterministic, 1 DDPM-like.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub eta: f64,
    /// Timestep spacing: leading, trailing or linspace. Default: trailing (ddpm, ddim),
    /// linspace (the others), as diffusers.
    #[arg(long)]
    pub spacing: Option<Spacing>,
    /// Noise levels: default (the spacing's timesteps), karras or exponential (euler, heun,
    /// dpmpp-2m, dpmpp-3m; diffusers' use_karras_sigmas / use_exponential_sigmas).
    #[arg(long, default_value = "default")]
    pub sigmas: SigmaSchedule,
    /// DDPM noise variance: beta (σ² = β_t) or posterior (σ² = β̃_t).
    #[arg(long, default_value = "beta")]
    pub variance: Variance,
    /// Do not clamp x̂0 to [-1, 1] (ddpm: the seed's direct-mean formula).
    #[arg(long)]
    pub no_clip: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Seed of the Gaussian noise; image i of seed s is the same on every platform.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of images.
    #[arg(long, short = 'n', default_value_t = 16)]
    pub num: usize,
    /// Contact-sheet PNG of all images. Default: edge-sample.png unless --out-dir is given.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Folder for one PNG per image (created if missing).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Integer nearest-neighbour upscaling of the written PNGs, 1 to 64. Default: the contact
    /// sheet just to at least 480 pixels wide, the --out-dir files at their raw size.
    #[arg(long, value_name = "K")]
    pub scale: Option<usize>,
    /// x_T as a float32 NCHW .npy of shape [num, C, H, W] instead of seeded noise.
    #[arg(long)]
    pub init_noise: Option<PathBuf>,
    /// img2img: start from this image, noised to the step --strength selects.
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// img2img: fraction of the steps that run, in (0, 1].
    #[arg(long, default_value_t = 0.6)]
    pub strength: f64,
    /// Save the final samples (float32 NCHW, model range, before clamping) as .npy.
    #[arg(long)]
    pub save_npy: Option<PathBuf>,
    /// No progress bar and no summary line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub display: DisplayArgs,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Images per timed run.
    #[arg(long, short = 'n', default_value_t = 16)]
    pub num: usize,
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also time every node of the optimized plan (averaged over --runs × 10 calls) and print
    /// the costliest nodes and the time per operator kind.
    #[arg(long)]
    pub profile: bool,
    /// With --profile: how many of the costliest nodes to list, each with what it computes.
    #[arg(long, default_value_t = 15, value_name = "N")]
    pub profile_nodes: usize,
}
