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
    use crate::sampler::SamplerKind;

    use crate::sampler::reference::{self, alpha_bars, err, inputs, x0_eps, PREDICTIONS};
    use crate::sampler::Spacing;

    /// Largest |ours − f64 diffusers| / (1 + |want|) of one DDIM step over every prediction
    /// type, clip, η and spacing below: measured 2.82e-7 (x86 avx512).
    const DDIM_STEP_TOL: f64 = 8.5e-7;
    /// The same for σ (`noise_std`): measured 1.74e-8 (x86).
    const DDIM_SIGMA_TOL: f64 = 5.2e-8;
    /// The same for the preview x̂0: measured 3.53e-6 (x86), at t = 999 where x − √(1−ᾱ)·ε
    /// cancels and 1/√ᾱ = 156 magnifies the f32 rounding of √(1−ᾱ).
    const DDIM_X0_TOL: f64 = 1.1e-5;

    /// Every step of DDIM against diffusers' `DDIMScheduler.step` written out in f64 here
    /// (prev_t = t − T//S, ᾱ_prev = 1 below zero, σ from η, x̂0 clamped and ε kept), fed
    /// arbitrary x, model outputs and noise, with the noise passed iff σ > 0.
    #[test]
    fn every_step_is_diffusers_ddim_in_f64() {
        let ab = alpha_bars();
        let sched = Schedule::tutorial();
        let (mut worst, mut worst_sigma, mut worst_x0) = (0f64, 0f64, 0f64);
        let mut seed = 1;
        for prediction in PREDICTIONS {
            for clip in [false, true] {
                for eta in [0.0, 0.5, 1.0] {
                    for (spacing, steps) in [
                        (Spacing::Trailing, 20),
                        (Spacing::Leading, 20),
                        (Spacing::Linspace, 20),
                        (Spacing::Trailing, 7),
                    ] {
                        let cfg = SamplerConfig {
                            kind: SamplerKind::Ddim,
                            steps,
                            eta,
                            spacing: Some(spacing),
                            clip,
                            prediction,
                            ..Default::default()
                        };
                        let mut d = Ddim::new(&cfg, &sched);
                        let ts = super::super::timesteps(spacing, reference::T, steps);
                        assert_eq!(d.timesteps(), &ts[..]);
                        let stride = reference::T / steps;
                        for (i, &t) in ts.iter().enumerate() {
                            let what = format!("{prediction:?} clip={clip} eta={eta} {spacing} {steps}: step {i} (t={t})");
                            let (ab_t, ab_p) =
                                (ab[t], t.checked_sub(stride).map_or(1.0, |p| ab[p]));
                            let sigma =
                                eta * ((1.0 - ab_p) / (1.0 - ab_t) * (1.0 - ab_t / ab_p)).sqrt();
                            let e = err(d.noise_std(i), sigma);
                            assert!(
                                e < DDIM_SIGMA_TOL,
                                "{what}: sigma {} vs {sigma}",
                                d.noise_std(i)
                            );
                            worst_sigma = worst_sigma.max(e);
                            assert_eq!(d.noise_std(i) > 0.0, sigma > 0.0, "{what}");
                            seed += 3;
                            let x = inputs(16, seed, 3.0);
                            let m = inputs(16, seed + 1, 2.0);
                            let z = inputs(16, seed + 2, 2.5);
                            let mut x0 = vec![f32::NAN; 16];
                            d.predict_x0(i, &x, &m, &mut x0);
                            let mut xs = x.clone();
                            d.step(i, &mut xs, &m, if sigma > 0.0 { &z } else { &[] });
                            for k in 0..16 {
                                let (x0_ref, eps) =
                                    x0_eps(prediction, x[k] as f64, m[k] as f64, ab_t);
                                let e0 = err(x0[k], x0_ref);
                                assert!(e0 < DDIM_X0_TOL, "{what}: x0 {} vs {x0_ref}", x0[k]);
                                worst_x0 = worst_x0.max(e0);
                                let x0c = if clip {
                                    x0_ref.clamp(-1.0, 1.0)
                                } else {
                                    x0_ref
                                };
                                let want = ab_p.sqrt() * x0c
                                    + (1.0 - ab_p - sigma * sigma).max(0.0).sqrt() * eps
                                    + sigma * z[k] as f64;
                                let e = err(xs[k], want);
                                assert!(e < DDIM_STEP_TOL, "{what}: x {} vs {want}", xs[k]);
                                worst = worst.max(e);
                            }
                        }
                    }
                }
            }
        }
        eprintln!("DDIM: step {worst:.2e}, sigma {worst_sigma:.2e}, x0 {worst_x0:.2e}");
    }

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
        // Final ᾱ_prev = 1: the last step returns x̂0 exactly (1·x̂0 + 0·ε: measured
        // bit-identical on x86 and qemu NEON).
        let t = d.timesteps()[19];
        let (x, eps) = (0.5f32, 0.25f32);
        let want = (x - s.sqrt_one_minus_alpha_bars[t] as f32 * eps) / s.sqrt_alpha_bars[t] as f32;
        let mut xs = [x];
        d.step(19, &mut xs, &[eps], &[]);
        assert_eq!(xs[0].to_bits(), want.to_bits(), "{} vs {want}", xs[0]);
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
