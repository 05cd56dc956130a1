//! What every sampler shares: its configuration, timestep spacings, the conversion of a
//! model's output to (x̂0, ε), and the [`Sampler`] trait.

use std::fmt;
use std::str::FromStr;

use super::sigmas::SigmaSchedule;
use crate::error::Error;
use crate::schedule::Schedule;

/// Which sampler runs the reverse process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    /// Ancestral DDPM: the seed's exact step at S = T, respaced (Nichol & Dhariwal) below.
    Ddpm,
    /// DDIM (Song et al. 2021) with stochasticity η.
    Ddim,
    /// Euler's method on the probability-flow ODE in σ (Karras et al. 2022; diffusers
    /// `EulerDiscreteScheduler`).
    Euler,
    /// Euler ancestral: an Euler step down to σ_down, then fresh noise up to σ_next
    /// (diffusers `EulerAncestralDiscreteScheduler`).
    EulerAncestral,
    /// Heun's second-order method (Karras et al. 2022, Algorithm 1): two network calls per
    /// step but the last (diffusers `HeunDiscreteScheduler`).
    Heun,
    /// DPM-Solver++(2M) (Lu et al. 2022), diffusers' multistep defaults.
    DpmPp2m,
    /// DPM-Solver++(3M): the same solver with `solver_order=3`.
    DpmPp3m,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 7] = [
        SamplerKind::Ddpm,
        SamplerKind::Ddim,
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::Heun,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp3m,
    ];
    pub const NAMES: &'static str = "ddpm, ddim, euler, euler-a, heun, dpmpp-2m, dpmpp-3m";
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler-a",
            SamplerKind::Heun => "heun",
            SamplerKind::DpmPp2m => "dpmpp-2m",
            SamplerKind::DpmPp3m => "dpmpp-3m",
        }
    }
    /// Other names it answers to: diffusers' scheduler class, A1111's and stable-diffusion.cpp's.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            SamplerKind::Ddpm => &["DDPMScheduler"],
            SamplerKind::Ddim => &["DDIMScheduler"],
            SamplerKind::Euler => &["EulerDiscreteScheduler", "Euler", "k_euler"],
            SamplerKind::EulerAncestral => &[
                "EulerAncestralDiscreteScheduler",
                "Euler a",
                "euler_a",
                "euler-ancestral",
                "k_euler_a",
            ],
            SamplerKind::Heun => &["HeunDiscreteScheduler", "Heun", "k_heun"],
            SamplerKind::DpmPp2m => &[
                "DPMSolverMultistepScheduler",
                "DPM++ 2M",
                "dpmpp_2m",
                "dpm++2m",
                "dpm-solver++",
                "dpmsolver++",
            ],
            SamplerKind::DpmPp3m => &["DPM++ 3M", "dpmpp_3m", "dpm++3m"],
        }
    }
    /// The diffusers scheduler class it matches, and its settings where not the defaults.
    pub fn diffusers(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "DDPMScheduler",
            SamplerKind::Ddim => "DDIMScheduler",
            SamplerKind::Euler => "EulerDiscreteScheduler",
            SamplerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SamplerKind::Heun => "HeunDiscreteScheduler",
            SamplerKind::DpmPp2m => "DPMSolverMultistepScheduler",
            SamplerKind::DpmPp3m => "DPMSolverMultistepScheduler(solver_order=3)",
        }
    }
    /// diffusers' default spacing for the matching scheduler, except DDPM, where `trailing`
    /// starts from t = T−1 (pure noise) like the seed instead of diffusers' `leading`.
    pub fn default_spacing(self) -> Spacing {
        match self {
            SamplerKind::Ddpm | SamplerKind::Ddim => Spacing::Trailing,
            _ => Spacing::Linspace,
        }
    }
    /// Whether `--sigmas` (Karras, exponential) applies: the schedulers that take
    /// `use_karras_sigmas` in diffusers.
    pub fn takes_sigmas(self) -> bool {
        matches!(
            self,
            SamplerKind::Euler | SamplerKind::Heun | SamplerKind::DpmPp2m | SamplerKind::DpmPp3m
        )
    }
    /// The network call that step `step` starts with (Heun: two calls per step; diffusers'
    /// `t_start · scheduler.order` for img2img).
    pub fn first_call(self, step: usize) -> usize {
        match self {
            SamplerKind::Heun => 2 * step,
            _ => step,
        }
    }
    /// Network calls for `steps` steps (Heun: two per step but the last).
    pub fn calls(self, steps: usize) -> usize {
        match self {
            SamplerKind::Heun => (2 * steps).saturating_sub(1),
            _ => steps,
        }
    }
    /// Whether it draws fresh noise during the chain (with `eta` for DDIM).
    pub fn stochastic(self, eta: f64) -> bool {
        match self {
            SamplerKind::Ddpm | SamplerKind::EulerAncestral => true,
            SamplerKind::Ddim => eta > 0.0,
            _ => false,
        }
    }
}

