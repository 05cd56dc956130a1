//! Euler's method on the probability-flow ODE in σ (Karras et al. 2022), as diffusers'
//! `EulerDiscreteScheduler` runs it by default (`timestep_spacing="linspace"`,
//! `interpolation_type="linear"`, `final_sigmas_type="zero"`, no churn).
//!
//! In σ space, with x̂0 the network's estimate at σ: x_σ' = x_σ + (σ' − σ)·(x_σ − x̂0)/σ.
//! The state is kept where the network reads it, x = a·x_σ with a = 1/√(σ² + 1), s = σ·a
//! ([`super::sigmas`]), so one step is x' = (s'/s)·x + a'·(1 − σ'/σ)·x̂0, and the last
//! (σ' = 0) returns x̂0.
use super::common::{x0_into, Prediction, Sampler, SamplerConfig};
use super::sigmas::{euler_path, Level};
use crate::schedule::Schedule;

#[derive(Clone, Copy, Debug)]
struct Coefs {
    a: f32,
    s: f32,
    /// s'/s: weight of x.
    kx: f32,
    /// a'·(1 − σ'/σ): weight of x̂0.
    k0: f32,
}

pub struct Euler {
    timesteps: Vec<usize>,
    coefs: Vec<Coefs>,
    init_scale: f32,
    prediction: Prediction,
}

/// diffusers' `init_noise_sigma` in the network's input space: σ_max·a_max (= s of the first
/// level) for linspace and trailing spacing, √(σ_max² + 1)·a_max = 1 for leading.
pub(crate) fn init_scale(cfg: &SamplerConfig, first: Level) -> f32 {
    match cfg.spacing() {
        super::Spacing::Leading => 1.0,
        _ => first.s as f32,
    }
}

impl Euler {
    pub fn new(cfg: &SamplerConfig, schedule: &Schedule) -> Euler {
        let path = euler_path(schedule, cfg.spacing(), cfg.sigmas, cfg.steps);
        let coefs = path
            .levels
            .windows(2)
            .map(|w| {
                let (l, n) = (w[0], w[1]);
                Coefs {
                    a: l.a as f32,
                    s: l.s as f32,
                    kx: (n.s / l.s) as f32,
                    k0: (n.a * (1.0 - n.sigma() / l.sigma())) as f32,
                }
            })
            .collect();
        Euler {
            init_scale: init_scale(cfg, path.levels[0]),
            timesteps: path.timesteps,
            coefs,
            prediction: cfg.prediction,
        }
    }
}

impl Sampler for Euler {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn noise_std(&self, _i: usize) -> f32 {
        0.0
    }

    fn reset(&mut self) {}

    fn init_noise_scale(&self) -> f32 {
        self.init_scale
    }

    fn step(&mut self, i: usize, x: &mut [f32], model_out: &[f32], _noise: &[f32]) {
        let c = self.coefs[i];
        let pred = self.prediction;
        for (xv, &m) in x.iter_mut().zip(model_out) {
            let x0 = pred.x0_eps(*xv, m, c.a, c.s).0;
            *xv = c.kx * *xv + c.k0 * x0;
        }
    }

    fn level(&self, i: usize) -> (f32, f32) {
        (self.coefs[i].a, self.coefs[i].s)
    }

    fn predict_x0(&self, i: usize, x: &[f32], model_out: &[f32], out: &mut [f32]) {
        let c = self.coefs[i];
        x0_into(self.prediction, c.a, c.s, x, model_out, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::reference::{alpha_bars, err, inputs, x0_eps, PREDICTIONS};
    use crate::sampler::{SamplerKind, SigmaSchedule, Spacing};

    /// Largest |ours − f64 diffusers| / (1 + |want|) of one step from the same x, over the
    /// predictions, spacings and sigma schedules below. Measured worst 1.87e-7 (x86; qemu A72 and A76 the same).
    const EULER_STEP_TOL: f64 = 5.6e-7;

    /// diffusers' Euler step in σ space, in f64: x_σ = x/a, x̂0 from the prediction, then
    /// x_σ + (σ' − σ)(x_σ − x̂0)/σ, back to the network's space (× a').
    #[test]
    fn every_step_is_diffusers_euler_in_f64() {
        let ab = alpha_bars();
        let sched = Schedule::tutorial();
        let mut worst = 0f64;
        for prediction in PREDICTIONS {
            for (spacing, sigmas) in [
                (Spacing::Linspace, SigmaSchedule::Default),
                (Spacing::Leading, SigmaSchedule::Default),
                (Spacing::Trailing, SigmaSchedule::Default),
                (Spacing::Linspace, SigmaSchedule::Karras),
                (Spacing::Linspace, SigmaSchedule::Exponential),
            ] {
                let cfg = SamplerConfig {
                    kind: SamplerKind::Euler,
                    steps: 12,
                    spacing: Some(spacing),
                    prediction,
                    sigmas,
                    ..Default::default()
                };
                let mut e = Euler::new(&cfg, &sched);
                let path = euler_path(&sched, spacing, sigmas, 12);
                // The levels are the schedule's (interpolated) ones.
                if sigmas == SigmaSchedule::Default && spacing != Spacing::Linspace {
                    for (l, &t) in path.levels.iter().zip(&path.timesteps) {
                        let want = ((1.0 - ab[t]) / ab[t]).sqrt();
                        assert!((l.sigma() - want).abs() <= 1e-6 * want, "{t}");
                    }
                }
                for i in 0..12 {
                    let x = inputs(64, 3 + i as u64, 2.0);
                    let m = inputs(64, 100 + i as u64, 2.0);
                    let mut got = x.clone();
                    e.step(i, &mut got, &m, &[]);
                    let (l, n) = (path.levels[i], path.levels[i + 1]);
                    for k in 0..64 {
                        let ab_l = l.a * l.a;
                        let x_sigma = x[k] as f64 / l.a;
                        let (x0, _) = x0_eps(prediction, x[k] as f64, m[k] as f64, ab_l);
                        let want =
                            n.a * (x_sigma + (n.sigma() - l.sigma()) * (x_sigma - x0) / l.sigma());
                        let e = err(got[k], want);
                        worst = worst.max(e);
                        assert!(
                            e < EULER_STEP_TOL,
                            "{prediction:?} {spacing:?} {sigmas:?} step {i}: {} vs {want}",
                            got[k]
                        );
                    }
                }
            }
        }
        eprintln!("euler step worst {worst:.2e}");
    }
}
