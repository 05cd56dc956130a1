//! Euler ancestral, as diffusers' `EulerAncestralDiscreteScheduler` runs it (linspace spacing,
//! linear interpolation, σ = 0 after the last step).
//!
//! From σ to σ': σ_up = √(σ'²(σ² − σ'²)/σ²), σ_down = √(σ'² − σ_up²); an Euler step down to
//! σ_down, then fresh noise of standard deviation σ_up: x_σ' = x_σ + (σ_down − σ)·(x_σ −
//! x̂0)/σ + σ_up·z. In the network's space (x = a·x_σ, [`super::sigmas`]):
//! x' = (a'σ_down/(aσ))·x + a'(1 − σ_down/σ)·x̂0 + a'σ_up·z. The last step (σ' = 0) adds no
//! noise and returns x̂0.
use super::common::{x0_into, Prediction, Sampler, SamplerConfig};
use super::euler::init_scale;
use super::sigmas::{euler_path, SigmaSchedule};
use crate::schedule::Schedule;

#[derive(Clone, Copy, Debug)]
struct Coefs {
    a: f32,
    s: f32,
    /// a'σ_down/(aσ): weight of x.
    kx: f32,
    /// a'(1 − σ_down/σ): weight of x̂0.
    k0: f32,
    /// a'σ_up: standard deviation of the noise added.
    noise: f32,
}

pub struct EulerAncestral {
    timesteps: Vec<usize>,
    coefs: Vec<Coefs>,
    init_scale: f32,
    prediction: Prediction,
}

impl EulerAncestral {
    pub fn new(cfg: &SamplerConfig, schedule: &Schedule) -> EulerAncestral {
        // diffusers' EulerAncestral takes no Karras or exponential σ (validated before).
        let path = euler_path(schedule, cfg.spacing(), SigmaSchedule::Default, cfg.steps);
        let coefs = path
            .levels
            .windows(2)
            .map(|w| {
                let (l, n) = (w[0], w[1]);
                let (sigma, next) = (l.sigma(), n.sigma());
                let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
                let down = (next * next - up * up).max(0.0).sqrt();
                Coefs {
                    a: l.a as f32,
                    s: l.s as f32,
                    kx: (n.a * down / (l.a * sigma)) as f32,
                    k0: (n.a * (1.0 - down / sigma)) as f32,
                    noise: (n.a * up) as f32,
                }
            })
            .collect();
        EulerAncestral {
            init_scale: init_scale(cfg, path.levels[0]),
            timesteps: path.timesteps,
            coefs,
            prediction: cfg.prediction,
        }
    }
}

impl Sampler for EulerAncestral {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn noise_std(&self, i: usize) -> f32 {
        self.coefs[i].noise
    }

    fn reset(&mut self) {}

    fn init_noise_scale(&self) -> f32 {
        self.init_scale
    }

    fn step(&mut self, i: usize, x: &mut [f32], model_out: &[f32], noise: &[f32]) {
        let c = self.coefs[i];
        let pred = self.prediction;
        if c.noise > 0.0 {
            for ((xv, &m), &z) in x.iter_mut().zip(model_out).zip(noise) {
                let x0 = pred.x0_eps(*xv, m, c.a, c.s).0;
                *xv = c.kx * *xv + c.k0 * x0 + c.noise * z;
            }
        } else {
            for (xv, &m) in x.iter_mut().zip(model_out) {
                let x0 = pred.x0_eps(*xv, m, c.a, c.s).0;
                *xv = c.kx * *xv + c.k0 * x0;
            }
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
    use crate::sampler::reference::{err, inputs, x0_eps, PREDICTIONS};
    use crate::sampler::{SamplerKind, Spacing};

    /// Largest |ours − f64 diffusers| / (1 + |want|) of one step from the same x and noise.
    /// Measured worst 2.91e-7 (x86; qemu A72 and A76 the same).
    const EULER_A_STEP_TOL: f64 = 8.7e-7;

    /// diffusers' ancestral step in σ space, in f64, with the same noise; the noise it adds
    /// has variance σ_up² in σ space, and σ_down² + σ_up² = σ'².
    #[test]
    fn every_step_is_diffusers_euler_ancestral_in_f64() {
        let sched = Schedule::tutorial();
        let mut worst = 0f64;
        for prediction in PREDICTIONS {
            for spacing in [Spacing::Linspace, Spacing::Leading, Spacing::Trailing] {
                let cfg = SamplerConfig {
                    kind: SamplerKind::EulerAncestral,
                    steps: 10,
                    spacing: Some(spacing),
                    prediction,
                    ..Default::default()
                };
                let mut e = EulerAncestral::new(&cfg, &sched);
                let path = euler_path(&sched, spacing, SigmaSchedule::Default, 10);
                for i in 0..10 {
                    let (l, n) = (path.levels[i], path.levels[i + 1]);
                    let (sigma, next) = (l.sigma(), n.sigma());
                    let up2 = next * next * (sigma * sigma - next * next) / (sigma * sigma);
                    let down = (next * next - up2).sqrt();
                    assert!((e.noise_std(i) as f64 - n.a * up2.sqrt()).abs() < 1e-6);
                    assert_eq!(
                        e.noise_std(i) == 0.0,
                        i == 9,
                        "noise only before the last step"
                    );
                    let x = inputs(64, 3 + i as u64, 2.0);
                    let m = inputs(64, 100 + i as u64, 2.0);
                    let z = inputs(64, 200 + i as u64, 2.0);
                    let mut got = x.clone();
                    e.step(i, &mut got, &m, &z);
                    for k in 0..64 {
                        let x_sigma = x[k] as f64 / l.a;
                        let (x0, _) = x0_eps(prediction, x[k] as f64, m[k] as f64, l.a * l.a);
                        let d = (x_sigma - x0) / sigma;
                        let want = n.a * (x_sigma + (down - sigma) * d + up2.sqrt() * z[k] as f64);
                        let e = err(got[k], want);
                        worst = worst.max(e);
                        assert!(e < EULER_A_STEP_TOL, "{prediction:?} {spacing:?} step {i}");
                    }
                }
            }
        }
        eprintln!("euler ancestral step worst {worst:.2e}");
    }
}
