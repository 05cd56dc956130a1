//! Putting runs on screens: choosing the screen from the view options and the board profile,
//! the live view of one run, signal handling, and the photo-frame loop.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_graphics::prelude::Size;

use crate::boards::Board;
use crate::denoiser::Engine;
use crate::display::layout::Fit;
use crate::display::live::{DrawStats, LiveView};
use crate::display::{self, Common, DisplaySpec, Layout, Parts, Rotation, Scene, Screen};
use crate::error::{Error, Result};
use crate::image::{grid, to_pixels, Pixels};
use crate::pipeline::{generate, Job, Observer, Samples, StepEvent};

/// Gap between grid tiles on screens, in image pixels.
pub const PAD: usize = 2;

/// How pictures are shown: which screen, how it is set up, and what is drawn on it.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    /// Which screen (`Auto`: the board profile's, if present).
    pub display: DisplaySpec,
    /// The screen's size, where it is not the profile's or the driver's default.
    pub size: Option<Size>,
    /// Clockwise rotation of the picture on the screen.
    pub rotation: Rotation,
    /// A caption line under the picture: sampler, steps, seed, time.
    pub caption: bool,
    /// While denoising, show the predicted final images every this many steps (0: never).
    pub preview_every: usize,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            display: DisplaySpec::None,
            size: None,
            rotation: Rotation::default(),
            caption: false,
            preview_every: 5,
        }
    }
}

/// The screen opened, if any, and (`Auto` having found none) why the present ones failed.
pub struct Opened {
    pub screen: Option<Box<dyn Screen>>,
    /// `Auto` finding no screen: why each of the profile's present screens failed to open.
    pub failures: Vec<Error>,
}

/// Opens the screen the view options ask for. `Auto` tries the board profile's screens whose
/// device nodes exist, in order, and falls back to none, reporting each failure; an explicit
/// screen that cannot be opened is an error.
pub fn open_screen(d: &ViewOptions, board: Option<&Board>) -> Result<Opened> {
    let opened = |screen| Opened {
        screen,
        failures: vec![],
    };
    let common = Common {
        rotation: d.rotation,
        size: d.size,
    };
    match &d.display {
        DisplaySpec::None => Ok(opened(None)),
        DisplaySpec::Screen(cfg) => {
            let cfg = match board.and_then(|b| b.screen(cfg.kind)) {
                Some(base) => base.merged(cfg),
                None => cfg.clone(),
            };
            display::open(&cfg, common).map(|s| opened(Some(s)))
        }
        DisplaySpec::Auto => {
            let Some(board) = board else {
                return Ok(opened(None));
            };
            let mut failures = vec![];
            for cfg in board.screens.iter().filter(|c| display::present(c)) {
                match display::open(cfg, common) {
                    Ok(s) => return Ok(opened(Some(s))),
                    Err(e) => failures.push(e),
                }
            }
            Ok(Opened {
                screen: None,
                failures,
            })
        }
    }
}

/// The action that ends the process on a second SIGINT (see [`stop_flag`]).
static SECOND_INTERRUPT: std::sync::Mutex<Option<signal_hook::SigId>> = std::sync::Mutex::new(None);

/// A flag raised by SIGINT or SIGTERM (a second SIGINT kills at once, until
/// [`disarm_second_interrupt`]).
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = Arc::new(AtomicBool::new(false));
    let err = |e: std::io::Error| Error::runtime(format!("cannot install signal handlers: {e}"));
    let id = flag::register_conditional_shutdown(SIGINT, 130, stop.clone()).map_err(err)?;
    if let Ok(mut slot) = SECOND_INTERRUPT.lock() {
        *slot = Some(id);
    }
    flag::register(SIGINT, stop.clone()).map_err(err)?;
    flag::register(SIGTERM, stop.clone()).map_err(err)?;
    Ok(stop)
}

/// From here on a second SIGINT no longer kills at once (the output files are being written:
/// it is held until they are complete or removed).
pub fn disarm_second_interrupt() {
    if let Some(id) = SECOND_INTERRUPT.lock().ok().and_then(|mut s| s.take()) {
        signal_hook::low_level::unregister(id);
    }
}

/// The caption of a finished picture, long and short forms.
pub fn captions(sampler: &str, steps: usize, seed: u64, secs: Option<f64>) -> (String, String) {
    match secs {
        Some(t) => (
            format!("{sampler}, {steps} steps, seed {seed}, {t:.2} s"),
            format!("{sampler} {steps}st s{seed} {t:.1}s"),
        ),
        None => (
            format!("{sampler}, {steps} steps, seed {seed}"),
            format!("{sampler} {steps}st s{seed}"),
        ),
    }
}

/// What the screen shows of one run and how.
pub struct View<'a> {
    pub options: &'a ViewOptions,
    pub sampler: &'a str,
    pub steps: usize,
    pub quiet: bool,
}

