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

/// The exact ε of the Gaussian data at training timestep `t`, in f64.
fn eps(ab: &[f64], x: f64, t: usize) -> f64 {
    (1.0 - ab[t]).sqrt() * (x - ab[t].sqrt() * MU) / (ab[t] * S * S + 1.0 - ab[t])
}

/// DDIM (η = 0) written out here in f64 for `steps` dividing T: t_k = T − 1 − k·T/S, the next
/// ᾱ is ᾱ_{t − T/S} (1 below t = 0), x ← √ᾱ_next·x̂0 + √(1 − ᾱ_next)·ε.
fn ddim_f64(ab: &[f64], mut x: f64, steps: usize) -> f64 {
    assert_eq!(T % steps, 0);
    let stride = T / steps;
    for k in 0..steps {
        let t = T - 1 - k * stride;
        let e = eps(ab, x, t);
        let x0 = (x - (1.0 - ab[t]).sqrt() * e) / ab[t].sqrt();
        let next = t.checked_sub(stride).map_or(1.0, |p| ab[p]);
        x = next.sqrt() * x0 + (1.0 - next).sqrt() * e;
    }
    x
}

/// Largest |the loop's x0 − the f64 DDIM's x0| (the loop's f32 arithmetic): measured 9.36e-7
/// at 50 steps, 2.18e-6 at 500 (x86 avx512).
const DDIM_50_F64_TOL: f64 = 2.8e-6;
const DDIM_500_F64_TOL: f64 = 6.5e-6;
/// Largest |DDIM's x0 − the ODE's x0|: DDIM is a first-order solver, so this error is its
/// discretisation error and halves when the steps double. Measured 9.39e-2 at 50 steps,
/// 9.94e-3 at 500 (4.80e-2, 2.44e-2, 5.04e-3 at 100, 200, 1000; x86 avx512).
const DDIM_50_ODE_TOL: f64 = 0.28;
const DDIM_500_ODE_TOL: f64 = 0.03;
/// err(50 steps) / err(500 steps): 10 for a first-order method; measured 9.45.
const FIRST_ORDER_RATIO: std::ops::Range<f64> = 8.0..12.0;

/// Runs DDIM on 10 images whose x_T is given; returns the largest distance of the results
/// to the f64 DDIM and to the ODE's answer.
fn ddim_errors(steps: usize) -> (f64, f64) {
    let engine = Gaussian::new();
    let chw: usize = SHAPE.iter().product();
    let (num, threads) = (10, 2);
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

    // One call per step per batch (4 batches of 3, the last one partial), one denoiser per
    // worker, and a timing for every call.
    let batches = num.div_ceil(BATCH);
    assert_eq!(engine.calls(), batches * steps);
    assert_eq!(engine.denoisers(), threads.min(batches));
    assert_eq!(out.steps_run, steps);
    assert_eq!(out.step_times.len(), batches * steps);
    assert_eq!(out.shape, SHAPE);

    let ab = alpha_bars();
    // Trailing spacing starts at t = T − 1.
    let a = ab[T - 1];
    let (mut to_f64, mut to_ode) = (0f64, 0f64);
    for (&xt, &got) in x_t.iter().zip(&out.data) {
        let z = (xt as f64 - a.sqrt() * MU) / (a * S * S + 1.0 - a).sqrt();
        to_ode = to_ode.max((got as f64 - (MU + S * z)).abs());
        to_f64 = to_f64.max((got as f64 - ddim_f64(&ab, xt as f64, steps)).abs());
    }
    (to_f64, to_ode)
}

#[test]
fn ddim_takes_each_x_t_where_the_probability_flow_ode_does() {
    let (f64_50, ode_50) = ddim_errors(50);
    let (f64_500, ode_500) = ddim_errors(500);
    eprintln!(
        "DDIM vs f64: {f64_50:.2e} (50), {f64_500:.2e} (500); vs ODE: {ode_50:.2e}, {ode_500:.2e}"
    );
    for (steps, e, tol) in [
        (50, f64_50, DDIM_50_F64_TOL),
        (500, f64_500, DDIM_500_F64_TOL),
    ] {
        assert!(
            e < tol,
            "{steps} steps: {e:.2e} from DDIM in f64 (tolerance {tol:.1e})"
        );
    }
    assert!(
        ode_50 < DDIM_50_ODE_TOL && ode_500 < DDIM_500_ODE_TOL,
        "from the ODE's answer: {ode_50:.2e} at 50 steps, {ode_500:.2e} at 500"
    );
    let ratio = ode_50 / ode_500;
    assert!(
        FIRST_ORDER_RATIO.contains(&ratio),
        "error ratio 50 / 500 steps {ratio:.2}, a first-order solver gives 10"
    );
}

/// Images per sampler in the distribution test: 1000 × 32 values, so one standard error is
/// s/√n = 2.2e-3 for the mean and s/√(2n) = 1.6e-3 for the standard deviation.
const DIST_IMAGES: usize = 1000;
/// Largest |sample mean − μ| and |sample std − s| over DDIM 500, DPM-Solver++(2M) 100 and DDPM
/// 1000 steps (where each sampler's discretisation error is small), seeded, so the same on
/// every run. Measured mean − μ: −2.14e-3, −2.15e-3, −2.07e-3 (DDIM, DPM, DDPM; about one
/// standard error: DDIM and DPM-Solver++ start from the same x_T); std − s: −4.03e-3,
/// −1.22e-3, −4.22e-3 (x86 avx512). DDPM's is its own bias, not noise: the exact output std of
/// 1000 posterior-variance steps on this data is 0.39619 (−3.8e-3; the affine recursion in
/// f64, as tests/statistics.rs does it). (At 50 and 20 steps DDIM and DPM-Solver++ shrink the
/// std by 0.028 and 0.032: their discretisation error, which the test above pins for DDIM.)
const DIST_MEAN_TOL: f64 = 6.5e-3;
const DIST_STD_TOL: f64 = 1.3e-2;
#[test]
fn every_sampler_reproduces_the_data_distribution() {
    let chw: usize = SHAPE.iter().product();
    let num = DIST_IMAGES;
    let n = (num * chw) as f64;
    for (kind, steps) in [
        (SamplerKind::Ddim, 500),
        (SamplerKind::DpmPp2m, 100),
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
        eprintln!(
            "{kind} {steps} steps: mean - mu {:+.2e}, std - s {:+.2e} (SE of mean {:.2e}, of std {:.2e})",
            mean - MU,
            std - S,
            S / n.sqrt(),
            S / (2.0 * n).sqrt()
        );
        assert!(
            (mean - MU).abs() < DIST_MEAN_TOL,
            "{kind} {steps} steps: mean {mean:.4}, want {MU} ± {DIST_MEAN_TOL:.1e}"
        );
        assert!(
            (std - S).abs() < DIST_STD_TOL,
            "{kind} {steps} steps: std {std:.4}, want {S} ± {DIST_STD_TOL:.1e}"
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
        let Err(e) = generate(&engine, &j, &|| {}) else {
            panic!("{j:?} ran")
        };
        assert!(matches!(e, Error::Usage(_)), "{e:?}");
        assert!(!e.to_string().contains("--"), "a flag in '{e}'");
    }
    assert_eq!(engine.calls(), 0, "nothing ran");
}
