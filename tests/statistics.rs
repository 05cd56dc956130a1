//! Closed-form statistical tests. For data x0 ~ N(μ, s²) the optimal denoiser is affine:
//! ε(x_t, t) = √(1−ᾱ_t)(x_t − √ᾱ_t μ)/(ᾱ_t s² + 1 − ᾱ_t). tests/fixtures/make_models.py
//! writes it as an ONNX graph (gaussian_denoiser.onnx, 1×8×8, μ = 0.2, s = 0.25). Every
//! sampler step is then affine in x plus Gaussian noise, so each sampler's output is an exactly
//! computable Gaussian: here the recursion is written again in f64 from the papers' formulas,
//! and edge-sample's samples (via tract) must match its mean and variance within 5 standard
//! errors. With many steps the exact answer must also approach N(μ, s²) itself.
mod common;

use common::*;
use edge_sample::pipeline::{generate, Job};
use edge_sample::sampler::{
    dpm_timesteps, timesteps, SamplerConfig, SamplerKind, Spacing, Variance,
};

const MU: f64 = 0.2;
const S: f64 = 0.25;
/// Sampling tolerance in standard errors of the estimate.
const Z: f64 = 5.0;

fn alpha_bars() -> Vec<f64> {
    let mut acc = 1.0;
    (0..1000)
        .map(|t| {
            acc *= 1.0 - (1e-4 + (0.02 - 1e-4) * t as f64 / 999.0);
            acc
        })
        .collect()
}

/// x = k·x_T + l + (independent noise of variance q), per pixel.
#[derive(Clone, Copy, Debug)]
struct Affine {
    k: f64,
    l: f64,
    q: f64,
}

/// The optimal ε = c·x + d at t.
fn eps_coefs(ab: f64) -> (f64, f64) {
    let den = ab * S * S + 1.0 - ab;
    (
        (1.0 - ab).sqrt() / den,
        -(1.0 - ab).sqrt() * ab.sqrt() * MU / den,
    )
}

/// x̂0 = (x − √(1−ᾱ) ε)/√ᾱ = p·x + r.
fn x0_coefs(ab: f64) -> (f64, f64) {
    let (c, d) = eps_coefs(ab);
    (
        (1.0 - (1.0 - ab).sqrt() * c) / ab.sqrt(),
        -(1.0 - ab).sqrt() * d / ab.sqrt(),
    )
}

/// The exact output distribution (mean, variance) of a sampler on this denoiser.
fn exact(cfg: &SamplerConfig) -> (f64, f64) {
    let ab = alpha_bars();
    let s = cfg.steps;
    let mut x = Affine {
        k: 1.0,
        l: 0.0,
        q: 0.0,
    };
    match cfg.kind {
        SamplerKind::Ddpm => {
            // Ho et al. eq. 11 (the seed's no-clip mean) on the respaced chain.
            let ts = timesteps(cfg.spacing(), 1000, s);
            for i in 0..s {
                let a_t = ab[ts[i]];
                let a_p = if i + 1 < s { ab[ts[i + 1]] } else { 1.0 };
                let beta = 1.0 - a_t / a_p;
                let (c, d) = eps_coefs(a_t);
                let big_a = (1.0 - beta * c / (1.0 - a_t).sqrt()) / (1.0 - beta).sqrt();
                let big_b = -beta * d / ((1.0 - a_t).sqrt() * (1.0 - beta).sqrt());
                let var = if i + 1 == s {
                    0.0
                } else if cfg.variance == Variance::Beta {
                    beta
                } else {
                    (1.0 - a_p) / (1.0 - a_t) * beta
                };
                x = Affine {
                    k: big_a * x.k,
                    l: big_a * x.l + big_b,
                    q: big_a * big_a * x.q + var,
                };
            }
        }
        SamplerKind::Ddim => {
            // Song et al. eq. 12; previous timestep t − T/S as in diffusers.
            let ts = timesteps(cfg.spacing(), 1000, s);
            for &t in &ts {
                let a_t = ab[t];
                let a_p = t.checked_sub(1000 / s).map_or(1.0, |p| ab[p]);
                let sigma2 = cfg.eta * cfg.eta * (1.0 - a_p) / (1.0 - a_t) * (1.0 - a_t / a_p);
                let (c, d) = eps_coefs(a_t);
                let (p, r) = x0_coefs(a_t);
                let dir = (1.0 - a_p - sigma2).sqrt();
                let big_a = a_p.sqrt() * p + dir * c;
                let big_b = a_p.sqrt() * r + dir * d;
                x = Affine {
                    k: big_a * x.k,
                    l: big_a * x.l + big_b,
                    q: big_a * big_a * x.q + sigma2,
                };
            }
        }
        SamplerKind::DpmPp2m => {
            // Lu et al. 2022, DPM-Solver++(2M), data prediction, last step to σ = 0.
            let ts = dpm_timesteps(cfg.spacing(), 1000, s);
            let lambda = |a: f64| (a.sqrt() / (1.0 - a).sqrt()).ln();
            let mut prev: Option<(Affine, f64)> = None; // x̂0 of the last step and its λ
            for i in 0..s {
                let a_t = ab[ts[i]];
                let (p, r) = x0_coefs(a_t);
                let x0 = Affine {
                    k: p * x.k,
                    l: p * x.l + r,
                    q: 0.0,
                };
                if i + 1 == s {
                    x = x0;
                    break;
                }
                let a_n = ab[ts[i + 1]];
                let h = lambda(a_n) - lambda(a_t);
                let ratio = ((1.0 - a_n) / (1.0 - a_t)).sqrt();
                let w = -a_n.sqrt() * ((-h).exp() - 1.0);
                let d = match prev {
                    None => x0,
                    Some((x0p, lam_p)) => {
                        let rr = (lambda(a_t) - lam_p) / h;
                        let f = 1.0 / (2.0 * rr);
                        Affine {
                            k: (1.0 + f) * x0.k - f * x0p.k,
                            l: (1.0 + f) * x0.l - f * x0p.l,
                            q: 0.0,
                        }
                    }
                };
                prev = Some((x0, lambda(a_t)));
                x = Affine {
                    k: ratio * x.k + w * d.k,
                    l: ratio * x.l + w * d.l,
                    q: 0.0,
                };
            }
        }
    }
    (x.l, x.k * x.k + x.q)
}

