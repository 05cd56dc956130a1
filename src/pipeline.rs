//! The denoising loop: images split into batches, batches spread over worker threads, each
//! worker with its own engine state, sampler and buffers, all sized before the first step.
//! Inside the loop nothing is allocated outside the engine (tests/alloc.rs proves it).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::denoiser::{Denoiser, Engine, ModelSpec};
use crate::error::{Error, Result};
use crate::image::{to_pixels, Pixels};
use crate::noise::NoiseStream;
use crate::sampler::{Sampler, SamplerConfig, SamplerKind, SigmaSchedule};
use crate::schedule::Schedule;

/// img2img: start from a noised image instead of pure noise.
#[derive(Clone, Debug)]
pub struct InitImage {
    /// One CHW image in model space.
    pub x0: Vec<f32>,
    /// In (0, 1]: the fraction of the steps that run (diffusers' img2img `strength`).
    pub strength: f64,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Job {
    pub sampler: SamplerConfig,
    pub seed: u64,
    pub num: usize,
    /// Worker threads (each runs whole batches).
    pub threads: usize,
    pub init_image: Option<InitImage>,
    /// x_T (or img2img's ε) for every image, `num · C·H·W` values, instead of seeded noise.
    pub init_noise: Option<Vec<f32>>,
}

/// What a worker reports after each network call on its current batch.
pub struct StepEvent<'a> {
    /// Steps done on this batch (1-based) out of `steps`.
    pub step: usize,
    pub steps: usize,
    /// The batch's first image and its number of real images.
    pub first: usize,
    pub count: usize,
    /// The predicted x̂0 of the batch's images (`count · C·H·W` values), on the steps the
    /// observer asked for with [`Observer::preview_every`] and on the last step.
    pub x0: Option<&'a [f32]>,
}

/// Watches the denoising loop (progress bars, live screens) and may stop it.
pub trait Observer: Sync {
    fn on_step(&self, event: &StepEvent);
    /// Report x̂0 every this many steps (0: never).
    fn preview_every(&self) -> usize {
        0
    }
    /// Checked after every step; `true` ends the run with [`Error::Interrupted`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// Any `Fn()` observes by being called after every step.
impl<F: Fn() + Sync> Observer for F {
    fn on_step(&self, _: &StepEvent) {
        self()
    }
}

/// The result of a run.
pub struct Samples {
    /// `num · C·H·W` values in model space, before clamping to pixels.
    pub data: Vec<f32>,
    pub shape: [usize; 3],
    /// Network calls per batch actually run.
    pub steps_run: usize,
    /// Sampler steps run (fewer than the calls for Heun: two calls per step but the last).
    pub sampler_steps: usize,
    pub elapsed: Duration,
    /// Wall time of every network call, in call order per worker (for `bench`).
    pub step_times: Vec<Duration>,
}

impl Samples {
    /// The images as 8-bit pixels, `range` (model space) mapping to 0..=255: the one
    /// conversion whose result feeds both the PNG files and the screen.
    pub fn pixels(&self, range: (f32, f32)) -> Vec<Pixels> {
        let chw: usize = self.shape.iter().product();
        self.data
            .chunks(chw)
            .map(|x| to_pixels(x, self.shape, range))
            .collect()
    }
}

impl Job {
    /// The run's settings as one line, the PNG "parameters" text of every picture it makes.
    pub fn parameters(&self, spec: &ModelSpec) -> String {
        let cfg = &self.sampler;
        let mut s = format!(
            "model: {}, sampler: {}, steps: {}, seed: {}, eta: {}, spacing: {}, clip: {}, prediction: {}",
            spec.name,
            cfg.kind,
            cfg.steps,
            self.seed,
            cfg.eta,
            cfg.spacing(),
            cfg.clip,
            spec.prediction.name()
        );
        if cfg.kind == SamplerKind::Ddpm {
            s.push_str(&format!(", variance: {}", cfg.variance));
        }
        if cfg.sigmas != SigmaSchedule::Default {
            s.push_str(&format!(", sigmas: {}", cfg.sigmas));
        }
        if let Some(init) = &self.init_image {
            s.push_str(&format!(", strength: {}", init.strength));
        }
        s.push_str(&format!(", edge-sample {}", env!("CARGO_PKG_VERSION")));
        s
    }
}

/// The first step index that runs for img2img with `strength` (diffusers'
/// `init_timestep = min(int(S·strength), S)`, `t_start = S − init_timestep`).
pub fn img2img_start(steps: usize, strength: f64) -> Result<usize> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(Error::usage(format!(
            "img2img strength must be in (0, 1], found {strength}"
        )));
    }
    let init = ((steps as f64 * strength) as usize).min(steps);
    if init == 0 {
        return Err(Error::usage(format!(
            "img2img strength {strength} of {steps} steps runs no step"
        )));
    }
    Ok(steps - init)
}