impl FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let key = |v: &str| v.to_ascii_lowercase().replace([' ', '_'], "-");
        let want = key(s);
        SamplerKind::ALL
            .into_iter()
            .find(|k| key(k.name()) == want || k.aliases().iter().any(|a| key(a) == want))
            .ok_or_else(|| {
                format!(
                    "unknown sampler '{s}' (valid: {}; `edge-sample samplers` lists them)",
                    SamplerKind::NAMES
                )
            })
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How S inference timesteps are picked from T training timesteps (diffusers names;
/// Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", table 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

impl Spacing {
    pub const NAMES: &'static str = "leading, trailing, linspace";
    pub fn name(self) -> &'static str {
        match self {
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
            Spacing::Linspace => "linspace",
        }
    }
}

impl FromStr for Spacing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            _ => Err(format!("unknown spacing '{s}' (valid: {})", Spacing::NAMES)),
        }
    }
}

impl fmt::Display for Spacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The variance of DDPM's ancestral noise (the seed's `simple_var`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variance {
    /// σ² = β_t (the seed's simple_var = True; diffusers `fixed_large`).
    Beta,
    /// σ² = β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t)·β_t (simple_var = False; diffusers `fixed_small`).
    Posterior,
}

impl FromStr for Variance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "beta" | "fixed_large" => Ok(Variance::Beta),
            "posterior" | "fixed_small" => Ok(Variance::Posterior),
            _ => Err(format!("unknown variance '{s}' (valid: beta, posterior)")),
        }
    }
}

impl fmt::Display for Variance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Variance::Beta => "beta",
            Variance::Posterior => "posterior",
        })
    }
}

/// What the network predicts (diffusers `prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// ε, the added noise (DDPM; the seed).
    Epsilon,
    /// v = √ᾱ·ε − √(1−ᾱ)·x0 (Salimans & Ho 2022).
    V,
    /// x0 itself (diffusers `sample`).
    Sample,
}

impl Prediction {
    pub fn name(self) -> &'static str {
        match self {
            Prediction::Epsilon => "epsilon",
            Prediction::V => "v_prediction",
            Prediction::Sample => "sample",
        }
    }

    /// (x̂0, ε̂) from the network output `m` at a sample `x` with a = √ᾱ_t, s = √(1−ᾱ_t).
    #[inline(always)]
    pub fn x0_eps(self, x: f32, m: f32, a: f32, s: f32) -> (f32, f32) {
        match self {
            Prediction::Epsilon => ((x - s * m) / a, m),
            Prediction::V => (a * x - s * m, a * m + s * x),
            Prediction::Sample => (m, (x - a * m) / s),
        }
    }
}

impl FromStr for Prediction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "epsilon" | "eps" => Ok(Prediction::Epsilon),
            "v_prediction" | "v" => Ok(Prediction::V),
            "sample" | "x0" => Ok(Prediction::Sample),
            _ => Err(format!(
                "unknown prediction type '{s}' (valid: epsilon, v_prediction, sample)"
            )),
        }
    }
}

