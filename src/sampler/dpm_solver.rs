//! DPM-Solver++(2M) and (3M) (Lu et al. 2022, Algorithm 2 and its third-order form), as
//! diffusers' `DPMSolverMultistepScheduler` runs them (`algorithm_type="dpmsolver++"`,
//! `solver_order=2` or `3`, `solver_type="midpoint"`, `lower_order_final=True`,
//! `final_sigmas_type="zero"`; Karras or exponential σ with `--sigmas`).
//!
//! With a = √ᾱ, s = √(1−ᾱ), λ = ln(a/s) and h = λ_next − λ_cur, x̂0 the current estimate and
//! x̂0₋₁, x̂0₋₂ the previous steps' (λ₋₁, λ₋₂ theirs), r0 = (λ − λ₋₁)/h, r1 = (λ₋₁ − λ₋₂)/h:
//! - first order: x_next = (s_next/s)·x − a_next·(e^{−h} − 1)·x̂0;
//! - second order: D1 = (x̂0 − x̂0₋₁)/r0, x_next = (s_next/s)·x − a_next·(e^{−h} − 1)·(x̂0 + D1/2);
//! - third order: D1₀ = (x̂0 − x̂0₋₁)/r0, D1₁ = (x̂0₋₁ − x̂0₋₂)/r1, D1 = D1₀ + r0/(r0 + r1)·(D1₀ −
//!   D1₁), D2 = (D1₀ − D1₁)/(r0 + r1), x_next = (s_next/s)·x − a_next(e^{−h} − 1)·x̂0 +
//!   a_next((e^{−h} − 1)/h + 1)·D1 − a_next((e^{−h} − 1 + h)/h² − ½)·D2.
//!
//! The order rises with the history (first at the first step, second at the second) and falls
//! at the end: the last step (σ = 0, so it returns x̂0) is first order, and with fewer than 15
//! steps the one before it is at most second order. Without the final first-order step to σ = 0
//! the huge last λ-step overshoots.
use super::common::{x0_into, Prediction, Sampler, SamplerConfig};
use super::sigmas::{dpm_path, Level};
use crate::schedule::Schedule;

#[derive(Clone, Copy, Debug)]
struct Coefs {
    a: f32,
    s: f32,
    /// s_next / s_cur.
    ratio: f32,
    /// −a_next·(e^{−h} − 1): weight of x̂0.
    c0: f32,
    /// −a_next·(e^{−h} − 1)/(2r0): weight of (x̂0 − x̂0₋₁) in a second-order step.
    c1: f32,
    /// Weights of (x̂0 − x̂0₋₁) and (x̂0₋₁ − x̂0₋₂) in a third-order step.
    p: f32,
    q: f32,
    /// The highest order this step may take (history allowing).
    max_order: usize,
}

pub struct DpmSolverPp {
    timesteps: Vec<usize>,
    coefs: Vec<Coefs>,
    prediction: Prediction,
    /// x̂0 of the previous step and of the one before; `history` of them are valid.
    prev_x0: Vec<f32>,
    prev2_x0: Vec<f32>,
    history: usize,
}