/// Runs the job on `engine`. `observer` hears of every network call (from any worker).
pub fn generate(engine: &dyn Engine, job: &Job, observer: &dyn Observer) -> Result<Samples> {
    let spec = engine.spec();
    let schedule = Schedule::new(spec.schedule)?;
    let sampler_cfg = SamplerConfig {
        prediction: spec.prediction,
        ..job.sampler
    };
    sampler_cfg.validate(schedule.len())?;
    if job.num == 0 {
        return Err(Error::usage("a job needs at least one image, found 0"));
    }
    let shape = spec.image_shape;
    let chw = shape.iter().product::<usize>();
    if let Some(n) = &job.init_noise {
        if n.len() != job.num * chw {
            return Err(Error::input(format!(
                "init noise holds {} values, expected {} images × {:?}",
                n.len(),
                job.num,
                shape
            )));
        }
    }
    // The first network call that runs (img2img skips the first steps).
    let start = match &job.init_image {
        Some(init) => sampler_cfg
            .kind
            .first_call(img2img_start(sampler_cfg.steps, init.strength)?),
        None => 0,
    };
    let calls = sampler_cfg.kind.calls(sampler_cfg.steps) - start;
    let batch = spec.batch;
    let batches = job.num.div_ceil(batch);
    let workers = job.threads.clamp(1, batches);
    // Cores that no worker takes (fewer batches than threads) split each worker's network
    // calls: its convolutions run on a team of threads.
    let intra_threads = (job.threads / workers).max(1);

    let mut data = vec![0f32; job.num * chw];
    let out = Mutex::new(&mut data);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let times: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
    let t0 = Instant::now();

    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let run = || -> Result<()> {
                    let mut den = engine.new_denoiser(intra_threads)?;
                    let mut sampler = sampler_cfg.build(&schedule)?;
                    let mut w = Worker::new(&mut *sampler, batch, chw, calls * batches);
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= batches {
                            break;
                        }
                        let first = b * batch;
                        let count = batch.min(job.num - first);
                        w.init(job, first, count, start);
                        w.denoise(&mut *den, start, observer)?;
                        let mut o = out.lock().unwrap();
                        o[first * chw..(first + count) * chw].copy_from_slice(&w.x[..count * chw]);
                    }
                    times.lock().unwrap().extend_from_slice(&w.times);
                    Ok(())
                };
                if let Err(e) = run() {
                    failed.store(true, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    Ok(Samples {
        data,
        shape,
        steps_run: calls,
        sampler_steps: sampler_cfg.steps
            - job
                .init_image
                .as_ref()
                .map_or(Ok(0), |i| img2img_start(sampler_cfg.steps, i.strength))?,
        elapsed: t0.elapsed(),
        step_times: times.into_inner().unwrap(),
    })
}

/// One worker's buffers, sized once.
pub struct Worker<'s> {
    sampler: &'s mut dyn Sampler,
    chw: usize,
    streams: Vec<NoiseStream>,
    pub x: Vec<f32>,
    model_out: Vec<f32>,
    noise: Vec<f32>,
    preview: Vec<f32>,
    first: usize,
    count: usize,
    pub times: Vec<Duration>,
}

