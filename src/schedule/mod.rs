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

    /// Largest |table − independent f64 value| for β and α: measured 1.11e-16 (x86 avx512).
    const TABLE_TOL: f64 = 3.3e-16;
    /// Largest relative error of ᾱ against exp(Σ ln(1 − β)): measured 9.68e-15 (x86).
    const ALPHA_BAR_REL_TOL: f64 = 2.9e-14;
    /// Largest |coef1| and |coef2| errors (the division by 1 − ᾱ near t = 0): measured
    /// 1.89e-13 and 1.20e-13 (x86).
    const COEF1_TOL: f64 = 5.7e-13;
    const COEF2_TOL: f64 = 3.6e-13;
    /// Largest β̃ error: measured 2.64e-17 (x86).
    const POSTERIOR_VAR_TOL: f64 = 8e-17;
    /// Largest √ᾱ and √(1−ᾱ) errors: measured 4.44e-16 and 2.94e-15 (x86).
    const SQRT_AB_TOL: f64 = 1.3e-15;
    const SQRT_ONE_MINUS_AB_TOL: f64 = 8.8e-15;

    #[test]
    fn static_tables_match_an_independent_f64_recomputation() {
        let s = Schedule::tutorial();
        assert!(s.is_static());
        assert_eq!(s.len(), 1000);
        let mut w = [0f64; 7];
        for t in 0..1000 {
            let beta = 1e-4 + (0.02 - 1e-4) * t as f64 / 999.0;
            w[0] = w[0].max((s.betas[t] - beta).abs());
            w[0] = w[0].max((s.alphas[t] - (1.0 - beta)).abs());
        }
        let ab = alpha_bar_via_logs(&s.betas);
        for t in 0..1000 {
            w[1] = w[1].max((s.alpha_bars[t] - ab[t]).abs() / ab[t]);
            let prev = if t == 0 { 1.0 } else { ab[t - 1] };
            let c1 = (1.0 - s.betas[t]).sqrt() * (1.0 - prev) / (1.0 - ab[t]);
            let c2 = prev.sqrt() * s.betas[t] / (1.0 - ab[t]);
            let pv = (1.0 - prev) / (1.0 - ab[t]) * s.betas[t];
            w[2] = w[2].max((s.coef1[t] - c1).abs());
            w[3] = w[3].max((s.coef2[t] - c2).abs());
            w[4] = w[4].max((s.posterior_variance[t] - pv).abs());
            w[5] = w[5].max((s.sqrt_alpha_bars[t] - ab[t].sqrt()).abs());
            w[6] = w[6].max((s.sqrt_one_minus_alpha_bars[t] - (1.0 - ab[t]).sqrt()).abs());
        }
        eprintln!("table errors {:?}", w.map(|v| format!("{v:.2e}")));
        assert!(w[0] < TABLE_TOL, "beta/alpha {:e}", w[0]);
        assert!(w[1] < ALPHA_BAR_REL_TOL, "alpha_bar rel {:e}", w[1]);
        assert!(w[2] < COEF1_TOL, "coef1 {:e}", w[2]);
        assert!(w[3] < COEF2_TOL, "coef2 {:e}", w[3]);
        assert!(w[4] < POSTERIOR_VAR_TOL, "posterior var {:e}", w[4]);
        assert!(w[5] < SQRT_AB_TOL, "sqrt(alpha_bar) {:e}", w[5]);
        assert!(
            w[6] < SQRT_ONE_MINUS_AB_TOL,
            "sqrt(1 - alpha_bar) {:e}",
            w[6]
        );
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

    /// |ᾱ − f(t+1)/f(0)|: measured 4.44e-16 (x86 avx512 and qemu NEON alike).
    const COSINE_TOL: f64 = 1.3e-15;
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
            assert!((s.alpha_bars[t] - want).abs() < COSINE_TOL, "t={t}");
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

    #[test]
    fn names_parse_and_display() {
        for (b, name, aliases) in [
            (BetaSchedule::Linear, "linear", &["linear"][..]),
            (
                BetaSchedule::ScaledLinear,
                "scaled_linear",
                &["scaled_linear"][..],
            ),
            (
                BetaSchedule::Cosine,
                "squaredcos_cap_v2",
                &["cosine", "squaredcos_cap_v2"][..],
            ),
        ] {
            assert_eq!(b.name(), name);
            assert_eq!(b.to_string(), name);
            for a in aliases {
                assert_eq!(a.parse::<BetaSchedule>(), Ok(b), "{a}");
            }
        }
        let e = "sigmoid".parse::<BetaSchedule>().unwrap_err();
        assert!(
            e.contains("sigmoid") && e.contains(BetaSchedule::NAMES),
            "{e}"
        );
    }

    #[test]
    fn only_the_seeds_config_uses_the_static_tables() {
        assert!(ScheduleConfig::default().is_seed());
        let s = Schedule::new(ScheduleConfig::default()).unwrap();
        assert!(s.is_static() && !s.is_empty() && s.len() == 1000);
        for other in [
            ScheduleConfig {
                beta_end: 0.012,
                ..Default::default()
            },
            ScheduleConfig {
                num_train_timesteps: 500,
                ..Default::default()
            },
            ScheduleConfig {
                beta_schedule: BetaSchedule::ScaledLinear,
                ..Default::default()
            },
        ] {
            assert!(!other.is_seed(), "{other:?}");
            let s = Schedule::new(other).unwrap();
            assert!(!s.is_static() && !s.is_empty());
            assert_eq!(s.len(), other.num_train_timesteps);
        }
        let empty = Schedule {
            betas: Cow::Owned(vec![]),
            ..Schedule::tutorial()
        };
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
    }

    #[test]
    fn alpha_bar_or_one_is_one_before_the_first_step() {
        let s = Schedule::tutorial();
        assert_eq!(s.alpha_bar_or_one(None), 1.0);
        for t in [0usize, 1, 999] {
            assert_eq!(s.alpha_bar_or_one(Some(t)), s.alpha_bars[t]);
        }
    }

    /// Relative error of β against the closed forms (f64 rounding): measured 6.85e-16 (x86).
    const BETA_REL_TOL: f64 = 2.1e-15;
    /// linspace(start, end, T) and diffusers' scaled_linear = linspace(√start, √end, T)², in
    /// closed form; T = 1 is [start] (torch.linspace's one point).
    #[test]
    fn beta_spacings_are_the_closed_forms() {
        assert_eq!(math::linear_betas(1, 0.3, 0.7), [0.3]);
        assert_eq!(math::linear_betas(2, 0.3, 0.7), [0.3, 0.7]);
        let (lo, hi) = (0.00085f64, 0.012f64);
        let t_max = 10;
        let lin = math::linear_betas(t_max, lo, hi);
        let scaled = math::scaled_linear_betas(t_max, lo, hi);
        assert_eq!(lin.len(), t_max);
        assert_eq!(scaled.len(), t_max);
        let mut worst = 0f64;
        for i in 0..t_max {
            let u = i as f64 / (t_max - 1) as f64;
            let want_lin = lo * (1.0 - u) + hi * u;
            let r = lo.sqrt() * (1.0 - u) + hi.sqrt() * u;
            let e = ((lin[i] - want_lin).abs() / want_lin).max((scaled[i] - r * r).abs() / (r * r));
            assert!(
                e < BETA_REL_TOL,
                "beta[{i}]: {} {} vs {want_lin} {}",
                lin[i],
                scaled[i],
                r * r
            );
            worst = worst.max(e);
        }
        eprintln!("beta spacings: worst relative error {worst:.2e}");
        assert_eq!(math::cosine_betas(7).len(), 7);
    }
}
