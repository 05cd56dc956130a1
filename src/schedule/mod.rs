//! Noise schedules: β_t and everything derived from it.
//!
//! The seed's schedule (linear, β 1e-4 → 0.02, T = 1000) is computed at build time and lives in
//! `static` arrays ([`tables`]); any other schedule is computed once at load into buffers owned
//! by the [`Schedule`]. Samplers only read from a `Schedule`, never recompute it.

pub mod math;
pub mod tables;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// How β_t is spread over the training timesteps (diffusers `beta_schedule` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// β linear in t (DDPM; the seed).
    Linear,
    /// β linear in √β (Stable Diffusion).
    ScaledLinear,
    /// Nichol & Dhariwal's cosine ᾱ (diffusers `squaredcos_cap_v2`); ignores the β range.
    Cosine,
}

impl BetaSchedule {
    pub const NAMES: &'static str = "linear, scaled_linear, cosine (squaredcos_cap_v2)";
    pub fn name(self) -> &'static str {
        match self {
            BetaSchedule::Linear => "linear",
            BetaSchedule::ScaledLinear => "scaled_linear",
            BetaSchedule::Cosine => "squaredcos_cap_v2",
        }
    }
}

impl FromStr for BetaSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linear" => Ok(BetaSchedule::Linear),
            "scaled_linear" => Ok(BetaSchedule::ScaledLinear),
            "cosine" | "squaredcos_cap_v2" => Ok(BetaSchedule::Cosine),
            other => Err(format!(
                "unknown beta schedule '{other}' (valid: {})",
                BetaSchedule::NAMES
            )),
        }
    }
}

impl fmt::Display for BetaSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The parameters that define a schedule; the seed's by default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScheduleConfig {
    pub beta_schedule: BetaSchedule,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            beta_schedule: BetaSchedule::Linear,
            num_train_timesteps: tables::SEED_T,
            beta_start: tables::SEED_BETA_START,
            beta_end: tables::SEED_BETA_END,
        }
    }
}

impl ScheduleConfig {
    /// True when this is exactly the schedule baked into [`tables`].
    pub fn is_seed(&self) -> bool {
        *self == ScheduleConfig::default()
    }
}

/// Per-timestep tables, indexed by the training timestep t = 0..T-1.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub config: ScheduleConfig,
    pub betas: Cow<'static, [f64]>,
    pub alphas: Cow<'static, [f64]>,
    pub alpha_bars: Cow<'static, [f64]>,
    pub sqrt_alpha_bars: Cow<'static, [f64]>,
    pub sqrt_one_minus_alpha_bars: Cow<'static, [f64]>,
    pub coef1: Cow<'static, [f64]>,
    pub coef2: Cow<'static, [f64]>,
    pub posterior_variance: Cow<'static, [f64]>,
}

impl Schedule {
    /// The tutorial's schedule (the seed project's: linear β 1e-4 → 0.02, T = 1000), borrowed
    /// from static memory: no computation, no allocation.
    pub fn tutorial() -> Schedule {
        Schedule {
            config: ScheduleConfig::default(),
            betas: Cow::Borrowed(&tables::BETAS),
            alphas: Cow::Borrowed(&tables::ALPHAS),
            alpha_bars: Cow::Borrowed(&tables::ALPHA_BARS),
            sqrt_alpha_bars: Cow::Borrowed(&tables::SQRT_ALPHA_BARS),
            sqrt_one_minus_alpha_bars: Cow::Borrowed(&tables::SQRT_ONE_MINUS_ALPHA_BARS),
            coef1: Cow::Borrowed(&tables::COEF1),
            coef2: Cow::Borrowed(&tables::COEF2),
            posterior_variance: Cow::Borrowed(&tables::POSTERIOR_VARIANCE),
        }
    }

    /// Builds the schedule for `config`: the static tables for the seed's, else computed once.
    pub fn new(config: ScheduleConfig) -> Result<Schedule, Error> {
        if config.is_seed() {
            return Ok(Schedule::tutorial());
        }
        let t = config.num_train_timesteps;
        if !(2..=100_000).contains(&t) {
            return Err(Error::input(format!(
                "num_train_timesteps must be in 2..=100000, found {t}"
            )));
        }
        if config.beta_schedule != BetaSchedule::Cosine
            && !(config.beta_start > 0.0
                && config.beta_end < 1.0
                && config.beta_start <= config.beta_end)
        {
            return Err(Error::input(format!(
                "beta range must satisfy 0 < beta_start <= beta_end < 1, found {} .. {}",
                config.beta_start, config.beta_end
            )));
        }
        let betas = match config.beta_schedule {
            BetaSchedule::Linear => math::linear_betas(t, config.beta_start, config.beta_end),
            BetaSchedule::ScaledLinear => {
                math::scaled_linear_betas(t, config.beta_start, config.beta_end)
            }
            BetaSchedule::Cosine => math::cosine_betas(t),
        };
        let d = math::derive(&betas);
        Ok(Schedule {
            config,
            betas: Cow::Owned(betas),
            alphas: Cow::Owned(d.alphas),
            alpha_bars: Cow::Owned(d.alpha_bars),
            sqrt_alpha_bars: Cow::Owned(d.sqrt_alpha_bars),
            sqrt_one_minus_alpha_bars: Cow::Owned(d.sqrt_one_minus_alpha_bars),
            coef1: Cow::Owned(d.coef1),
            coef2: Cow::Owned(d.coef2),
            posterior_variance: Cow::Owned(d.posterior_variance),
        })
    }

