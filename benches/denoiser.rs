//! Criterion benches: one denoiser call (batch 1 and 16, with tract's own lowering and with
//! each of our kernel sets this CPU runs) and the main job's 20-step run, on the bundled digit
//! model. The per-layer benches (convolutions per kernel set, Winograd, 1×1/strided/transposed,
//! softmax, products, team vs one thread) are the kernel crate's: `cargo bench -p
//! edge-sample-kernels --bench layers`. benches/ort_baseline.py times onnxruntime on the same
//! file and thread counts for the side-by-side table.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edge_sample::denoiser::{Denoiser, Kernels, LoadOptions, Model};
use edge_sample::pipeline::{generate, Job};
use edge_sample::sampler::SamplerConfig;

fn denoiser_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("denoiser_step");
    let mut sets = vec![Kernels::Tract];
    sets.extend(Kernels::all_supported());
    for kernels in sets {
        for batch in [1usize, 16] {
            let source = edge_sample::models::resolve(None).unwrap();
            let model = Model::load(
                &source,
                &LoadOptions {
                    batch,
                    kernels,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut den = model.denoiser().unwrap();
            let n = batch * model.io.image_shape.iter().product::<usize>();
            let mut x = vec![0f32; n];
            edge_sample::noise::NoiseStream::new(0, 0).fill(&mut x);
            let mut out = vec![0f32; n];
            let id = format!("batch{batch}/{}", kernels.describe());
            g.bench_function(BenchmarkId::new("digits", id), |b| {
                b.iter(|| den.run(&x, 500, &mut out).unwrap())
            });
        }
    }
    g.finish();
}

fn main_job(c: &mut Criterion) {
    let mut g = c.benchmark_group("sample_16_images_20_steps");
    g.sample_size(10);
    let source = edge_sample::models::resolve(None).unwrap();
    let model = Model::load(&source, &LoadOptions::default()).unwrap();
    for threads in [1usize, 2] {
        let job = Job {
            sampler: SamplerConfig::default(),
            seed: 0,
            num: 16,
            threads,
            init_image: None,
            init_noise: None,
        };
        g.bench_function(
            BenchmarkId::new("digits", format!("{threads}threads")),
            |b| b.iter(|| generate(&model, &job, &|| {}).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, denoiser_step, main_job);
criterion_main!(benches);
