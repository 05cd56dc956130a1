//! Heun's second-order method (Karras et al. 2022, Algorithm 1, no churn), as diffusers'
//! `HeunDiscreteScheduler` runs it: S noise levels, every step but the last one an Euler step
//! to the next level followed by a second network call there that averages the two slopes;
//! 2S − 1 network calls in all.
//!
//! Call 2k (first order, σ → σ'): d = (x_σ − x̂0)/σ, x_σ' = x_σ + (σ' − σ)·d (the last call,
//! σ' = 0, returns x̂0). Call 2k + 1 (second order, at σ'): d' = (x_σ' − x̂0')/σ', then
//! x_σ' = x_σ + (σ' − σ)·(d + d')/2 from the x_σ of the first call. The state is kept in the
//! network's space, x = a·x_σ ([`super::sigmas`]); x_σ and d are kept in f32 as diffusers does.
use super::common::{x0_into, Prediction, Sampler, SamplerConfig};
use super::euler::init_scale;
use super::sigmas::euler_path;
use crate::schedule::Schedule;

#[derive(Clone, Copy, Debug)]
struct Call {
    /// The level the network saw: √ᾱ, √(1 − ᾱ), and 1/a, 1/σ.
    a: f32,
    s: f32,
    inv_a: f32,
    inv_sigma: f32,
    /// σ' − σ of the step this call belongs to.
    dt: f32,
    /// a of the level this call ends at.
    a_end: f32,
    second: bool,
}

pub struct Heun {
    timesteps: Vec<usize>,
    calls: Vec<Call>,
    init_scale: f32,
    prediction: Prediction,
    /// x_σ at the first call of the current step, and its slope d.
    x_sigma: Vec<f32>,
    slope: Vec<f32>,
}

impl Heun {
    pub fn new(cfg: &SamplerConfig, schedule: &Schedule) -> Heun {
        let path = euler_path(schedule, cfg.spacing(), cfg.sigmas, cfg.steps);
        let n = path.timesteps.len();
        let (mut timesteps, mut calls) = (Vec::new(), Vec::new());
        for k in 0..n {
            let (l, next) = (path.levels[k], path.levels[k + 1]);
            let dt = (next.sigma() - l.sigma()) as f32;
            // Diffusers' interleaving: [t0, t1, t1, t2, t2, …]; level k's second call is the
            // previous step's second order, made before level k's first.
            if k > 0 {
                let p = path.levels[k - 1];
                calls.push(Call {
                    a: l.a as f32,
                    s: l.s as f32,
                    inv_a: (1.0 / l.a) as f32,
                    inv_sigma: (1.0 / l.sigma()) as f32,
                    dt: (l.sigma() - p.sigma()) as f32,
                    a_end: l.a as f32,
                    second: true,
                });
                timesteps.push(path.timesteps[k]);
            }
            calls.push(Call {
                a: l.a as f32,
                s: l.s as f32,
                inv_a: (1.0 / l.a) as f32,
                inv_sigma: (1.0 / l.sigma()) as f32,
                dt,
                a_end: next.a as f32,
                second: false,
            });
            timesteps.push(path.timesteps[k]);
        }
        Heun {
            init_scale: init_scale(cfg, path.levels[0]),
            timesteps,
            calls,
            prediction: cfg.prediction,
            x_sigma: Vec::new(),
            slope: Vec::new(),
        }
    }
}

impl Sampler for Heun {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn noise_std(&self, _i: usize) -> f32 {
        0.0
    }

    fn prepare(&mut self, len: usize) {
        self.x_sigma.resize(len, 0.0);
        self.slope.resize(len, 0.0);
    }

    fn reset(&mut self) {}

    fn init_noise_scale(&self) -> f32 {
        self.init_scale
    }

    fn step(&mut self, i: usize, x: &mut [f32], model_out: &[f32], _noise: &[f32]) {
        let c = self.calls[i];
        let pred = self.prediction;
        if self.x_sigma.len() < x.len() {
            // `prepare` was not called: size once (outside any hot loop in practice).
            self.prepare(x.len());
        }
        let (xs, d) = (&mut self.x_sigma[..x.len()], &mut self.slope[..x.len()]);
        if c.second {
            for (((xv, &m), xs), d) in x.iter_mut().zip(model_out).zip(xs).zip(d) {
                let x0 = pred.x0_eps(*xv, m, c.a, c.s).0;
                let d2 = (*xv * c.inv_a - x0) * c.inv_sigma;
                *xv = (*xs + (*d + d2) * 0.5 * c.dt) * c.a_end;
            }
        } else {
            for (((xv, &m), xs), d) in x.iter_mut().zip(model_out).zip(xs).zip(d) {
                let x0 = pred.x0_eps(*xv, m, c.a, c.s).0;
                *xs = *xv * c.inv_a;
                *d = (*xs - x0) * c.inv_sigma;
                *xv = (*xs + *d * c.dt) * c.a_end;
            }
        }
    }