/// Everything that selects and tunes a sampler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    pub kind: SamplerKind,
    /// S, the number of network evaluations.
    pub steps: usize,
    /// DDIM's η (0: deterministic).
    pub eta: f64,
    /// `None`: the sampler's default ([`SamplerKind::default_spacing`]).
    pub spacing: Option<Spacing>,
    pub variance: Variance,
    /// Clamp x̂0 to [−1, 1] (DDPM, DDIM). DPM-Solver++ never clips, as in diffusers.
    pub clip: bool,
    pub prediction: Prediction,
    /// How the noise levels are spread (`--sigmas`): Karras or exponential σ for the samplers
    /// that take them ([`SamplerKind::takes_sigmas`]).
    pub sigmas: SigmaSchedule,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            // The best quality at 20 steps on the bundled model (models/README.md).
            kind: SamplerKind::DpmPp2m,
            steps: 20,
            eta: 0.0,
            spacing: None,
            variance: Variance::Beta,
            clip: true,
            prediction: Prediction::Epsilon,
            sigmas: SigmaSchedule::Default,
        }
    }
}

impl SamplerConfig {
    pub fn spacing(&self) -> Spacing {
        self.spacing.unwrap_or(self.kind.default_spacing())
    }

    /// Checks the configuration against a schedule of T training steps. (The CLI's plan checks
    /// the same with the flags' names before anything runs; this guards the library's callers.)
    pub fn validate(&self, t_max: usize) -> Result<(), Error> {
        if self.steps == 0 || self.steps > t_max {
            return Err(Error::usage(format!(
                "a sampler takes between 1 and the schedule's {t_max} training timesteps as steps, found {}",
                self.steps
            )));
        }
        if !(self.eta >= 0.0 && self.eta.is_finite()) {
            return Err(Error::usage(format!(
                "the DDIM stochasticity eta must be finite and >= 0, found {}",
                self.eta
            )));
        }
        if self.sigmas != SigmaSchedule::Default && !self.kind.takes_sigmas() {
            let takers: Vec<&str> = SamplerKind::ALL
                .into_iter()
                .filter(|k| k.takes_sigmas())
                .map(|k| k.name())
                .collect();
            return Err(Error::usage(format!(
                "--sigmas {} does not apply to {} (samplers that take it: {})",
                self.sigmas,
                self.kind,
                takers.join(", ")
            )));
        }
        // A repeated timestep is a step of size zero: DPM-Solver's h = 0 divides by zero
        // (linspace at S = T, leading at S = T), the others would call the network twice at
        // one t. (Karras and exponential σ, and the Euler family's fractional linspace
        // timesteps, always decrease.)
        let fractional = matches!(
            self.kind,
            SamplerKind::Euler | SamplerKind::EulerAncestral | SamplerKind::Heun
        ) && self.spacing() == Spacing::Linspace;
        let integer_steps = self.sigmas == SigmaSchedule::Default && !fractional;
        let repeats = |s: usize| {
            let ts = self.timesteps_for(t_max, s);
            ts.windows(2).any(|w| w[0] <= w[1])
        };
        if integer_steps && repeats(self.steps) {
            let most = (1..self.steps).rev().find(|&s| !repeats(s)).unwrap_or(1);
            return Err(Error::usage(format!(
                "--steps {} with {} and {} spacing repeats timesteps of the model's {t_max}: at most {most} steps",
                self.steps,
                self.kind.name(),
                self.spacing().name()
            )));
        }
        Ok(())
    }

    /// The distinct timesteps this sampler steps between with `steps` steps of a T = `t_max`
    /// schedule (with default sigmas; Heun calls the network twice at each but the first).
    pub fn timesteps_for(&self, t_max: usize, steps: usize) -> Vec<usize> {
        match self.kind {
            SamplerKind::DpmPp2m | SamplerKind::DpmPp3m => {
                dpm_timesteps(self.spacing(), t_max, steps)
            }
            _ => timesteps(self.spacing(), t_max, steps),
        }
    }
}

/// NumPy's `np.linspace(0, stop, num)[k]`: `k · (stop / (num − 1))`, the step rounded first,
/// and the last point `stop` exactly (diffusers rounds these, so the difference matters where
/// the exact value is a half: `np.linspace(0, 999, 27)[13]` is 499.49999999999994, not 499.5).
pub(crate) fn np_linspace_point(stop: f64, num: i64, k: i64) -> f64 {
    if num <= 1 {
        0.0
    } else if k == num - 1 {
        stop
    } else {
        k as f64 * (stop / (num - 1) as f64)
    }
}