impl<'s> Worker<'s> {
    /// `timings`: how many network-call durations to record at most.
    pub fn new(
        sampler: &'s mut dyn Sampler,
        batch: usize,
        chw: usize,
        timings: usize,
    ) -> Worker<'s> {
        sampler.prepare(batch * chw);
        Worker {
            sampler,
            chw,
            streams: vec![NoiseStream::new(0, 0); batch],
            x: vec![0.0; batch * chw],
            model_out: vec![0.0; batch * chw],
            noise: vec![0.0; batch * chw],
            preview: vec![0.0; batch * chw],
            first: 0,
            count: batch,
            times: Vec::with_capacity(timings),
        }
    }

    /// Sets x to the starting point of images `first..first + count` (the rest of the batch,
    /// if any, is padding that is computed and discarded). `start`: the first network call
    /// that runs (img2img noises the image to its level).
    pub fn init(&mut self, job: &Job, first: usize, count: usize, start: usize) {
        let chw = self.chw;
        self.first = first;
        self.count = count;
        for (j, stream) in self.streams.iter_mut().enumerate() {
            // Padding slots of a partial batch get streams no real image uses.
            let image = if j < count {
                (first + j) as u64
            } else {
                u64::MAX - j as u64
            };
            *stream = NoiseStream::new(job.seed, image);
            let xj = &mut self.x[j * chw..(j + 1) * chw];
            match (&job.init_noise, j < count) {
                (Some(n), true) => {
                    let g = first + j;
                    xj.copy_from_slice(&n[g * chw..(g + 1) * chw]);
                }
                _ => stream.fill(xj),
            }
            let scale = self.sampler.init_noise_scale();
            if job.init_image.is_none() && scale != 1.0 {
                // diffusers' init_noise_sigma, in the network's input space (σ samplers).
                for v in xj.iter_mut() {
                    *v *= scale;
                }
            }
            if let Some(init) = &job.init_image {
                // The seed's sample_forward: x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε at the first step run.
                let (a, s) = self.sampler.level(start);
                for (v, &x0) in xj.iter_mut().zip(&init.x0) {
                    *v = a * x0 + s * *v;
                }
            }
        }
        self.sampler.reset();
    }

    /// Runs steps `start..S` on the current batch.
    pub fn denoise(
        &mut self,
        den: &mut dyn Denoiser,
        start: usize,
        observer: &dyn Observer,
    ) -> Result<()> {
        let chw = self.chw;
        let steps = self.sampler.timesteps().len();
        let every = observer.preview_every();
        for i in start..steps {
            let t = self.sampler.timesteps()[i];
            let t_call = Instant::now();
            den.run(&self.x, t, &mut self.model_out)?;
            if self.times.len() < self.times.capacity() {
                self.times.push(t_call.elapsed());
            }
            if let Some(bad) = self.model_out.iter().position(|v| !v.is_finite()) {
                return Err(Error::runtime(format!(
                    "the model's output is not finite ({}) at step {} of {steps} (t = {t}), image element {bad}",
                    self.model_out[bad],
                    i + 1
                )));
            }
            if self.sampler.noise_std(i) > 0.0 {
                for (j, stream) in self.streams.iter_mut().enumerate() {
                    stream.fill(&mut self.noise[j * chw..(j + 1) * chw]);
                }
            }
            let done = i + 1 - start;
            let preview = every > 0 && (done.is_multiple_of(every) || i + 1 == steps);
            if preview {
                self.sampler
                    .predict_x0(i, &self.x, &self.model_out, &mut self.preview);
            }
            self.sampler
                .step(i, &mut self.x, &self.model_out, &self.noise);
            // A finite network output can still make a non-finite step (a zero step size, a
            // schedule quantity that overflowed); the network would squash the NaN later.
            if let Some(bad) = self.x.iter().position(|v| !v.is_finite()) {
                return Err(Error::runtime(format!(
                    "the sampler's state is not finite ({}) after step {} of {steps} (t = {t}), image element {bad}",
                    self.x[bad],
                    i + 1
                )));
            }
            observer.on_step(&StepEvent {
                step: done,
                steps: steps - start,
                first: self.first,
                count: self.count,
                x0: preview.then(|| &self.preview[..self.count * chw]),
            });
            if observer.cancelled() {
                return Err(Error::Interrupted);
            }
        }
        Ok(())
    }
}