    /// T, the number of training timesteps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// True when the tables are the static, build-time ones.
    pub fn is_static(&self) -> bool {
        matches!(self.betas, Cow::Borrowed(_))
    }

    /// ᾱ at training step `t`, with ᾱ = 1 "before the first step" (`t = None`).
    pub fn alpha_bar_or_one(&self, t: Option<usize>) -> f64 {
        t.map_or(1.0, |t| self.alpha_bars[t])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ᾱ by an independent route: exp(Σ ln(1 − β)) instead of a running product.
    fn alpha_bar_via_logs(betas: &[f64]) -> Vec<f64> {
        let mut s = 0.0f64;
        betas
            .iter()
            .map(|b| {
                s += (-b).ln_1p();
                s.exp()
            })
            .collect()
    }

    const TABLE_TOL: f64 = 1e-12;

    #[test]
    fn static_tables_match_an_independent_f64_recomputation() {
        let s = Schedule::tutorial();
        assert!(s.is_static());
        assert_eq!(s.len(), 1000);
        for t in 0..1000 {
            let beta = 1e-4 + (0.02 - 1e-4) * t as f64 / 999.0;
            assert!((s.betas[t] - beta).abs() < TABLE_TOL, "beta[{t}]");
            assert!((s.alphas[t] - (1.0 - beta)).abs() < TABLE_TOL);
        }
        let ab = alpha_bar_via_logs(&s.betas);
        for t in 0..1000 {
            let rel = (s.alpha_bars[t] - ab[t]).abs() / ab[t];
            assert!(rel < 1e-10, "alpha_bar[{t}] rel err {rel}");
            let prev = if t == 0 { 1.0 } else { ab[t - 1] };
            let c1 = (1.0 - s.betas[t]).sqrt() * (1.0 - prev) / (1.0 - ab[t]);
            let c2 = prev.sqrt() * s.betas[t] / (1.0 - ab[t]);
            let pv = (1.0 - prev) / (1.0 - ab[t]) * s.betas[t];
            assert!((s.coef1[t] - c1).abs() < 1e-9, "coef1[{t}]");
            assert!((s.coef2[t] - c2).abs() < 1e-9, "coef2[{t}]");
            assert!(
                (s.posterior_variance[t] - pv).abs() < 1e-12,
                "posterior var[{t}]"
            );
            assert!((s.sqrt_alpha_bars[t] - ab[t].sqrt()).abs() < 1e-10);
            assert!((s.sqrt_one_minus_alpha_bars[t] - (1.0 - ab[t]).sqrt()).abs() < 1e-10);
        }
    }

    #[test]
    fn static_tables_equal_the_runtime_computation() {
        let runtime = math::linear_betas(1000, 1e-4, 0.02);
        let d = math::derive(&runtime);
        let s = Schedule::tutorial();
        assert_eq!(&s.betas[..], &runtime[..]);
        assert_eq!(&s.alpha_bars[..], &d.alpha_bars[..]);
        assert_eq!(&s.coef1[..], &d.coef1[..]);
    }

    #[test]
    fn alpha_bar_decreases_within_bounds_for_every_schedule() {
        for kind in [
            BetaSchedule::Linear,
            BetaSchedule::ScaledLinear,
            BetaSchedule::Cosine,
        ] {
            let s = Schedule::new(ScheduleConfig {
                beta_schedule: kind,
                num_train_timesteps: 1000,
                beta_start: 0.00085,
                beta_end: 0.012,
            })
            .unwrap();
            assert!(!s.is_static());
            for t in 0..s.len() {
                assert!(
                    s.alpha_bars[t] > 0.0 && s.alpha_bars[t] <= 1.0,
                    "{kind} t={t}"
                );
                if t > 0 {
                    assert!(s.alpha_bars[t] < s.alpha_bars[t - 1], "{kind} t={t}");
                }
            }
        }
    }

    #[test]
    fn cosine_alpha_bar_follows_the_closed_form_until_the_cap() {
        // ᾱ(t) = f(t)/f(0) exactly while β < 0.999 (the product telescopes).
        let s = Schedule::new(ScheduleConfig {
            beta_schedule: BetaSchedule::Cosine,
            ..Default::default()
        })
        .unwrap();
        let f = |u: f64| {
            ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        for t in [0usize, 10, 500, 900, 990] {
            let want = f((t + 1) as f64 / 1000.0) / f(0.0);
            assert!((s.alpha_bars[t] - want).abs() < 1e-9, "t={t}");
        }
        assert!(s.betas.iter().all(|&b| b <= 0.999));
    }

    #[test]
    fn bad_configs_are_rejected() {
        let bad = ScheduleConfig {
            beta_start: 0.5,
            beta_end: 0.1,
            ..Default::default()
        };
        assert!(Schedule::new(bad).is_err());
        let bad = ScheduleConfig {
            num_train_timesteps: 1,
            ..Default::default()
        };
        assert!(Schedule::new(bad).is_err());
    }
}