/// Round half to even, as NumPy's `round` (which diffusers uses for timesteps).
pub(crate) fn np_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// diffusers' DDPM/DDIM `set_timesteps`: S timesteps out of T, descending.
pub fn timesteps(spacing: Spacing, t_max: usize, steps: usize) -> Vec<usize> {
    let (t, s) = (t_max as i64, steps as i64);
    let v: Vec<i64> = match spacing {
        // np.linspace(0, T-1, S).round()[::-1]
        Spacing::Linspace => (0..s)
            .rev()
            .map(|k| np_round(np_linspace_point((t - 1) as f64, s, k)))
            .collect(),
        // (np.arange(0, S) * (T // S)).round()[::-1] (+ steps_offset = 0)
        Spacing::Leading => (0..s).rev().map(|k| k * (t / s)).collect(),
        // np.round(np.arange(T, 0, -T/S)) - 1
        Spacing::Trailing => {
            let ratio = t as f64 / s as f64;
            (0..s)
                .map(|k| np_round(t as f64 - k as f64 * ratio) - 1)
                .collect()
        }
    };
    v.into_iter().map(|x| x.clamp(0, t - 1) as usize).collect()
}

/// diffusers' DPMSolverMultistepScheduler `set_timesteps`: S + 1 points, the last dropped.
pub fn dpm_timesteps(spacing: Spacing, t_max: usize, steps: usize) -> Vec<usize> {
    let (t, s) = (t_max as i64, steps as i64);
    let v: Vec<i64> = match spacing {
        // np.linspace(0, T-1, S+1).round()[::-1][:-1]
        Spacing::Linspace => (1..=s)
            .rev()
            .map(|k| np_round(np_linspace_point((t - 1) as f64, s + 1, k)))
            .collect(),
        // (np.arange(0, S+1) * (T // (S+1))).round()[::-1][:-1]
        Spacing::Leading => (1..=s).rev().map(|k| k * (t / (s + 1))).collect(),
        // np.arange(T, 0, -T/S).round() - 1
        Spacing::Trailing => {
            let ratio = t as f64 / s as f64;
            (0..s)
                .map(|k| np_round(t as f64 - k as f64 * ratio) - 1)
                .collect()
        }
    };
    v.into_iter().map(|x| x.clamp(0, t - 1) as usize).collect()
}

/// A reverse-diffusion sampler over buffers of any number of images laid out contiguously
/// (all images of a batch share the timestep).
pub trait Sampler: Send {
    /// The training timestep fed to the network at each step, descending.
    fn timesteps(&self) -> &[usize];

    /// Standard deviation of the noise step `i` adds; 0 when it adds none (and draws none).
    fn noise_std(&self, i: usize) -> f32;

    /// Forgets multistep history: call before each new batch of images.
    fn reset(&mut self);

    /// Advances `x` from step `i` to step `i + 1` given the network output `model_out` at
    /// `timesteps()[i]`; `noise` holds `x.len()` standard normals iff `noise_std(i) > 0`.
    fn step(&mut self, i: usize, x: &mut [f32], model_out: &[f32], noise: &[f32]);

    /// √ᾱ and √(1 − ᾱ) of the level the network sees at step `i` (img2img noises the image
    /// to it: x = √ᾱ·x0 + √(1 − ᾱ)·ε).
    fn level(&self, i: usize) -> (f32, f32);

    /// The current x̂0 estimate (for previews), written to `out`.
    fn predict_x0(&self, i: usize, x: &[f32], model_out: &[f32], out: &mut [f32]);

    /// What the unit-variance starting noise is multiplied by (diffusers' `init_noise_sigma`,
    /// in the network's input space): 1 but for the σ-space samplers.
    fn init_noise_scale(&self) -> f32 {
        1.0
    }