fn cfg(kind: SamplerKind, steps: usize, eta: f64, variance: Variance) -> SamplerConfig {
    SamplerConfig {
        kind,
        steps,
        eta,
        variance,
        clip: false,
        ..Default::default()
    }
}

#[test]
fn exact_reference_recovers_the_data_distribution_with_many_steps() {
    for c in [
        cfg(SamplerKind::Ddpm, 1000, 0.0, Variance::Beta),
        cfg(SamplerKind::Ddpm, 1000, 0.0, Variance::Posterior),
        cfg(SamplerKind::Ddim, 1000, 0.0, Variance::Beta),
        cfg(SamplerKind::DpmPp2m, 100, 0.0, Variance::Beta),
    ] {
        let (m, v) = exact(&c);
        assert!((m - MU).abs() < 0.01, "{:?}: mean {m}", c.kind);
        assert!(
            (v / (S * S) - 1.0).abs() < 0.05,
            "{:?} {}: var {v} vs {}",
            c.kind,
            c.variance,
            S * S
        );
    }
}

#[test]
fn samplers_produce_the_exact_gaussian() {
    let num = if emulated() { 64 } else { 256 };
    let model = load("models/gaussian_denoiser.onnx", 64);
    let mut cases = vec![
        cfg(SamplerKind::Ddpm, 20, 0.0, Variance::Beta),
        cfg(SamplerKind::Ddpm, 20, 0.0, Variance::Posterior),
        cfg(SamplerKind::Ddim, 20, 0.0, Variance::Beta),
        cfg(SamplerKind::Ddim, 20, 1.0, Variance::Beta),
        cfg(SamplerKind::Ddim, 10, 0.5, Variance::Beta),
        cfg(SamplerKind::DpmPp2m, 10, 0.0, Variance::Beta),
        cfg(SamplerKind::DpmPp2m, 20, 0.0, Variance::Beta),
        SamplerConfig {
            spacing: Some(Spacing::Leading),
            ..cfg(SamplerKind::Ddim, 20, 0.0, Variance::Beta)
        },
    ];
    if !emulated() {
        cases.push(cfg(SamplerKind::Ddpm, 1000, 0.0, Variance::Beta));
        cases.push(cfg(SamplerKind::Ddpm, 1000, 0.0, Variance::Posterior));
    }
    let mut failures = vec![];
    for c in cases {
        let job = Job {
            sampler: c,
            seed: 11,
            num,
            threads: 2,
            init_image: None,
            init_noise: None,
        };
        let out = generate(&model, &job, &|| {}).unwrap();
        let n = out.data.len() as f64;
        let mean = out.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = out
            .data
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        let (m, v) = exact(&c);
        let label = format!(
            "{} steps={} eta={} {} {}",
            c.kind,
            c.steps,
            c.eta,
            c.variance,
            c.spacing()
        );
        let se_m = (v / n).sqrt();
        let se_v = v * (2.0 / (n - 1.0)).sqrt();
        eprintln!("{label}: mean {mean:.4} (exact {m:.4}), var {var:.5} (exact {v:.5})");
        if (mean - m).abs() > Z * se_m + 1e-4 || (var - v).abs() > Z * se_v + 1e-5 {
            failures.push(format!(
                "{label}: mean {mean} vs {m} (se {se_m:.1e}), var {var} vs {v} (se {se_v:.1e})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
