//! Noise levels in sigma space (k-diffusion's σ_t = √((1 − ᾱ_t)/ᾱ_t)) as diffusers' Euler,
//! Heun and DPM-Solver schedulers pick them: which σ each step reaches, which training
//! timestep the network is told, and the sigma schedules (`--sigmas`) that respace them.
//!
//! Every sampler here keeps its state where the network reads it, x_t = x_σ/√(σ² + 1) (the
//! input diffusers' `scale_model_input` makes), so the pipeline feeds x to the network as it
//! is; a step's (√ᾱ, √(1 − ᾱ)) = (1/√(σ² + 1), σ/√(σ² + 1)) convert between the two.
//!
//! The network's timestep input is an integer in the models edge-sample runs: where diffusers
//! would pass a fractional timestep (Euler-family linspace spacing, Karras and exponential
//! sigmas), the nearest integer is passed (ties to even); σ itself stays the fractional one.

use std::fmt;
use std::str::FromStr;

use super::common::{np_linspace_point, np_round, timesteps as ddpm_timesteps, Spacing};
use crate::schedule::Schedule;

/// How the S noise levels are spread (diffusers' `use_karras_sigmas`,
/// `use_exponential_sigmas`; the default is the spacing's own timesteps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigmaSchedule {
    /// σ at the spaced timesteps (`--spacing`).
    Default,
    /// Karras et al. 2022: σ^(1/7) linear from σ_max to σ_min.
    Karras,
    /// log σ linear from σ_max to σ_min.
    Exponential,
}

impl SigmaSchedule {
    pub const NAMES: &'static str = "default, karras, exponential";
    pub fn name(self) -> &'static str {
        match self {
            SigmaSchedule::Default => "default",
            SigmaSchedule::Karras => "karras",
            SigmaSchedule::Exponential => "exponential",
        }
    }
}

impl FromStr for SigmaSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "default" => Ok(SigmaSchedule::Default),
            "karras" => Ok(SigmaSchedule::Karras),
            "exponential" | "exp" => Ok(SigmaSchedule::Exponential),
            _ => Err(format!(
                "unknown sigma schedule '{s}' (valid: {})",
                SigmaSchedule::NAMES
            )),
        }
    }
}

impl fmt::Display for SigmaSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The noise level of one step: √ᾱ and √(1 − ᾱ), in f64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub a: f64,
    pub s: f64,
}

impl Level {
    /// The level of σ: (1/√(σ² + 1), σ/√(σ² + 1)); σ = 0 is the clean image (1, 0).
    pub fn of_sigma(sigma: f64) -> Level {
        let a = 1.0 / (sigma * sigma + 1.0).sqrt();
        Level { a, s: sigma * a }
    }
    /// The schedule's own level at training timestep `t` (the tables, not through σ).
    pub fn at(schedule: &Schedule, t: usize) -> Level {
        Level {
            a: schedule.sqrt_alpha_bars[t],
            s: schedule.sqrt_one_minus_alpha_bars[t],
        }
    }
    /// σ = √(1 − ᾱ)/√ᾱ.
    pub fn sigma(self) -> f64 {
        self.s / self.a
    }
}

/// A sampler's path: the timestep the network is called with at each step and the level it
/// sees, plus the level after the last step (σ = 0: the clean image).
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    pub timesteps: Vec<usize>,
    /// `timesteps.len() + 1` levels; the last is (1, 0).
    pub levels: Vec<Level>,
}

/// σ_t of every training timestep.
fn train_sigmas(schedule: &Schedule) -> Vec<f64> {
    (0..schedule.len())
        .map(|t| Level::at(schedule, t).sigma())
        .collect()
}

/// NumPy's `np.interp(t, arange(len), table)` for t within [0, len − 1].
fn interp(table: &[f64], t: f64) -> f64 {
    let t = t.clamp(0.0, (table.len() - 1) as f64);
    let lo = (t.floor() as usize).min(table.len() - 1);
    if lo + 1 >= table.len() {
        return table[lo];
    }
    let w = t - lo as f64;
    table[lo] + w * (table[lo + 1] - table[lo])
}