    /// Sizes internal history for buffers of `len` values; call before the loop.
    fn prepare(&mut self, len: usize) {
        let _ = len;
    }
}

/// √ᾱ_t and √(1−ᾱ_t) as f32, the pair every conversion needs.
pub(crate) fn a_s(schedule: &Schedule, t: usize) -> (f32, f32) {
    (
        schedule.sqrt_alpha_bars[t] as f32,
        schedule.sqrt_one_minus_alpha_bars[t] as f32,
    )
}

/// x̂0 for previews, shared by the samplers.
pub(crate) fn x0_into(pred: Prediction, a: f32, s: f32, x: &[f32], m: &[f32], out: &mut [f32]) {
    for ((o, &xv), &mv) in out.iter_mut().zip(x).zip(m) {
        *o = pred.x0_eps(xv, mv, a, s).0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_display_as_diffusers_spells_them() {
        for (kind, name, aliases) in [
            (SamplerKind::Ddpm, "ddpm", &["ddpm", "DDPM"][..]),
            (SamplerKind::Ddim, "ddim", &["ddim", "Ddim"][..]),
            (
                SamplerKind::DpmPp2m,
                "dpmpp-2m",
                &[
                    "dpmpp-2m",
                    "dpmpp_2m",
                    "dpm++2m",
                    "dpm-solver++",
                    "DPMSolver++",
                ][..],
            ),
        ] {
            assert_eq!(kind.name(), name);
            assert_eq!(kind.to_string(), name);
            for a in aliases {
                assert_eq!(a.parse::<SamplerKind>(), Ok(kind), "{a}");
            }
        }
        for (kind, name, aliases) in [
            (
                SamplerKind::Euler,
                "euler",
                &["Euler", "EulerDiscreteScheduler", "k_euler"][..],
            ),
            (
                SamplerKind::EulerAncestral,
                "euler-a",
                &["Euler a", "euler_a", "EulerAncestralDiscreteScheduler"][..],
            ),
            (
                SamplerKind::Heun,
                "heun",
                &["Heun", "HeunDiscreteScheduler"][..],
            ),
            (
                SamplerKind::DpmPp3m,
                "dpmpp-3m",
                &["DPM++ 3M", "dpmpp_3m"][..],
            ),
        ] {
            assert_eq!(kind.name(), name);
            assert_eq!(name.parse::<SamplerKind>(), Ok(kind));
            for a in aliases {
                assert_eq!(a.parse::<SamplerKind>(), Ok(kind), "{a}");
            }
        }
        let e = "lms".parse::<SamplerKind>().unwrap_err();
        assert!(e.contains("lms") && e.contains(SamplerKind::NAMES), "{e}");
        assert_eq!(SamplerKind::Ddpm.default_spacing(), Spacing::Trailing);
        assert_eq!(SamplerKind::Ddim.default_spacing(), Spacing::Trailing);
        assert_eq!(SamplerKind::DpmPp2m.default_spacing(), Spacing::Linspace);

        for (sp, name) in [
            (Spacing::Leading, "leading"),
            (Spacing::Trailing, "trailing"),
            (Spacing::Linspace, "linspace"),
        ] {
            assert_eq!(sp.name(), name);
            assert_eq!(sp.to_string(), name);
            assert_eq!(name.parse::<Spacing>(), Ok(sp));
        }
        assert!("karras"
            .parse::<Spacing>()
            .unwrap_err()
            .contains(Spacing::NAMES));

        for (v, name, aliases) in [
            (Variance::Beta, "beta", ["beta", "fixed_large"]),
            (
                Variance::Posterior,
                "posterior",
                ["posterior", "fixed_small"],
            ),
        ] {
            assert_eq!(v.to_string(), name);
            for a in aliases {
                assert_eq!(a.parse::<Variance>(), Ok(v), "{a}");
            }
        }
        assert!("learned".parse::<Variance>().is_err());

        for (p, name, alias) in [
            (Prediction::Epsilon, "epsilon", "eps"),
            (Prediction::V, "v_prediction", "v"),
            (Prediction::Sample, "sample", "x0"),
        ] {
            assert_eq!(p.name(), name);
            assert_eq!(name.parse::<Prediction>(), Ok(p));
            assert_eq!(alias.parse::<Prediction>(), Ok(p));
        }
        assert!("flow".parse::<Prediction>().is_err());
    }

    #[test]
    fn spacing_defaults_to_the_samplers_own() {
        for kind in [SamplerKind::Ddpm, SamplerKind::Ddim, SamplerKind::DpmPp2m] {
            let cfg = SamplerConfig {
                kind,
                ..Default::default()
            };
            assert_eq!(cfg.spacing(), kind.default_spacing());
            for sp in [Spacing::Leading, Spacing::Trailing, Spacing::Linspace] {
                let cfg = SamplerConfig {
                    spacing: Some(sp),
                    ..cfg
                };
                assert_eq!(cfg.spacing(), sp);
            }
        }
    }

    #[test]
    fn validate_takes_1_to_t_steps_and_a_finite_non_negative_eta() {
        let with = |steps: usize, eta: f64| SamplerConfig {
            steps,
            eta,
            ..Default::default()
        };
        // (The default sampler, DPM-Solver++ over linspace, repeats a timestep at 1000 steps.)
        for (steps, eta) in [(1, 0.0), (999, 0.0), (20, 1.0), (20, 0.5), (20, 1e300)] {
            assert!(with(steps, eta).validate(1000).is_ok(), "{steps} {eta}");
        }
        for (steps, eta) in [
            (0, 0.0),
            (1000, 0.0),
            (1001, 0.0),
            (20, -1e-9),
            (20, -1.0),
            (20, f64::NAN),
            (20, f64::INFINITY),
        ] {
            let e = with(steps, eta).validate(1000).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{steps} {eta}: {e:?}");
        }
    }

    /// Each conversion at a (√ᾱ, √(1−ᾱ)) pair away from any symmetry, against the definitions:
    /// x = a·x0 + s·ε, v = a·ε − s·x0. f32 arithmetic of a few operations on values ≤ 4:
    /// measured worst 2.38e-7 (x86 avx512).
    const X0_EPS_TOL: f32 = 7.2e-7;
    #[test]
    fn prediction_conversions_invert_the_forward_process() {
        let mut worst = 0f32;
        for (a, s) in [(0.28f32, 0.96f32), (0.96, 0.28), (0.6, 0.8)] {
            for (x0, eps) in [(0.3f32, -1.2f32), (-0.7, 2.1), (1.9, 0.4)] {
                let x = a * x0 + s * eps;
                let v = a * eps - s * x0;
                for (p, m) in [
                    (Prediction::Epsilon, eps),
                    (Prediction::V, v),
                    (Prediction::Sample, x0),
                ] {
                    let (gx0, geps) = p.x0_eps(x, m, a, s);
                    let e = (gx0 - x0).abs().max((geps - eps).abs());
                    assert!(
                        e < X0_EPS_TOL,
                        "{p:?} a={a}: ({gx0}, {geps}) vs ({x0}, {eps})"
                    );
                    worst = worst.max(e);
                }
            }
        }
        eprintln!("x0_eps worst {worst:.2e}");
    }

    #[test]
    fn a_s_and_x0_into_read_the_schedule_at_t() {
        let s = Schedule::tutorial();
        for t in [0usize, 1, 500, 999] {
            let (a, sd) = a_s(&s, t);
            assert_eq!(a, s.sqrt_alpha_bars[t] as f32);
            assert_eq!(sd, s.sqrt_one_minus_alpha_bars[t] as f32);
        }
        let (a, sd) = (0.28f32, 0.96f32);
        let x = [0.5f32, -1.5, 2.0];
        let m = [0.1f32, 0.7, -0.3];
        let mut out = [f32::NAN; 3];
        x0_into(Prediction::Epsilon, a, sd, &x, &m, &mut out);
        for k in 0..3 {
            let want = (x[k] as f64 - sd as f64 * m[k] as f64) / a as f64;
            assert!(
                (out[k] as f64 - want).abs() < X0_EPS_TOL as f64 * (1.0 + want.abs()),
                "{k}"
            );
        }
    }
}