impl DpmSolverPp {
    /// `order` 2 or 3 (diffusers' `solver_order`).
    pub fn new(cfg: &SamplerConfig, schedule: &Schedule, order: usize) -> DpmSolverPp {
        let path = dpm_path(schedule, cfg.spacing(), cfg.sigmas, cfg.steps);
        let n = path.timesteps.len();
        let lv = &path.levels;
        let lambda = |l: Level| (l.a / l.s).ln();
        let coefs = (0..n)
            .map(|i| {
                let l = lv[i];
                let (a, s) = (l.a as f32, l.s as f32);
                if i + 1 == n {
                    // σ_next = 0: a_next = 1, s_next = 0, e^{−h} = 0.
                    return Coefs {
                        a,
                        s,
                        ratio: 0.0,
                        c0: 1.0,
                        c1: 0.0,
                        p: 0.0,
                        q: 0.0,
                        max_order: 1,
                    };
                }
                let next = lv[i + 1];
                let h = lambda(next) - lambda(l);
                let a_next = next.a;
                let em = (-h).exp() - 1.0;
                let c0 = -a_next * em;
                let r0 = (i > 0).then(|| (lambda(l) - lambda(lv[i - 1])) / h);
                let c1 = r0.map_or(0.0, |r0| 0.5 * c0 / r0);
                let (p, q) = match (r0, i > 1) {
                    (Some(r0), true) => {
                        let r1 = (lambda(lv[i - 1]) - lambda(lv[i - 2])) / h;
                        let f = a_next * (em / h + 1.0);
                        let g = -a_next * ((em + h) / (h * h) - 0.5);
                        let sum = r0 + r1;
                        (
                            (f * (1.0 + r0 / sum) + g / sum) / r0,
                            (f * r0 / sum + g / sum) / r1,
                        )
                    }
                    _ => (0.0, 0.0),
                };
                // diffusers' lower_order_second: with fewer than 15 steps, the step before
                // the last is at most second order.
                let max_order = if i + 2 == n && n < 15 {
                    order.min(2)
                } else {
                    order
                };
                Coefs {
                    a,
                    s,
                    ratio: (next.s / l.s) as f32,
                    c0: c0 as f32,
                    c1: c1 as f32,
                    p: p as f32,
                    q: q as f32,
                    max_order,
                }
            })
            .collect();
        DpmSolverPp {
            timesteps: path.timesteps,
            coefs,
            prediction: cfg.prediction,
            prev_x0: Vec::new(),
            prev2_x0: Vec::new(),
            history: 0,
        }
    }
}

impl Sampler for DpmSolverPp {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn noise_std(&self, _i: usize) -> f32 {
        0.0
    }

    fn prepare(&mut self, len: usize) {
        self.prev_x0.resize(len, 0.0);
        self.prev2_x0.resize(len, 0.0);
        self.history = 0;
    }

    fn reset(&mut self) {
        self.history = 0;
    }

    fn step(&mut self, i: usize, x: &mut [f32], model_out: &[f32], _noise: &[f32]) {
        let c = self.coefs[i];
        let pred = self.prediction;
        if self.prev_x0.len() < x.len() || self.prev2_x0.len() < x.len() {
            // `prepare` was not called: size once (outside any hot loop in practice).
            self.prev_x0.resize(x.len(), 0.0);
            self.prev2_x0.resize(x.len(), 0.0);
        }
        let order = c.max_order.min(self.history + 1);
        if order == 3 {
            // x̂0₋₂ is overwritten by this step's x̂0, then the two histories swap roles.
            let prev = &self.prev_x0[..x.len()];
            let prev2 = &mut self.prev2_x0[..x.len()];
            for (((xv, &m), &p1), p2) in x.iter_mut().zip(model_out).zip(prev).zip(prev2) {
                let x0 = pred.x0_eps(*xv, m, c.a, c.s).0;
                *xv = c.ratio * *xv + c.c0 * x0 + c.p * (x0 - p1) - c.q * (p1 - *p2);
                *p2 = x0;
            }
            std::mem::swap(&mut self.prev_x0, &mut self.prev2_x0);
        } else {
            // The previous x̂0 becomes x̂0₋₂ (swap, then overwrite the older one in place).
            std::mem::swap(&mut self.prev_x0, &mut self.prev2_x0);
            let prev1 = &self.prev2_x0[..x.len()];
            let cur = &mut self.prev_x0[..x.len()];
            for (((xv, &m), &p1), cur) in x.iter_mut().zip(model_out).zip(prev1).zip(cur) {
                let x0 = pred.x0_eps(*xv, m, c.a, c.s).0;
                *xv = if order == 2 {
                    c.ratio * *xv + c.c0 * x0 + c.c1 * (x0 - p1)
                } else {
                    c.ratio * *xv + c.c0 * x0
                };
                *cur = x0;
            }
        }
        self.history = (self.history + 1).min(2);
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
                let mut d = DpmSolverPp::new(&cfg, &sched, 2);
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
        let mut d = DpmSolverPp::new(&cfg, &sched, 2);
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
        let mut d = DpmSolverPp::new(&cfg, &s, 2);
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
        let mut d = DpmSolverPp::new(&cfg, &s, 2);
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
