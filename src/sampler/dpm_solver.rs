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

    use crate::sampler::reference::{self, alpha_bars, err, inputs, x0_eps, PREDICTIONS};
    use crate::sampler::Spacing;

    /// Largest |ours − f64 diffusers| / (1 + |want|) of one step (from the same x and the
    /// same history) over every prediction type and spacing below: measured 2.58e-7 (x86
    /// avx512).
    const DPM_STEP_TOL: f64 = 7.7e-7;
    /// The same for the preview x̂0: measured 3.30e-6 (x86; the cancellation at t = 999).
    const DPM_X0_TOL: f64 = 1.0e-5;

    /// diffusers' `multistep_dpm_solver_second_order_update` / `dpm_solver_first_order_update`
    /// (dpmsolver++, midpoint) in f64: the next x from x, this step's x̂0 and, for a second
    /// order step, the previous step's x̂0 and timestep.
    fn dpm_ref(
        ab: &[f64],
        t: usize,
        next: Option<usize>,
        x: f64,
        x0: f64,
        prev: Option<(usize, f64)>,
    ) -> f64 {
        let lambda = |t: usize| (ab[t].sqrt() / (1.0 - ab[t]).sqrt()).ln();
        let Some(tn) = next else {
            return x0; // σ_next = 0
        };
        let h = lambda(tn) - lambda(t);
        let (a_n, s_n, s) = (ab[tn].sqrt(), (1.0 - ab[tn]).sqrt(), (1.0 - ab[t]).sqrt());
        let d = match prev {
            None => x0,
            Some((tp, x0p)) => {
                let r0 = (lambda(t) - lambda(tp)) / h;
                x0 + 0.5 * (x0 - x0p) / r0
            }
        };
        s_n / s * x - a_n * ((-h).exp() - 1.0) * d
    }

    /// Whole chains with model outputs that change every step (so D1 ≠ 0): each step of ours
    /// against `dpm_ref` applied to the same x, first order at the first and last step, second
    /// order in between. Also for a chain that starts part-way (img2img), after `prepare` and
    /// after `reset`: the first step taken is first order whatever came before.
    #[test]
    fn every_step_is_diffusers_dpm_solver_pp_2m_in_f64() {
        let ab = alpha_bars();
        let sched = Schedule::tutorial();
        let (mut worst, mut worst_x0) = (0f64, 0f64);
        let mut seed = 11;
        for prediction in PREDICTIONS {
            for (spacing, steps) in [
                (Spacing::Linspace, 20),
                (Spacing::Leading, 20),
                (Spacing::Trailing, 20),
                (Spacing::Linspace, 10),
                (Spacing::Linspace, 2),
                (Spacing::Linspace, 1),
            ] {
                let cfg = SamplerConfig {
                    kind: SamplerKind::DpmPp2m,
                    steps,
                    spacing: Some(spacing),
                    prediction,
                    ..Default::default()
                };
                let mut d = DpmSolverPp2m::new(&cfg, &sched);
                let ts = super::super::dpm_timesteps(spacing, reference::T, steps);
                assert_eq!(d.timesteps(), &ts[..]);
                // Start at 0; then part-way after prepare (fresh history), after reset, and
                // with a stale history from the chain before but no prepare/reset: the
                // `prepare` and `reset` runs must both be first order at their first step.
                for (start, how) in [(0, "prepare"), (steps / 2, "prepare"), (steps / 3, "reset")] {
                    match how {
                        "prepare" => d.prepare(16),
                        _ => d.reset(),
                    }
                    let mut x = inputs(16, seed, 3.0);
                    let mut prev: Option<(usize, Vec<f64>)> = None;
                    for (i, &t) in ts.iter().enumerate().skip(start) {
                        let what = format!("{prediction:?} {spacing} {steps} from {start} ({how}): step {i} (t={t})");
                        assert_eq!(d.noise_std(i).to_bits(), 0f32.to_bits(), "{what}");
                        seed += 2;
                        let m = inputs(16, seed, 2.0);
                        let x0: Vec<f64> = (0..16)
                            .map(|k| x0_eps(prediction, x[k] as f64, m[k] as f64, ab[t]).0)
                            .collect();
                        let mut pv = vec![f32::NAN; 16];
                        d.predict_x0(i, &x, &m, &mut pv);
                        let next = ts.get(i + 1).copied();
                        let mut xs = x.clone();
                        d.step(i, &mut xs, &m, &[]);
                        for k in 0..16 {
                            let e0 = err(pv[k], x0[k]);
                            assert!(e0 < DPM_X0_TOL, "{what}: x0 {} vs {}", pv[k], x0[k]);
                            worst_x0 = worst_x0.max(e0);
                            let p = prev.as_ref().map(|(tp, x0p)| (*tp, x0p[k]));
                            let want = dpm_ref(&ab, t, next, x[k] as f64, x0[k], p);
                            let e = err(xs[k], want);
                            assert!(e < DPM_STEP_TOL, "{what}: x {} vs {want}", xs[k]);
                            worst = worst.max(e);
                        }
                        prev = Some((t, x0));
                        x = xs;
                    }
                }
            }
        }
        eprintln!("DPM-Solver++(2M): step {worst:.2e}, x0 {worst_x0:.2e}");
    }

    /// Without `prepare` the history is sized on the first step, for any buffer length.
    #[test]
    fn step_without_prepare_sizes_its_history() {
        let sched = Schedule::tutorial();
        let cfg = SamplerConfig {
            kind: SamplerKind::DpmPp2m,
            steps: 10,
            ..Default::default()
        };
        let ab = alpha_bars();
        let mut d = DpmSolverPp2m::new(&cfg, &sched);
        let ts = d.timesteps().to_vec();
        for len in [3usize, 5, 2] {
            d.reset();
            let x = inputs(len, len as u64, 1.0);
            let m = inputs(len, 100 + len as u64, 1.0);
            let mut xs = x.clone();
            d.step(0, &mut xs, &m, &[]);
            for k in 0..len {
                let x0 = x0_eps(Prediction::Epsilon, x[k] as f64, m[k] as f64, ab[ts[0]]).0;
                let want = dpm_ref(&ab, ts[0], Some(ts[1]), x[k] as f64, x0, None);
                assert!(
                    err(xs[k], want) < DPM_STEP_TOL,
                    "len {len}: {} vs {want}",
                    xs[k]
                );
            }
        }
    }

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
        // 0·x + 1·x̂0: measured bit-identical (x86, qemu NEON).
        assert_eq!(xs[0].to_bits(), want.to_bits(), "{} vs {want}", xs[0]);
    }

    /// For a constant x̂0 (the network knows the answer) every step keeps x on the exact
    /// noising path: x_next = a_next·x0 + s_next·ε with the same ε. First and second order
    /// updates both satisfy this exactly, since D1 = 0 and the exponential integrator is exact.
    /// What remains is f32 rounding, growing over the 20 steps: measured 2.41e-6 at the last
    /// step (x86 avx512 and qemu NEON alike).
    const PERFECT_DENOISER_TOL: f64 = 7.2e-6;
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
                (x[0] as f64 - want).abs() < PERFECT_DENOISER_TOL,
                "step {i}: {} vs {want}",
                x[0]
            );
        }
    }
}
