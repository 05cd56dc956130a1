//! Reverse-diffusion samplers. One file per sampler; this module holds what they share:
//! configuration, timestep spacing and the conversion of a model's output to (x̂0, ε).
//!
//! Conventions (diffusers' where it has one):
//! - Steps are addressed by index `i = 0..S`; `timesteps()[i]` is the training timestep the
//!   network is called with at step `i` (descending).
//! - Every per-step coefficient is computed in f64 when the sampler is built, before the loop;
//!   `step` only does f32 element-wise arithmetic on caller-owned buffers and never allocates.
//! - Noise is injected: a step whose [`Sampler::noise_std`] is > 0 receives a buffer of fresh
//!   standard normal values from the caller's seeded streams; other steps receive none.

pub mod common;
pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;

pub use common::{
    dpm_timesteps, timesteps, Prediction, Sampler, SamplerConfig, SamplerKind, Spacing, Variance,
};

use crate::error::Error;
use crate::schedule::Schedule;

impl SamplerConfig {
    /// Builds the sampler with every per-step coefficient precomputed.
    pub fn build(&self, schedule: &Schedule) -> Result<Box<dyn Sampler>, Error> {
        self.validate(schedule.len())?;
        Ok(match self.kind {
            SamplerKind::Ddpm => Box::new(ddpm::Ddpm::new(self, schedule)),
            SamplerKind::Ddim => Box::new(ddim::Ddim::new(self, schedule)),
            SamplerKind::DpmPp2m => Box::new(dpm_solver::DpmSolverPp2m::new(self, schedule)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_rounds_numpys_points_not_the_exact_halves() {
        // np.linspace(0, 999, 27)[13] = 499.49999999999994 → diffusers' DPM-Solver timestep
        // 499 at S = 26 (the exact 999·13/26 = 499.5 would round to 500).
        assert_eq!(dpm_timesteps(Spacing::Linspace, 1000, 26)[13], 499);
        // np.linspace(0, 999, 27)[13] again, as DDIM's S = 27 list (index 26 − 13).
        assert_eq!(timesteps(Spacing::Linspace, 1000, 27)[13], 499);
    }

    #[test]
    fn step_counts_that_repeat_a_timestep_are_refused_with_the_largest_that_does_not() {
        let cfg = |kind, spacing, steps| SamplerConfig {
            kind,
            steps,
            spacing: Some(spacing),
            ..Default::default()
        };
        // DPM-Solver++ over linspace at S = T: linspace(0, 999, 1001) rounds 0.999·k twice
        // to one integer, h = 0 made every sample NaN.
        let e = cfg(SamplerKind::DpmPp2m, Spacing::Linspace, 1000)
            .validate(1000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("repeats timesteps") && e.contains("at most"),
            "{e}"
        );
        let most: usize = e
            .rsplit("at most ")
            .next()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        cfg(SamplerKind::DpmPp2m, Spacing::Linspace, most)
            .validate(1000)
            .unwrap();
        // Leading at S = T: T // (S + 1) = 0, every timestep 0.
        let e = cfg(SamplerKind::DpmPp2m, Spacing::Leading, 1000)
            .validate(1000)
            .unwrap_err();
        assert!(e.to_string().contains("at most 999 steps"), "{e}");
        // Every sampler's own 1000-step list (the seed's DDPM) is fine.
        for kind in [SamplerKind::Ddpm, SamplerKind::Ddim] {
            for spacing in [Spacing::Linspace, Spacing::Leading, Spacing::Trailing] {
                cfg(kind, spacing, 1000).validate(1000).unwrap();
            }
        }
    }

    #[test]
    fn spacings_match_diffusers_for_20_steps() {
        let lead = timesteps(Spacing::Leading, 1000, 20);
        assert_eq!(lead[0], 950);
        assert_eq!(lead[19], 0);
        let trail = timesteps(Spacing::Trailing, 1000, 20);
        assert_eq!(trail[0], 999);
        assert_eq!(trail[19], 49);
        let lin = timesteps(Spacing::Linspace, 1000, 20);
        assert_eq!(lin[0], 999);
        assert_eq!(lin[19], 0);
        assert_eq!(lin[18], 53);
        let dpm = dpm_timesteps(Spacing::Linspace, 1000, 20);
        assert_eq!(dpm.len(), 20);
        assert_eq!(dpm[0], 999);
        assert_eq!(dpm[10], 500); // 499.5 rounds half to even
        assert_eq!(dpm[19], 50);
    }

    #[test]
    fn full_length_spacing_is_every_timestep() {
        for sp in [Spacing::Leading, Spacing::Trailing, Spacing::Linspace] {
            let ts = timesteps(sp, 1000, 1000);
            assert_eq!(ts, (0..1000).rev().collect::<Vec<_>>(), "{sp}");
        }
    }

    #[test]
    fn prediction_conversions_are_consistent() {
        let (a, s) = (0.6f32, 0.8f32); // a² + s² = 1
        let (x0, eps) = (0.3f32, -1.2f32);
        let x = a * x0 + s * eps;
        let v = a * eps - s * x0;
        for (p, m) in [
            (Prediction::Epsilon, eps),
            (Prediction::V, v),
            (Prediction::Sample, x0),
        ] {
            let (gx0, geps) = p.x0_eps(x, m, a, s);
            assert!((gx0 - x0).abs() < 1e-6, "{p:?} x0");
            assert!((geps - eps).abs() < 1e-6, "{p:?} eps");
        }
    }
}
