//! Ancestral DDPM (Ho et al. 2020, Algorithm 2), the seed's `sample_backward_step`.
//!
//! At S = T this is exactly the seed's step, coefficients read from the static tables:
//! - clip (default): x̂0 = clip((x_t − √(1−ᾱ_t) ε)/√ᾱ_t, −1, 1), mean = coef1·x_t + coef2·x̂0;
//! - no clip: mean = (x_t − (1−α_t)/√(1−ᾱ_t) · ε)/√α_t;
//! - noise: σ² = β_t or β̃_t, none at the last step (t = 0).
//!
//! With S < T the chain is respaced (Nichol & Dhariwal 2021, §4): over the kept timesteps
//! S_0 > … > S_{n−1}, β'_i = 1 − ᾱ_{S_i}/ᾱ_{S_{i+1}} (ᾱ after the last = 1) and the same
//! formulas apply with β', α' = 1 − β'. The network still gets the original t.
use super::common::{a_s, x0_into, Prediction, Sampler, SamplerConfig, Spacing};
use crate::schedule::Schedule;

#[derive(Clone, Copy, Debug)]
struct Coefs {
    /// √ᾱ_t, √(1−ᾱ_t): to convert the network output.
    a: f32,
    s: f32,
    /// Posterior mean through x̂0: coef1·x + coef2·x̂0.
    coef1: f32,
    coef2: f32,
    /// Direct mean: (x − direct_eps·ε) · inv_sqrt_alpha.
    inv_sqrt_alpha: f32,
    direct_eps: f32,
    sigma: f32,
}

pub struct Ddpm {
    timesteps: Vec<usize>,
    coefs: Vec<Coefs>,
    clip: bool,
    prediction: Prediction,
}

