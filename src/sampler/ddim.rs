//! DDIM (Song et al. 2021, eq. 12), as diffusers' `DDIMScheduler.step` computes it with
//! `set_alpha_to_one=True, steps_offset=0`:
//! x_prev = √ᾱ_prev·x̂0 + √(1 − ᾱ_prev − σ²)·ε + σ·z,
//! σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev).
//! The previous timestep is t − T/S (integer division) whatever the spacing, ᾱ_prev = 1 below
//! zero — diffusers' convention, kept for parity. Clipping clamps x̂0 and keeps ε
//! (`use_clipped_model_output=False`).
use super::common::{a_s, x0_into, Prediction, Sampler, SamplerConfig};
use crate::schedule::Schedule;

#[derive(Clone, Copy, Debug)]
struct Coefs {
    a: f32,
    s: f32,
    sqrt_ab_prev: f32,
    dir: f32,
    sigma: f32,
}

pub struct Ddim {
    timesteps: Vec<usize>,
    coefs: Vec<Coefs>,
    clip: bool,
    prediction: Prediction,
}

impl Ddim {
    pub fn new(cfg: &SamplerConfig, schedule: &Schedule) -> Ddim {
        let t_max = schedule.len();
        let timesteps = super::timesteps(cfg.spacing(), t_max, cfg.steps);
        let stride = t_max / cfg.steps;
        let coefs = timesteps
            .iter()
            .map(|&t| {
                let ab = schedule.alpha_bars[t];
                let ab_prev = schedule.alpha_bar_or_one(t.checked_sub(stride));
                let var = (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev);
                let sigma = cfg.eta * var.max(0.0).sqrt();
                let (a, s) = a_s(schedule, t);
                Coefs {
                    a,
                    s,
                    sqrt_ab_prev: ab_prev.sqrt() as f32,
                    dir: (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt() as f32,
                    sigma: sigma as f32,
                }
            })
            .collect();
        Ddim {
            timesteps,
            coefs,
            clip: cfg.clip,
            prediction: cfg.prediction,
        }
    }
}

impl Sampler for Ddim {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn noise_std(&self, i: usize) -> f32 {
        self.coefs[i].sigma
    }

    fn reset(&mut self) {}

    fn step(&mut self, i: usize, x: &mut [f32], model_out: &[f32], noise: &[f32]) {
        let c = self.coefs[i];
        let pred = self.prediction;
        let clip = self.clip;
        let deterministic = |xv: f32, m: f32| {
            let (x0, eps) = pred.x0_eps(xv, m, c.a, c.s);
            let x0 = if clip { x0.clamp(-1.0, 1.0) } else { x0 };
            c.sqrt_ab_prev * x0 + c.dir * eps
        };
        if c.sigma > 0.0 {
            for ((xv, &m), &z) in x.iter_mut().zip(model_out).zip(noise) {
                *xv = deterministic(*xv, m) + c.sigma * z;
            }
        } else {
            for (xv, &m) in x.iter_mut().zip(model_out) {
                *xv = deterministic(*xv, m);
            }
        }
    }

    fn predict_x0(&self, i: usize, x: &[f32], model_out: &[f32], out: &mut [f32]) {
        let c = self.coefs[i];
        x0_into(self.prediction, c.a, c.s, x, model_out, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplerKind;

    #[test]
    fn eta_zero_draws_no_noise_and_last_step_lands_on_x0() {
        let s = Schedule::tutorial();
        let cfg = SamplerConfig {
            kind: SamplerKind::Ddim,
            clip: false,
            ..Default::default()
        };
        let mut d = Ddim::new(&cfg, &s);
        assert!((0..20).all(|i| d.noise_std(i) == 0.0));
        // Final ᾱ_prev = 1: the last step returns x̂0 exactly.
        let t = d.timesteps()[19];
        let (x, eps) = (0.5f32, 0.25f32);
        let want = (x - s.sqrt_one_minus_alpha_bars[t] as f32 * eps) / s.sqrt_alpha_bars[t] as f32;
        let mut xs = [x];
        d.step(19, &mut xs, &[eps], &[]);
        assert!((xs[0] - want).abs() < 1e-6);
    }

    #[test]
    fn eta_one_is_ancestral_until_the_last_step() {
        let s = Schedule::tutorial();
        let cfg = SamplerConfig {
            kind: SamplerKind::Ddim,
            eta: 1.0,
            ..Default::default()
        };
        let d = Ddim::new(&cfg, &s);
        assert!((0..19).all(|i| d.noise_std(i) > 0.0));
        assert_eq!(d.noise_std(19), 0.0);
    }
}
