//! The sampling loop allocates nothing of its own: a counting global allocator counts heap
//! allocations made on this thread while the loop runs, except inside the engine call.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use edge_sample::denoiser::{Denoiser, LoadOptions, Model, ModelSource};
use edge_sample::pipeline::{Job, Worker};
use edge_sample::sampler::{SamplerConfig, SamplerKind};
use edge_sample::schedule::Schedule;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The engine: counting paused while it runs.
struct EngineExcluded<D>(D, usize);

impl<D: Denoiser> Denoiser for EngineExcluded<D> {
    fn image_shape(&self) -> [usize; 3] {
        self.0.image_shape()
    }
    fn batch(&self) -> usize {
        self.0.batch()
    }
    fn run(&mut self, x: &[f32], t: usize, out: &mut [f32]) -> edge_sample::Result<()> {
        COUNTING.with(|c| c.set(false));
        let r = self.0.run(x, t, out);
        COUNTING.with(|c| c.set(true));
        self.1 += 1;
        r
    }
}

/// Counts allocations made on this thread while `f` runs.
fn count(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(|c| c.get())
}

#[test]
fn the_counter_sees_allocations() {
    // Without this the zero below could come from an allocator that is not in use.
    let n = count(|| {
        let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(100));
        let mut w = std::hint::black_box(v);
        w.extend_from_slice(&[1; 200]);
        drop(std::hint::black_box(w));
    });
    assert_eq!(n, 2, "one allocation and one growth");
    let excluded = count(|| {
        COUNTING.with(|c| c.set(false));
        drop(std::hint::black_box(vec![0u8; 64]));
        COUNTING.with(|c| c.set(true));
    });
    assert_eq!(excluded, 0, "paused counting counts nothing");
}

#[test]
fn sampling_loop_allocates_nothing_outside_the_engine() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny_unet.onnx");
    let model = Model::load(
        &ModelSource::Path(path),
        &LoadOptions {
            batch: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let schedule = Schedule::tutorial();
    if std::env::var_os("EDGE_SAMPLE_EMULATED").is_some() {
        eprintln!("emulated: the full-length DDPM chain runs 100 steps instead of 1000");
    }
    let mut engine_calls = 0;
    for (kind, eta, steps) in [
        (SamplerKind::Ddpm, 0.0, 20),
        (
            SamplerKind::Ddpm,
            0.0,
            if std::env::var_os("EDGE_SAMPLE_EMULATED").is_some() {
                100
            } else {
                1000
            },
        ),
        (SamplerKind::Ddim, 1.0, 20),
        (SamplerKind::DpmPp2m, 0.0, 20),
        (SamplerKind::DpmPp3m, 0.0, 20),
        (SamplerKind::Euler, 0.0, 20),
        (SamplerKind::EulerAncestral, 0.0, 20),
        (SamplerKind::Heun, 0.0, 10),
    ] {
        let cfg = SamplerConfig {
            kind,
            eta,
            steps,
            ..Default::default()
        };
        let job = Job {
            sampler: cfg,
            seed: 3,
            num: 2,
            threads: 1,
            init_image: None,
            init_noise: None,
        };
        let mut sampler = cfg.build(&schedule).unwrap();
        let mut den = EngineExcluded(model.denoiser().unwrap(), 0);
        let calls = kind.calls(steps);
        let mut worker = Worker::new(&mut *sampler, 2, 784, calls);
        COUNT.with(|c| c.set(0));
        COUNTING.with(|c| c.set(true));
        worker.init(&job, 0, 2, 0);
        let result = worker.denoise(&mut den, 0, &|| {});
        COUNTING.with(|c| c.set(false));
        result.unwrap();
        let n = COUNT.with(|c| c.get());
        assert_eq!(
            n, 0,
            "{kind} {steps} steps: {n} allocations in the sampling loop"
        );
        // The loop really ran: one engine call per step for the batch of 2 (Heun: two but
        // the last).
        assert_eq!(den.1, calls, "{kind}: engine calls");
        engine_calls += den.1;
    }
    assert!(engine_calls > 0);
}