    fn level(&self, i: usize) -> (f32, f32) {
        (self.calls[i].a, self.calls[i].s)
    }

    fn predict_x0(&self, i: usize, x: &[f32], model_out: &[f32], out: &mut [f32]) {
        let c = self.calls[i];
        x0_into(self.prediction, c.a, c.s, x, model_out, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::reference::{inputs, x0_eps, PREDICTIONS};
    use crate::sampler::{SamplerKind, SigmaSchedule, Spacing};

    /// Largest |ours − f64 diffusers| of a whole Heun step (both calls) from the same x, over
    /// 1 + the size of the terms summed (the second slope divides by σ', which magnifies f32
    /// rounding near the end of the chain), over the predictions and schedules below.
    /// Measured worst 8.35e-8 (x86; qemu A72 and A76 the same).
    const HEUN_STEP_TOL: f64 = 2.5e-7;

    /// 2S − 1 calls at diffusers' interleaved timesteps, and each step (both calls) against
    /// Heun's method in σ space in f64, fed the same model outputs.
    #[test]
    fn every_step_is_diffusers_heun_in_f64() {
        let sched = Schedule::tutorial();
        let mut worst = 0f64;
        for prediction in PREDICTIONS {
            for (spacing, sigmas) in [
                (Spacing::Linspace, SigmaSchedule::Default),
                (Spacing::Trailing, SigmaSchedule::Default),
                (Spacing::Linspace, SigmaSchedule::Karras),
            ] {
                let steps = 6;
                let cfg = SamplerConfig {
                    kind: SamplerKind::Heun,
                    steps,
                    spacing: Some(spacing),
                    prediction,
                    sigmas,
                    ..Default::default()
                };
                let mut h = Heun::new(&cfg, &sched);
                let path = euler_path(&sched, spacing, sigmas, steps);
                let ts = h.timesteps().to_vec();
                assert_eq!(ts.len(), 2 * steps - 1);
                assert_eq!(ts[0], path.timesteps[0]);
                for k in 1..steps {
                    assert_eq!(
                        (ts[2 * k - 1], ts[2 * k]),
                        (path.timesteps[k], path.timesteps[k])
                    );
                }
                h.prepare(32);
                for k in 0..steps {
                    let (l, n) = (path.levels[k], path.levels[k + 1]);
                    let x = inputs(32, 3 + k as u64, 2.0);
                    let m1 = inputs(32, 100 + k as u64, 2.0);
                    let m2 = inputs(32, 200 + k as u64, 2.0);
                    let mut got = x.clone();
                    h.step(2 * k, &mut got, &m1, &[]);
                    let mid = got.clone();
                    let last = k + 1 == steps;
                    if !last {
                        h.step(2 * k + 1, &mut got, &m2, &[]);
                    }
                    for j in 0..32 {
                        let xs = x[j] as f64 / l.a;
                        let x0 = x0_eps(prediction, x[j] as f64, m1[j] as f64, l.a * l.a).0;
                        let d = (xs - x0) / l.sigma();
                        let dt = n.sigma() - l.sigma();
                        // The size of the terms that are summed (each carries f32 rounding):
                        // the second slope divides by σ', small at the end of the chain.
                        let (want, size) = if last {
                            (xs + d * dt, 1.0 + xs.abs() + x0.abs())
                        } else {
                            let xm = mid[j] as f64; // the second call's input, as the network saw it
                            let x0m = x0_eps(prediction, xm, m2[j] as f64, n.a * n.a).0;
                            let d2 = (xm / n.a - x0m) / n.sigma();
                            let terms = xs.abs()
                                + (d.abs() + (xm / n.a).abs() / n.sigma() + x0m.abs() / n.sigma())
                                    * dt.abs();
                            (n.a * (xs + (d + d2) / 2.0 * dt), 1.0 + n.a * terms)
                        };
                        let e = (got[j] as f64 - want).abs() / size;
                        worst = worst.max(e);
                        assert!(
                            e < HEUN_STEP_TOL,
                            "{prediction:?} {spacing:?} {sigmas:?} step {k}: {} vs {want} ({e:.2e})",
                            got[j]
                        );
                    }
                }
            }
        }
        eprintln!("heun step worst {worst:.2e}");
    }
}