impl Ddpm {
    pub fn new(cfg: &SamplerConfig, schedule: &Schedule) -> Ddpm {
        let t_max = schedule.len();
        let spacing: Spacing = cfg.spacing();
        let timesteps = super::timesteps(spacing, t_max, cfg.steps);
        let n = timesteps.len();
        let coefs = (0..n)
            .map(|i| {
                let t = timesteps[i];
                let prev = (i + 1 < n).then(|| timesteps[i + 1]);
                let ab = schedule.alpha_bars[t];
                let ab_prev = schedule.alpha_bar_or_one(prev);
                // Consecutive timesteps: the seed's own tables, bit for bit.
                let (beta, coef1, coef2, post_var) = if prev == t.checked_sub(1) {
                    (
                        schedule.betas[t],
                        schedule.coef1[t],
                        schedule.coef2[t],
                        schedule.posterior_variance[t],
                    )
                } else {
                    let beta = 1.0 - ab / ab_prev;
                    (
                        beta,
                        (1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab),
                        ab_prev.sqrt() * beta / (1.0 - ab),
                        (1.0 - ab_prev) / (1.0 - ab) * beta,
                    )
                };
                let var = match cfg.variance {
                    super::Variance::Beta => beta,
                    super::Variance::Posterior => post_var,
                };
                let (a, s) = a_s(schedule, t);
                Coefs {
                    a,
                    s,
                    coef1: coef1 as f32,
                    coef2: coef2 as f32,
                    inv_sqrt_alpha: (1.0 / (1.0 - beta).sqrt()) as f32,
                    direct_eps: (beta / schedule.sqrt_one_minus_alpha_bars[t]) as f32,
                    sigma: if prev.is_some() {
                        var.sqrt() as f32
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        Ddpm {
            timesteps,
            coefs,
            clip: cfg.clip,
            prediction: cfg.prediction,
        }
    }
}

impl Sampler for Ddpm {
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
        let mean = |xv: f32, m: f32| {
            let (x0, eps) = pred.x0_eps(xv, m, c.a, c.s);
            if self.clip {
                c.coef1 * xv + c.coef2 * x0.clamp(-1.0, 1.0)
            } else {
                (xv - c.direct_eps * eps) * c.inv_sqrt_alpha
            }
        };
        if c.sigma > 0.0 {
            for ((xv, &m), &z) in x.iter_mut().zip(model_out).zip(noise) {
                *xv = mean(*xv, m) + c.sigma * z;
            }
        } else {
            for (xv, &m) in x.iter_mut().zip(model_out) {
                *xv = mean(*xv, m);
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
    use crate::sampler::{SamplerKind, Variance};

    fn cfg(steps: usize, variance: Variance, clip: bool) -> SamplerConfig {
        SamplerConfig {
            kind: SamplerKind::Ddpm,
            steps,
            variance,
            clip,
            ..Default::default()
        }
    }

    use crate::sampler::reference::{self, alpha_bars, err, inputs, x0_eps, PREDICTIONS};

    /// Largest |ours − f64 reference| / (1 + |want|) of one DDPM step over every prediction
    /// type, clip, variance and spacing below: measured 3.83e-7 (x86 avx512).
    const DDPM_STEP_TOL: f64 = 1.15e-6;
    /// The same for σ (`noise_std`): measured 1.94e-8 (x86).
    const DDPM_SIGMA_TOL: f64 = 5.8e-8;
    /// The same for the preview x̂0: measured 1.50e-6 (x86; the cancellation at t = 999).
    const DDPM_X0_TOL: f64 = 4.5e-6;

    /// Every step of the (respaced) ancestral sampler against the chain written out in f64
    /// from Ho et al. and Nichol & Dhariwal (tests/fixtures/parity/manifest.json
    /// "ddpm_respaced"): β' = 1 − ᾱ_t/ᾱ_prev with ᾱ_prev the next kept timestep's (1 after
    /// the last); clip: posterior mean through the clamped x̂0; no clip: the ε-form mean;
    /// σ² = β' or β̃', none on the last step. At S = T this is the seed's chain.
    #[test]
    fn every_step_is_the_respaced_chain_in_f64() {
        let ab = alpha_bars();
        let sched = Schedule::tutorial();
        let (mut worst, mut worst_sigma, mut worst_x0) = (0f64, 0f64, 0f64);
        let mut seed = 7;
        for prediction in PREDICTIONS {
            for clip in [false, true] {
                for variance in [Variance::Beta, Variance::Posterior] {
                    for (spacing, steps) in [
                        (Spacing::Trailing, 20),
                        (Spacing::Leading, 20),
                        (Spacing::Linspace, 20),
                        (Spacing::Trailing, 1000),
                    ] {
                        let c = SamplerConfig {
                            spacing: Some(spacing),
                            prediction,
                            ..cfg(steps, variance, clip)
                        };
                        let mut d = Ddpm::new(&c, &sched);
                        let ts = super::super::timesteps(spacing, reference::T, steps);
                        assert_eq!(d.timesteps(), &ts[..]);
                        // All 20 steps; at 1000 the first, last and a spread in between.
                        let picks: Vec<usize> = if steps == 20 {
                            (0..20).collect()
                        } else {
                            vec![0, 1, 250, 500, 900, 997, 998, 999]
                        };
                        for i in picks {
                            let t = ts[i];
                            let what = format!(
                                "{prediction:?} clip={clip} {variance} {spacing} {steps}: step {i} (t={t})"
                            );
                            let last = i + 1 == steps;
                            let (ab_t, ab_p) = (ab[t], if last { 1.0 } else { ab[ts[i + 1]] });
                            let beta = 1.0 - ab_t / ab_p;
                            let var = match (last, variance) {
                                (true, _) => 0.0,
                                (false, Variance::Beta) => beta,
                                (false, Variance::Posterior) => (1.0 - ab_p) / (1.0 - ab_t) * beta,
                            };
                            let sigma = var.sqrt();
                            let e = err(d.noise_std(i), sigma);
                            assert!(
                                e < DDPM_SIGMA_TOL,
                                "{what}: sigma {} vs {sigma}",
                                d.noise_std(i)
                            );
                            worst_sigma = worst_sigma.max(e);
                            assert_eq!(d.noise_std(i) > 0.0, !last, "{what}");
                            seed += 3;
                            let x = inputs(16, seed, 3.0);
                            let m = inputs(16, seed + 1, 2.0);
                            let z = inputs(16, seed + 2, 2.5);
                            let mut x0 = vec![f32::NAN; 16];
                            d.predict_x0(i, &x, &m, &mut x0);
                            let mut xs = x.clone();
                            d.step(i, &mut xs, &m, if last { &[] } else { &z });
                            for k in 0..16 {
                                let xv = x[k] as f64;
                                let (x0_ref, eps) = x0_eps(prediction, xv, m[k] as f64, ab_t);
                                let e0 = err(x0[k], x0_ref);
                                assert!(e0 < DDPM_X0_TOL, "{what}: x0 {} vs {x0_ref}", x0[k]);
                                worst_x0 = worst_x0.max(e0);
                                let mean = if clip {
                                    ab_p.sqrt() * beta / (1.0 - ab_t) * x0_ref.clamp(-1.0, 1.0)
                                        + (1.0 - beta).sqrt() * (1.0 - ab_p) / (1.0 - ab_t) * xv
                                } else {
                                    (xv - beta / (1.0 - ab_t).sqrt() * eps) / (1.0 - beta).sqrt()
                                };
                                let want = mean + sigma * z[k] as f64;
                                let e = err(xs[k], want);
                                assert!(e < DDPM_STEP_TOL, "{what}: x {} vs {want}", xs[k]);
                                worst = worst.max(e);
                            }
                        }
                    }
                }
            }
        }
        eprintln!("DDPM: step {worst:.2e}, sigma {worst_sigma:.2e}, x0 {worst_x0:.2e}");
    }

    /// |ours − the seed's step in f64| / (1 + |want|): measured 3.39e-8 (x86 avx512 and qemu
    /// NEON alike).
    const SEED_STEP_TOL: f64 = 1.0e-7;
    /// The seed's step, transcribed literally in f64, against ours for one element.
    #[test]
    fn full_chain_step_is_the_seeds_formula() {
        let s = Schedule::tutorial();
        for (variance, clip) in [
            (Variance::Beta, true),
            (Variance::Posterior, true),
            (Variance::Beta, false),
            (Variance::Posterior, false),
        ] {
            let mut d = Ddpm::new(&cfg(1000, variance, clip), &s);
            assert_eq!(d.timesteps()[0], 999);
            for (i, t) in [(0usize, 999usize), (500, 499), (998, 1), (999, 0)] {
                let (x, eps, z) = (0.7f64, -0.4f64, 1.3f64);
                let ab = s.alpha_bars[t];
                let var = if t == 0 {
                    0.0
                } else if variance == Variance::Beta {
                    s.betas[t]
                } else {
                    (1.0 - s.alpha_bars[t - 1]) / (1.0 - ab) * s.betas[t]
                };
                let mean = if clip {
                    let x0 = ((x - (1.0 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0);
                    s.coef1[t] * x + s.coef2[t] * x0
                } else {
                    (x - (1.0 - s.alphas[t]) / (1.0 - ab).sqrt() * eps) / s.alphas[t].sqrt()
                };
                let want = mean + var.sqrt() * z;
                let mut xs = [x as f32];
                d.step(i, &mut xs, &[eps as f32], &[z as f32]);
                let got = xs[0] as f64;
                assert!(
                    (got - want).abs() < SEED_STEP_TOL * (1.0 + want.abs()),
                    "{variance} clip={clip} t={t}: {got} vs {want}"
                );
                assert_eq!(d.noise_std(i) > 0.0, t > 0);
            }
        }
    }

    #[test]
    fn respaced_last_step_adds_no_noise() {
        let d = Ddpm::new(&cfg(20, Variance::Beta, true), &Schedule::tutorial());
        assert!(d.noise_std(18) > 0.0);
        assert_eq!(d.noise_std(19), 0.0);
    }
}
