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
pub mod euler;
pub mod euler_ancestral;
pub mod heun;
pub mod sigmas;

pub use common::{
    dpm_timesteps, timesteps, Prediction, Sampler, SamplerConfig, SamplerKind, Spacing, Variance,
};
pub use sigmas::SigmaSchedule;

use crate::error::Error;
use crate::schedule::Schedule;

impl SamplerConfig {
    /// Builds the sampler with every per-step coefficient precomputed.
    pub fn build(&self, schedule: &Schedule) -> Result<Box<dyn Sampler>, Error> {
        self.validate(schedule.len())?;
        Ok(match self.kind {
            SamplerKind::Ddpm => Box::new(ddpm::Ddpm::new(self, schedule)),
            SamplerKind::Ddim => Box::new(ddim::Ddim::new(self, schedule)),
            SamplerKind::Euler => Box::new(euler::Euler::new(self, schedule)),
            SamplerKind::EulerAncestral => {
                Box::new(euler_ancestral::EulerAncestral::new(self, schedule))
            }
            SamplerKind::Heun => Box::new(heun::Heun::new(self, schedule)),
            SamplerKind::DpmPp2m => Box::new(dpm_solver::DpmSolverPp::new(self, schedule, 2)),
            SamplerKind::DpmPp3m => Box::new(dpm_solver::DpmSolverPp::new(self, schedule, 3)),
        })
    }
}

/// Independent f64 references for the samplers' unit tests: ᾱ recomputed from β (not read from
/// the schedule module), diffusers' prediction conversions, and arbitrary test inputs.
#[cfg(test)]
pub(crate) mod reference {
    use super::Prediction;

    /// T of the seed's schedule.
    pub const T: usize = 1000;

    /// ᾱ_t = Π_{k ≤ t} (1 − β_k), β = linspace(1e-4, 0.02, 1000), as the seed defines it.
    pub fn alpha_bars() -> Vec<f64> {
        let mut acc = 1.0f64;
        (0..T)
            .map(|t| {
                acc *= 1.0 - (1e-4 + (0.02 - 1e-4) * t as f64 / (T - 1) as f64);
                acc
            })
            .collect()
    }

    /// diffusers' (x̂0, ε) from a model output `m` at `x` with ᾱ = `ab`, in f64.
    pub fn x0_eps(p: Prediction, x: f64, m: f64, ab: f64) -> (f64, f64) {
        let (a, s) = (ab.sqrt(), (1.0 - ab).sqrt());
        match p {
            Prediction::Epsilon => ((x - s * m) / a, m),
            Prediction::V => (a * x - s * m, a * m + s * x),
            Prediction::Sample => (m, (x - a * m) / s),
        }
    }

    /// `n` arbitrary values in [−scale, scale] (a 64-bit LCG; only needs to be spread out).
    pub fn inputs(n: usize, seed: u64, scale: f64) -> Vec<f32> {
        let mut z = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        (0..n)
            .map(|_| {
                z = z
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (z >> 11) as f64 / (1u64 << 53) as f64;
                ((2.0 * u - 1.0) * scale) as f32
            })
            .collect()
    }

    /// |got − want| / (1 + |want|): absolute for small values, relative for large ones.
    pub fn err(got: f32, want: f64) -> f64 {
        (got as f64 - want).abs() / (1.0 + want.abs())
    }

    pub const PREDICTIONS: [Prediction; 3] =
        [Prediction::Epsilon, Prediction::V, Prediction::Sample];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every timestep list diffusers 0.42 produced (tests/fixtures/parity/timesteps, written by
    /// make_parity.py), compared exactly, plus the one-step and S = T edge cases.
    #[test]
    fn timestep_lists_are_diffusers_own() {
        use ndarray_npy::ReadNpyExt;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/parity/timesteps");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".npy") else {
                continue;
            };
            if stem.ends_with("_sigmas") {
                continue;
            }
            let parts: Vec<&str> = stem.split('_').collect();
            let (spacing, steps) = (
                parts[1].parse::<Spacing>().unwrap(),
                parts[2].parse().unwrap(),
            );
            let f = std::fs::File::open(dir.join(&name)).unwrap();
            let want: Vec<usize> = ndarray::ArrayD::<i64>::read_npy(f)
                .unwrap()
                .iter()
                .map(|&t| t as usize)
                .collect();
            let got = if parts[0] == "dpmpp-2m" {
                dpm_timesteps(spacing, 1000, steps)
            } else {
                timesteps(spacing, 1000, steps)
            };
            assert_eq!(got, want, "{stem}");
            n += 1;
        }
        assert!(n >= 12, "only {n} timestep fixtures");
        // np.linspace(0, 999, 1) = [0]; arange-based spacings at S = 1.
        assert_eq!(timesteps(Spacing::Linspace, 1000, 1), [0]);
        assert_eq!(timesteps(Spacing::Leading, 1000, 1), [0]);
        assert_eq!(timesteps(Spacing::Trailing, 1000, 1), [999]);
        assert_eq!(dpm_timesteps(Spacing::Linspace, 1000, 1), [999]);
        assert_eq!(dpm_timesteps(Spacing::Leading, 1000, 1), [500]);
        assert_eq!(dpm_timesteps(Spacing::Trailing, 1000, 1), [999]);
    }

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
}
