//! DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), as diffusers'
//! `DPMSolverMultistepScheduler` runs it by default (`algorithm_type="dpmsolver++"`,
//! `solver_order=2`, `solver_type="midpoint"`, `final_sigmas_type="zero"`).
//!
//! With a = √ᾱ, s = √(1−ᾱ), λ = ln(a/s) and h = λ_next − λ_cur:
//! - first order (the first step, and the last, which goes to σ = 0 and so returns x̂0):
//!   x_next = (s_next/s_cur)·x − a_next·(e^{−h} − 1)·x̂0;
//! - second order otherwise, r = h_prev/h, D1 = (x̂0 − x̂0_prev)/r:
//!   x_next = (s_next/s_cur)·x − a_next·(e^{−h} − 1)·(x̂0 + D1/2).
//!
//! Without the final first-order step to σ = 0 the huge last λ-step overshoots.
use super::common::{a_s, x0_into, Prediction, Sampler, SamplerConfig};
use crate::schedule::Schedule;

#[derive(Clone, Copy, Debug)]
struct Coefs {
    a: f32,
    s: f32,
    /// s_next / s_cur.
    ratio: f32,
    /// −a_next·(e^{−h} − 1): weight of x̂0.
    c0: f32,
    /// −a_next·(e^{−h} − 1)/(2r): weight of (x̂0 − x̂0_prev) in the second-order step.
    c1: f32,
    last: bool,
}

pub struct DpmSolverPp2m {
    timesteps: Vec<usize>,
    coefs: Vec<Coefs>,
    prediction: Prediction,
    /// x̂0 of the previous step; valid once `have_prev`.
    prev_x0: Vec<f32>,
    have_prev: bool,
}

impl DpmSolverPp2m {
    pub fn new(cfg: &SamplerConfig, schedule: &Schedule) -> DpmSolverPp2m {
        let timesteps = super::dpm_timesteps(cfg.spacing(), schedule.len(), cfg.steps);
        let n = timesteps.len();
        let lambda =
            |t: usize| (schedule.sqrt_alpha_bars[t] / schedule.sqrt_one_minus_alpha_bars[t]).ln();
        let coefs = (0..n)
            .map(|i| {
                let t = timesteps[i];
                let (a, s) = a_s(schedule, t);
                if i + 1 == n {
                    // σ_next = 0: a_next = 1, s_next = 0, e^{−h} = 0.
                    return Coefs {
                        a,
                        s,
                        ratio: 0.0,
                        c0: 1.0,
                        c1: 0.0,
                        last: true,
                    };
                }
                let tn = timesteps[i + 1];
                let h = lambda(tn) - lambda(t);
                let a_next = schedule.sqrt_alpha_bars[tn];
                let c0 = -a_next * ((-h).exp() - 1.0);
                let c1 = if i > 0 {
                    let r = (lambda(t) - lambda(timesteps[i - 1])) / h;
                    0.5 * c0 / r
                } else {
                    0.0
                };
                Coefs {
                    a,
                    s,
                    ratio: (schedule.sqrt_one_minus_alpha_bars[tn]
                        / schedule.sqrt_one_minus_alpha_bars[t]) as f32,
                    c0: c0 as f32,
                    c1: c1 as f32,
                    last: false,
                }
            })
            .collect();
        DpmSolverPp2m {
            timesteps,
            coefs,
            prediction: cfg.prediction,
            prev_x0: Vec::new(),
            have_prev: false,
        }
    }
}

impl Sampler for DpmSolverPp2m {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn noise_std(&self, _i: usize) -> f32 {
        0.0
    }

    fn prepare(&mut self, len: usize) {
        self.prev_x0.resize(len, 0.0);
        self.have_prev = false;
    }

    fn reset(&mut self) {
        self.have_prev = false;
    }

    fn step(&mut self, i: usize, x: &mut [f32], model_out: &[f32], _noise: &[f32]) {
        let c = self.coefs[i];
        let pred = self.prediction;
        if self.prev_x0.len() < x.len() {
            // `prepare` was not called: size once (outside any hot loop in practice).
            self.prev_x0.resize(x.len(), 0.0);
        }
        let prev = &mut self.prev_x0[..x.len()];
        let second_order = self.have_prev && !c.last;
        for ((xv, &m), p) in x.iter_mut().zip(model_out).zip(prev.iter_mut()) {
            let x0 = pred.x0_eps(*xv, m, c.a, c.s).0;
            *xv = if second_order {
                c.ratio * *xv + c.c0 * x0 + c.c1 * (x0 - *p)
            } else {
                c.ratio * *xv + c.c0 * x0
            };
            *p = x0;
        }
        self.have_prev = true;
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
    fn last_step_returns_x0() {
        let s = Schedule::tutorial();
        let cfg = SamplerConfig {
            kind: SamplerKind::DpmPp2m,
            steps: 10,
            ..Default::default()
        };
        let mut d = DpmSolverPp2m::new(&cfg, &s);
        d.prepare(1);
        let t = d.timesteps()[9];
        let (x, eps) = (0.3f32, 0.9f32);
        let mut xs = [x];
        d.step(9, &mut xs, &[eps], &[]);
        let want = (x - s.sqrt_one_minus_alpha_bars[t] as f32 * eps) / s.sqrt_alpha_bars[t] as f32;
        assert!((xs[0] - want).abs() < 1e-6);
    }

    /// For a constant x̂0 (the network knows the answer) every step keeps x on the exact
    /// noising path: x_next = a_next·x0 + s_next·ε with the same ε. First and second order
    /// updates both satisfy this exactly, since D1 = 0 and the exponential integrator is exact.
    #[test]
    fn exact_for_a_perfect_denoiser() {
        let s = Schedule::tutorial();
        let cfg = SamplerConfig {
            kind: SamplerKind::DpmPp2m,
            steps: 20,
            ..Default::default()
        };
        let mut d = DpmSolverPp2m::new(&cfg, &s);
        d.prepare(1);
        let (x0, eps) = (0.4f64, -0.7f64);
        let ts = d.timesteps().to_vec();
        let mut x =
            [(s.sqrt_alpha_bars[ts[0]] * x0 + s.sqrt_one_minus_alpha_bars[ts[0]] * eps) as f32];
        for (i, &t) in ts.iter().enumerate() {
            let m = eps as f32; // the true ε at every step
            let _ = t;
            d.step(i, &mut x, &[m], &[]);
            let want = if i + 1 < ts.len() {
                s.sqrt_alpha_bars[ts[i + 1]] * x0 + s.sqrt_one_minus_alpha_bars[ts[i + 1]] * eps
            } else {
                x0
            };
            assert!(
                (x[0] as f64 - want).abs() < 1e-4,
                "step {i}: {} vs {want}",
                x[0]
            );
        }
    }
}