struct Watch<'a> {
    tick: &'a (dyn Fn() + Sync),
    live: Option<&'a LiveView>,
    stop: Option<&'a AtomicBool>,
    every: usize,
    shape: [usize; 3],
    range: (f32, f32),
}

impl Observer for Watch<'_> {
    fn on_step(&self, event: &StepEvent) {
        (self.tick)();
        if let Some(live) = self.live {
            live.step(event, |x| to_pixels(x, self.shape, self.range));
        }
    }
    fn preview_every(&self) -> usize {
        if self.live.is_some() {
            self.every
        } else {
            0
        }
    }
    fn cancelled(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

/// A finished run and what its screen did.
pub struct Shown {
    pub samples: Samples,
    /// The samples as 8-bit images (converted once, for the screen and the PNG files alike).
    pub images: Vec<Pixels>,
    pub screen: Option<Box<dyn Screen>>,
    pub stats: Option<DrawStats>,
    pub layout: Option<Layout>,
}

/// The layout of `num` images of `shape` on `screen`, with a note when the screen is smaller.
pub fn layout_for(
    screen: &dyn Screen,
    shape: [usize; 3],
    num: usize,
    caption: bool,
    quiet: bool,
) -> (Layout, Pixels) {
    let tile = Pixels {
        width: shape[2],
        height: shape[1],
        channels: if shape[0] >= 3 { 3 } else { 1 },
        data: vec![0; shape[1] * shape[2] * if shape[0] >= 3 { 3 } else { 1 }],
    };
    let empty = grid(&vec![tile.clone(); num], PAD);
    let source = Size::new(empty.width as u32, empty.height as u32);
    let layout = Layout::new(screen.size(), source, caption, true);
    if layout.fit == Fit::Shrunk && !quiet {
        let s = screen.size();
        eprintln!(
            "edge-sample: note: the {}x{} screen is smaller than the {}x{} picture of {num} images: \
             shown shrunk to {}x{} (fewer images fit better)",
            s.width, s.height, source.width, source.height, layout.image.size.width, layout.image.size.height
        );
    }
    (layout, tile)
}

/// Runs `job`, keeping `screen` (if any) live, and draws the finished picture on it.
#[allow(clippy::too_many_arguments)]
pub fn run(
    engine: &dyn Engine,
    job: &Job,
    screen: Option<Box<dyn Screen>>,
    view: &View,
    tick: &(dyn Fn() + Sync),
    stop: Option<&AtomicBool>,
    total_steps: usize,
) -> Result<Shown> {
    let spec = engine.spec();
    let shape = spec.image_shape;
    let range = spec.pixel_range;
    let Some(screen) = screen else {
        let watch = Watch {
            tick,
            live: None,
            stop,
            every: 0,
            shape,
            range,
        };
        let samples = generate(engine, job, &watch)?;
        let images = samples.pixels(range);
        return Ok(Shown {
            samples,
            images,
            screen: None,
            stats: None,
            layout: None,
        });
    };
    let (layout, tile) = layout_for(&*screen, shape, job.num, view.options.caption, view.quiet);
    let caption = (view.options.caption && layout.caption.is_some()).then(|| {
        let (l, s) = captions(view.sampler, view.steps, job.seed, None);
        layout.fit_caption(&l, &s).to_string()
    });
    let live = LiveView::start(
        screen,
        layout.clone(),
        &tile,
        job.num,
        PAD,
        caption,
        total_steps,
    )?;
    let watch = Watch {
        tick,
        live: Some(&live),
        stop,
        every: view.options.preview_every,
        shape,
        range,
    };
    let result = generate(engine, job, &watch);
    let samples = match result {
        Ok(s) => s,
        Err(e) => {
            drop(live); // stops the display thread; the screen keeps its last frame
            return Err(e);
        }
    };
    let images = samples.pixels(range);
    let picture = grid(&images, PAD);
    let (l, s) = captions(
        view.sampler,
        view.steps,
        job.seed,
        Some(samples.elapsed.as_secs_f64()),
    );
    let caption = layout.fit_caption(&l, &s).to_string();
    let (screen, stats) = live.finish(&picture, view.options.caption.then_some(caption.as_str()));
    Ok(Shown {
        samples,
        images,
        screen: Some(screen),
        stats: Some(stats?),
        layout: Some(layout),
    })
}

/// Clears a screen to black.
pub fn clear(screen: &mut dyn Screen, layout: &Layout) -> Result<()> {
    screen.draw(
        layout,
        &Scene {
            image: None,
            caption: None,
            progress: None,
        },
        Parts {
            clear: true,
            last: true,
            ..Parts::default()
        },
    )
}

/// Sleeps `d`, waking early when `stop` rises. Returns whether it did.
pub fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    stop.load(Ordering::Relaxed)
}
