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

/// diffusers computes β and ᾱ in float32; ours are f64. Relative error of float32 rounding
/// accumulated over 1000 products.
const F32_SCHEDULE_REL_TOL: f64 = 2e-5;

#[test]
fn betas_and_alpha_bars_match_diffusers() {
    for (name, kind, start, end) in [
        ("linear", BetaSchedule::Linear, 1e-4, 0.02),
        ("scaled_linear", BetaSchedule::ScaledLinear, 0.00085, 0.012),
        ("squaredcos_cap_v2", BetaSchedule::Cosine, 1e-4, 0.02),
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
                rb < F32_SCHEDULE_REL_TOL,
                "{name} beta[{t}]: {} vs {}",
                s.betas[t],
                betas[t]
            );
            assert!(
                ra < F32_SCHEDULE_REL_TOL,
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

#[test]
fn seed_tables_match_the_seeds_torch_code() {
    let s = Schedule::tutorial();
    for (file, ours, cancels) in [
        ("betas", &s.betas[..], false),
        ("alphas", &s.alphas[..], false),
        ("alpha_bars", &s.alpha_bars[..], false),
        ("coef1", &s.coef1[..], true),
        ("coef2", &s.coef2[..], true),
        ("posterior_variance", &s.posterior_variance[..], true),
    ] {
        let theirs: Vec<f64> = read(&format!("parity/schedule/seed_{file}.npy"));
        let (mut worst, mut worst_frac) = (0f64, 0f64);
        for t in 0..1000 {
            // coef1, coef2 and β̃ divide by 1 − ᾱ_t, which float32 computes with an absolute
            // error of ~ε (ᾱ ≈ 1 near t = 0): the seed's relative error there is ~ε/(1 − ᾱ_t).
            let tol = if cancels {
                F32_SCHEDULE_REL_TOL + 8.0 * F32_EPS / (1.0 - s.alpha_bars[t])
            } else {
                F32_SCHEDULE_REL_TOL
            };
            let scale = theirs[t].abs().max(1e-12);
            let rel = (ours[t] - theirs[t]).abs() / scale;
            worst = worst.max(rel);
            worst_frac = worst_frac.max(rel / tol);
            assert!(
                (ours[t] - theirs[t]).abs() / scale < tol,
                "{file}[{t}]: {} vs the seed's {} (tol {tol:.1e})",
                ours[t],
                theirs[t]
            );
        }
        eprintln!("seed {file}: worst rel {worst:.2e}, worst rel/tol {worst_frac:.2e}");
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
