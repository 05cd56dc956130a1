//! Schedules and timestep lists against diffusers' own (tests/fixtures/make_parity.py saved
//! `scheduler.betas`, `alphas_cumprod` and `timesteps` of diffusers 0.42 as .npy files).
mod common;

use common::fixture;
use edge_sample::sampler::{dpm_timesteps, timesteps, Spacing};
use edge_sample::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use ndarray_npy::ReadNpyExt;
use tract_onnx::prelude::tract_ndarray::ArrayD;

fn read<T: ndarray_npy::ReadableElement + Clone>(rel: &str) -> Vec<T> {
    let f = std::fs::File::open(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    ArrayD::<T>::read_npy(f).unwrap().iter().cloned().collect()
}

/// diffusers computes β and ᾱ in float32; ours are f64: largest relative errors of β and ᾱ
/// (float32 rounding, accumulated over 1000 products for ᾱ), per schedule. Measured (x86
/// avx512; table reads only, so the same on qemu NEON): linear 1.07e-7 and 3.60e-7,
/// scaled_linear 2.18e-7 and 9.30e-7, squaredcos_cap_v2 5.85e-8 and 1.31e-5 (its ᾱ ends
/// near 4e-9, where float32's relative rounding grows).
const LINEAR_BETA_REL_TOL: f64 = 3.2e-7;
const LINEAR_ALPHA_BAR_REL_TOL: f64 = 1.1e-6;
const SCALED_LINEAR_BETA_REL_TOL: f64 = 6.5e-7;
const SCALED_LINEAR_ALPHA_BAR_REL_TOL: f64 = 2.8e-6;
const COSINE_BETA_REL_TOL: f64 = 1.8e-7;
const COSINE_ALPHA_BAR_REL_TOL: f64 = 3.9e-5;

#[test]
fn betas_and_alpha_bars_match_diffusers() {
    for (name, kind, start, end, beta_tol, ab_tol) in [
        (
            "linear",
            BetaSchedule::Linear,
            1e-4,
            0.02,
            LINEAR_BETA_REL_TOL,
            LINEAR_ALPHA_BAR_REL_TOL,
        ),
        (
            "scaled_linear",
            BetaSchedule::ScaledLinear,
            0.00085,
            0.012,
            SCALED_LINEAR_BETA_REL_TOL,
            SCALED_LINEAR_ALPHA_BAR_REL_TOL,
        ),
        (
            "squaredcos_cap_v2",
            BetaSchedule::Cosine,
            1e-4,
            0.02,
            COSINE_BETA_REL_TOL,
            COSINE_ALPHA_BAR_REL_TOL,
        ),
    ] {
        let s = Schedule::new(ScheduleConfig {
            beta_schedule: kind,
            num_train_timesteps: 1000,
            beta_start: start,
            beta_end: end,
        })
        .unwrap();
        let betas: Vec<f64> = read(&format!("parity/schedule/diffusers_betas_{name}.npy"));
        let abars: Vec<f64> = read(&format!(
            "parity/schedule/diffusers_alphas_cumprod_{name}.npy"
        ));
        let (mut wb, mut wa) = (0f64, 0f64);
        for t in 0..1000 {
            let rb = (s.betas[t] - betas[t]).abs() / betas[t];
            let ra = (s.alpha_bars[t] - abars[t]).abs() / abars[t];
            wb = wb.max(rb);
            wa = wa.max(ra);
            assert!(
                rb < beta_tol,
                "{name} beta[{t}]: {} vs {}",
                s.betas[t],
                betas[t]
            );
            assert!(
                ra < ab_tol,
                "{name} alpha_bar[{t}]: {} vs {}",
                s.alpha_bars[t],
                abars[t]
            );
        }
        eprintln!("{name}: beta rel {wb:.2e}, alpha_bar rel {wa:.2e}");
    }
}

/// f32 machine epsilon: the seed computes its tables in float32.
const F32_EPS: f64 = f32::EPSILON as f64;

/// How far the seed's float32 tables may be from ours (f64), per table.
#[derive(Clone, Copy, Debug)]
enum SeedTol {
    /// Relative error.
    Rel(f64),
    /// Relative error K·ε/(1 − ᾱ_t): coef1, coef2 and β̃ divide by 1 − ᾱ_t, which float32
    /// computes with an absolute error of ~ε (ᾱ ≈ 1 near t = 0).
    Cancelling(f64),
}

/// Measured (x86 avx512; table reads only, so the same on qemu NEON): relative errors 1.07e-7
/// (β), 3.12e-8 (α), 7.13e-7 (ᾱ); K = 1.105 (coef1), 4.298 (coef2), 1.361 (β̃).
const SEED_BETAS_TOL: SeedTol = SeedTol::Rel(3.2e-7);
const SEED_ALPHAS_TOL: SeedTol = SeedTol::Rel(9.4e-8);
const SEED_ALPHA_BARS_TOL: SeedTol = SeedTol::Rel(2.1e-6);
const SEED_COEF1_TOL: SeedTol = SeedTol::Cancelling(3.3);
const SEED_COEF2_TOL: SeedTol = SeedTol::Cancelling(13.0);
const SEED_POSTERIOR_VAR_TOL: SeedTol = SeedTol::Cancelling(4.1);

#[test]
fn seed_tables_match_the_seeds_torch_code() {
    let s = Schedule::tutorial();
    for (file, ours, tol) in [
        ("betas", &s.betas[..], SEED_BETAS_TOL),
        ("alphas", &s.alphas[..], SEED_ALPHAS_TOL),
        ("alpha_bars", &s.alpha_bars[..], SEED_ALPHA_BARS_TOL),
        ("coef1", &s.coef1[..], SEED_COEF1_TOL),
        ("coef2", &s.coef2[..], SEED_COEF2_TOL),
        (
            "posterior_variance",
            &s.posterior_variance[..],
            SEED_POSTERIOR_VAR_TOL,
        ),
    ] {
        let theirs: Vec<f64> = read(&format!("parity/schedule/seed_{file}.npy"));
        let mut worst = 0f64;
        for t in 0..1000 {
            let scale = theirs[t].abs().max(1e-12);
            let rel = (ours[t] - theirs[t]).abs() / scale;
            // The measure each limit is stated in: rel, or K = rel·(1 − ᾱ_t)/ε.
            let (measure, limit) = match tol {
                SeedTol::Rel(l) => (rel, l),
                SeedTol::Cancelling(k) => (rel * (1.0 - s.alpha_bars[t]) / F32_EPS, k),
            };
            worst = worst.max(measure);
            assert!(
                measure < limit,
                "{file}[{t}]: {} vs the seed's {} ({measure:.2e} >= {limit:.1e})",
                ours[t],
                theirs[t]
            );
        }
        eprintln!("seed {file}: worst {worst:.3e} ({tol:?})");
    }
}

#[test]
fn timestep_lists_match_diffusers() {
    let mut n = 0;
    for entry in std::fs::read_dir(fixture("parity/timesteps")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".npy") else {
            continue;
        };
        if stem.ends_with("_sigmas") {
            continue;
        }
        let parts: Vec<&str> = stem.split('_').collect();
        let (sampler, spacing, steps) = (
            parts[0],
            parts[1].parse::<Spacing>().unwrap(),
            parts[2].parse::<usize>().unwrap(),
        );
        let want: Vec<i64> = read(&format!("parity/timesteps/{name}"));
        let got = if sampler == "dpmpp-2m" {
            dpm_timesteps(spacing, 1000, steps)
        } else {
            timesteps(spacing, 1000, steps)
        };
        let got: Vec<i64> = got.into_iter().map(|t| t as i64).collect();
        assert_eq!(got, want, "{stem}");
        n += 1;
    }
    assert!(n >= 10, "only {n} timestep files");
}