/// diffusers' `_sigma_to_t`: the fractional timestep of σ, by interpolating log σ between the
/// two training timesteps around it.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The last index whose log σ is ≤ this one (0 if none), at most len − 2.
    let low = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// Karras et al.'s σ_i for `n` steps from `max` down to `min` (ρ = 7).
fn karras(max: f64, min: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (lo, hi) = (min.powf(1.0 / rho), max.powf(1.0 / rho));
    (0..n)
        .map(|k| {
            let ramp = np_linspace_point(1.0, n as i64, k as i64);
            (hi + ramp * (lo - hi)).powf(rho)
        })
        .collect()
}

/// `n` σ from `max` down to `min`, equally spaced in log σ.
fn exponential(max: f64, min: f64, n: usize) -> Vec<f64> {
    let (a, b) = (max.ln(), min.ln());
    (0..n)
        .map(|k| {
            let f = np_linspace_point(1.0, n as i64, k as i64);
            (a + f * (b - a)).exp()
        })
        .collect()
}

/// f32 rounding, as diffusers stores its sigmas and timesteps.
fn f32r(v: f64) -> f64 {
    v as f32 as f64
}

/// The nearest training timestep (ties to even), within [0, T − 1].
fn nearest(t: f64, t_max: usize) -> usize {
    (np_round(t).max(0) as usize).min(t_max - 1)
}

/// diffusers' Euler, Euler ancestral and Heun `set_timesteps` (fractional timesteps, σ by
/// linear interpolation, then Karras or exponential σ if asked): S noise levels and their
/// timesteps, and σ = 0 after them.
pub fn euler_path(
    schedule: &Schedule,
    spacing: Spacing,
    sigmas: SigmaSchedule,
    steps: usize,
) -> Path {
    let t_max = schedule.len();
    let ts: Vec<f64> = match spacing {
        // np.linspace(0, T − 1, S, dtype=float32)[::-1]
        Spacing::Linspace => (0..steps as i64)
            .rev()
            .map(|k| f32r(np_linspace_point((t_max - 1) as f64, steps as i64, k)))
            .collect(),
        // The integer spacings are the DDPM/DDIM ones.
        Spacing::Leading | Spacing::Trailing => ddpm_timesteps(spacing, t_max, steps)
            .into_iter()
            .map(|t| t as f64)
            .collect(),
    };
    let table = train_sigmas(schedule);
    let spaced: Vec<f64> = ts.iter().map(|&t| interp(&table, t)).collect();
    let (sig, ts) = respace(&table, spaced, ts, sigmas, steps);
    path(t_max, &ts, &sig)
}

/// diffusers' DPMSolverMultistepScheduler `set_timesteps`: integer timesteps (`dpm_timesteps`)
/// and their σ, or Karras σ over the whole training range with the timesteps rounded, or
/// exponential σ with the timesteps truncated (diffusers' int64 cast), then σ = 0.
pub fn dpm_path(
    schedule: &Schedule,
    spacing: Spacing,
    sigmas: SigmaSchedule,
    steps: usize,
) -> Path {
    let t_max = schedule.len();
    if sigmas == SigmaSchedule::Default {
        // The schedule's own levels at the integer timesteps (σ = table value exactly).
        let timesteps = super::common::dpm_timesteps(spacing, t_max, steps);
        let mut levels: Vec<Level> = timesteps.iter().map(|&t| Level::at(schedule, t)).collect();
        levels.push(Level::of_sigma(0.0));
        return Path { timesteps, levels };
    }
    let table = train_sigmas(schedule);
    let log_table: Vec<f64> = table.iter().map(|s| s.ln()).collect();
    let (max, min) = (table[t_max - 1], table[0]);
    let (sig, timesteps): (Vec<f64>, Vec<usize>) = match sigmas {
        SigmaSchedule::Karras => {
            let sig = karras(max, min, steps);
            let ts = sig
                .iter()
                .map(|&s| nearest(sigma_to_t(s, &log_table), t_max))
                .collect();
            (sig, ts)
        }
        _ => {
            let sig = exponential(max, min, steps);
            let ts = sig
                .iter()
                .map(|&s| (sigma_to_t(s, &log_table).max(0.0) as usize).min(t_max - 1))
                .collect();
            (sig, ts)
        }
    };
    let mut levels: Vec<Level> = sig.iter().map(|&s| Level::of_sigma(f32r(s))).collect();
    levels.push(Level::of_sigma(0.0));
    Path { timesteps, levels }
}

