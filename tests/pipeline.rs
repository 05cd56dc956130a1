//! The whole sampling loop (`pipeline::generate`: batches, workers, seeded noise, samplers)
//! driven through the engine boundary by a denoiser written in Rust in closed form, no model.
//!
//! For data x0 ~ N(μ, s²) per value, x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε is Gaussian too, and the
//! optimal ε-prediction is exact: ε(x_t, t) = √(1−ᾱ_t)·(x_t − √ᾱ_t·μ)/(ᾱ_t·s² + 1 − ᾱ_t).
//! The probability-flow ODE then keeps z = (x_t − √ᾱ_t·μ)/√(ᾱ_t·s² + 1 − ᾱ_t) constant, so
//! it takes x_T to x0 = μ + s·z_T: where DDIM (η = 0) must land, and, over many images, the
//! sample mean and standard deviation every sampler must reproduce.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use edge_sample::denoiser::{Denoiser, Engine, ModelSpec};
use edge_sample::noise::NoiseStream;
use edge_sample::pipeline::{generate, Job};
use edge_sample::sampler::{Prediction, SamplerConfig, SamplerKind, Variance};
use edge_sample::schedule::ScheduleConfig;
use edge_sample::{Error, Result};

/// The data's mean and standard deviation (inside [−1, 1], as a model's data would be).
const MU: f64 = 0.3;
const S: f64 = 0.4;
/// (C, H, W) of one "image", and images per denoiser call.
const SHAPE: [usize; 3] = [2, 4, 4];
const BATCH: usize = 3;
/// T of the tutorial's schedule.
const T: usize = 1000;

/// ᾱ_t computed here, independently of the crate's tables: β = linspace(1e-4, 0.02, 1000) in
/// f64, ᾱ_t = Π_{k ≤ t} (1 − β_k).
fn alpha_bars() -> Vec<f64> {
    let mut ab = 1.0;
    (0..T)
        .map(|t| {
            let beta = 1e-4 + (0.02 - 1e-4) * t as f64 / (T - 1) as f64;
            ab *= 1.0 - beta;
            ab
        })
        .collect()
}

/// What the engine and its denoisers share: ᾱ and the counters.
struct Shared {
    alpha_bars: Vec<f64>,
    calls: AtomicUsize,
    denoisers: AtomicUsize,
}

/// The closed-form "model" of N(μ, s²) data.
struct Gaussian {
    spec: ModelSpec,
    shared: Arc<Shared>,
}

impl Gaussian {
    fn new() -> Gaussian {
        Gaussian {
            spec: ModelSpec {
                name: "gaussian".into(),
                image_shape: SHAPE,
                batch: BATCH,
                schedule: ScheduleConfig::default(),
                prediction: Prediction::Epsilon,
                pixel_range: (-1.0, 1.0),
            },
            shared: Arc::new(Shared {
                alpha_bars: alpha_bars(),
                calls: AtomicUsize::new(0),
                denoisers: AtomicUsize::new(0),
            }),
        }
    }
    fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::Relaxed)
    }
    fn denoisers(&self) -> usize {
        self.shared.denoisers.load(Ordering::Relaxed)
    }
}

struct GaussianDenoiser(Arc<Shared>);

impl Denoiser for GaussianDenoiser {
    fn image_shape(&self) -> [usize; 3] {
        SHAPE
    }
    fn batch(&self) -> usize {
        BATCH
    }
    fn run(&mut self, x: &[f32], t: usize, out: &mut [f32]) -> Result<()> {
        assert_eq!(x.len(), BATCH * SHAPE.iter().product::<usize>());
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        let ab = self.0.alpha_bars[t];
        let k = (1.0 - ab).sqrt() / (ab * S * S + 1.0 - ab);
        for (o, &xv) in out.iter_mut().zip(x) {
            *o = (k * (xv as f64 - ab.sqrt() * MU)) as f32;
        }
        Ok(())
    }
}

impl Engine for Gaussian {
    fn spec(&self) -> ModelSpec {
        self.spec.clone()
    }
    fn new_denoiser(&self, threads: usize) -> Result<Box<dyn Denoiser>> {
        assert!(threads >= 1);
        self.shared.denoisers.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(GaussianDenoiser(self.shared.clone())))
    }
}

fn job(kind: SamplerKind, steps: usize, num: usize, threads: usize) -> Job {
    Job {
        sampler: SamplerConfig {
            kind,
            steps,
            clip: false,
            variance: Variance::Posterior,
            ..Default::default()
        },
        seed: 11,
        num,
        threads,
        init_image: None,
        init_noise: None,
    }
}

/// Largest |DDIM's x0 − the ODE's x0| over all values, 50 steps: measured 1.2e-3 (the
/// discretisation error of 50 steps, f32 arithmetic far below it).
const DDIM_50_ODE_TOL: f64 = 4e-3;

#[test]
fn ddim_takes_each_x_t_where_the_probability_flow_ode_does() {
    let engine = Gaussian::new();
    let chw: usize = SHAPE.iter().product();
    let (num, steps, threads) = (10, 50, 2);
    // x_T given explicitly, so the answer can be computed from it.
    let mut x_t = vec![0f32; num * chw];
    for (i, x) in x_t.chunks_mut(chw).enumerate() {
        NoiseStream::new(5, i as u64).fill(x);
    }
    let job = Job {
        init_noise: Some(x_t.clone()),
        ..job(SamplerKind::Ddim, steps, num, threads)
    };
    let out = generate(&engine, &job, &|| {}).unwrap();

    // Trailing spacing starts at t = T − 1.
    let ab = alpha_bars()[T - 1];
    let mut worst = 0f64;
    for (&xt, &got) in x_t.iter().zip(&out.data) {
        let z = (xt as f64 - ab.sqrt() * MU) / (ab * S * S + 1.0 - ab).sqrt();
        let want = MU + S * z;
        worst = worst.max((got as f64 - want).abs());
    }
    assert!(
        worst < DDIM_50_ODE_TOL,
        "DDIM 50 steps is {worst:.2e} from the ODE's answer (tolerance {DDIM_50_ODE_TOL:.0e})"
    );

    // One call per step per batch (4 batches of 3, the last one partial), one denoiser per
    // worker, and a timing for every call.
    let batches = num.div_ceil(BATCH);
    assert_eq!(engine.calls(), batches * steps);
    assert_eq!(engine.denoisers(), threads.min(batches));
    assert_eq!(out.steps_run, steps);
    assert_eq!(out.step_times.len(), batches * steps);
    assert_eq!(out.shape, SHAPE);
}

/// Bias of the sample mean and standard deviation beyond sampling noise, per sampler (at the
/// step counts below): measured |mean − μ| and |std − s| at most 2e-3 (DDIM 50), 3e-3
/// (DPM-Solver++ 20), 5e-3 (DDPM 1000, ancestral), the spread of 6400 values included.
const BIAS_TOL: f64 = 0.015;

#[test]
fn every_sampler_reproduces_the_data_distribution() {
    let chw: usize = SHAPE.iter().product();
    let num = 200;
    let n = (num * chw) as f64;
    // Five standard errors of the mean and of the standard deviation of n Gaussian values.
    let mean_band = 5.0 * S / n.sqrt() + BIAS_TOL;
    let std_band = 5.0 * S / (2.0 * n).sqrt() + BIAS_TOL;
    for (kind, steps) in [
        (SamplerKind::Ddim, 50),
        (SamplerKind::DpmPp2m, 20),
        (SamplerKind::Ddpm, 1000),
    ] {
        let engine = Gaussian::new();
        let out = generate(&engine, &job(kind, steps, num, 2), &|| {}).unwrap();
        let mean = out.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = out
            .data
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        let std = var.sqrt();
        assert!(
            (mean - MU).abs() < mean_band,
            "{kind} {steps} steps: mean {mean:.4}, want {MU} ± {mean_band:.4}"
        );
        assert!(
            (std - S).abs() < std_band,
            "{kind} {steps} steps: std {std:.4}, want {S} ± {std_band:.4}"
        );
        assert_eq!(engine.calls(), num.div_ceil(BATCH) * steps, "{kind}");
    }
}

#[test]
fn the_loop_speaks_of_jobs_not_flags() {
    let engine = Gaussian::new();
    let bad = [
        job(SamplerKind::Ddim, 20, 0, 1),
        job(SamplerKind::Ddim, 0, 1, 1),
        job(SamplerKind::Ddim, T + 1, 1, 1),
        Job {
            sampler: SamplerConfig {
                eta: -1.0,
                ..job(SamplerKind::Ddim, 20, 1, 1).sampler
            },
            ..job(SamplerKind::Ddim, 20, 1, 1)
        },
    ];
    for j in bad {
        let e = generate(&engine, &j, &|| {}).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e:?}");
        assert!(!e.to_string().contains("--"), "a flag in '{e}'");
    }
    assert_eq!(engine.calls(), 0, "nothing ran");
}