/// Karras or exponential σ over the range of the spaced ones (Euler family), with their
/// fractional timesteps; the spaced ones otherwise.
fn respace(
    table: &[f64],
    spaced: Vec<f64>,
    ts: Vec<f64>,
    sigmas: SigmaSchedule,
    steps: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (max, min) = (spaced[0], spaced[spaced.len() - 1]);
    let sig = match sigmas {
        SigmaSchedule::Default => return (spaced, ts),
        SigmaSchedule::Karras => karras(max, min, steps),
        SigmaSchedule::Exponential => exponential(max, min, steps),
    };
    let log_table: Vec<f64> = table.iter().map(|s| s.ln()).collect();
    let ts = sig.iter().map(|&s| sigma_to_t(s, &log_table)).collect();
    (sig, ts)
}

/// The path of σ (f32-rounded, as diffusers keeps them) at fractional timesteps `ts`.
fn path(t_max: usize, ts: &[f64], sig: &[f64]) -> Path {
    let timesteps = ts.iter().map(|&t| nearest(f32r(t), t_max)).collect();
    let mut levels: Vec<Level> = sig.iter().map(|&s| Level::of_sigma(f32r(s))).collect();
    levels.push(Level::of_sigma(0.0));
    Path { timesteps, levels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        for (k, n) in [
            (SigmaSchedule::Default, "default"),
            (SigmaSchedule::Karras, "karras"),
            (SigmaSchedule::Exponential, "exponential"),
        ] {
            assert_eq!(n.parse::<SigmaSchedule>(), Ok(k));
            assert_eq!(k.to_string(), n);
        }
        assert_eq!(
            "exp".parse::<SigmaSchedule>(),
            Ok(SigmaSchedule::Exponential)
        );
        let e = "beta".parse::<SigmaSchedule>().unwrap_err();
        assert!(e.contains(SigmaSchedule::NAMES), "{e}");
    }

    /// Closed forms: Karras ends at σ_max and σ_min with σ^(1/7) linear between; exponential
    /// has a constant ratio; σ_to_t inverts the table at its own points.
    #[test]
    fn karras_and_exponential_sigmas_follow_their_definitions() {
        let k = karras(80.0, 0.002, 5);
        assert!((k[0] - 80.0).abs() < 1e-12 && (k[4] - 0.002).abs() < 1e-15);
        let r: Vec<f64> = k.iter().map(|s| s.powf(1.0 / 7.0)).collect();
        for w in r.windows(3) {
            assert!(((w[0] - w[1]) - (w[1] - w[2])).abs() < 1e-12);
        }
        let e = exponential(80.0, 0.002, 6);
        for w in e.windows(3) {
            assert!((w[0] / w[1] - w[1] / w[2]).abs() < 1e-12);
        }
        let sched = Schedule::tutorial();
        let table = train_sigmas(&sched);
        let logs: Vec<f64> = table.iter().map(|s| s.ln()).collect();
        for t in [0usize, 1, 17, 500, 998, 999] {
            assert!((sigma_to_t(table[t], &logs) - t as f64).abs() < 1e-9, "{t}");
        }
        // Halfway in log σ between two timesteps is halfway in t.
        let mid = ((logs[10] + logs[11]) / 2.0).exp();
        assert!((sigma_to_t(mid, &logs) - 10.5).abs() < 1e-9);
    }
}
