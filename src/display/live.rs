//! The live view: while the workers denoise, a display thread keeps the screen current with a
//! progress bar and, every K steps, the predicted x̂0 of the images in flight. Workers only
//! convert their x̂0 to pixels and hand it over under a short lock, so a slow panel (SPI, I2C)
//! never holds up sampling; the thread draws whatever is newest when it gets to it.
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::layout::{Layout, Parts, Scene};
use super::screen::Screen;
use crate::error::Result;
use crate::image::{grid, Pixels};
use crate::pipeline::StepEvent;

/// How much drawing the live view did.
#[derive(Clone, Copy, Debug, Default)]
pub struct DrawStats {
    pub frames: usize,
    pub time: Duration,
}

struct State {
    tiles: Vec<Pixels>,
    done: usize,
    total: usize,
    image_dirty: bool,
    bar_dirty: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// A screen being kept up to date from another thread.
pub struct LiveView {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<ThreadResult>>,
    layout: Layout,
}

/// The display thread hands its screen back with how it went.
type ThreadResult = (Box<dyn Screen>, Result<DrawStats>);

impl LiveView {
    /// Clears `screen`, draws the empty grid of `num` black `tile`s with `caption`, and starts
    /// the display thread. `total` is the number of network calls the run will make.
    pub fn start(
        mut screen: Box<dyn Screen>,
        layout: Layout,
        tile: &Pixels,
        num: usize,
        pad: usize,
        caption: Option<String>,
        total: usize,
    ) -> Result<LiveView> {
        let tiles = vec![tile.clone(); num];
        let g = grid(&tiles, pad);
        screen.draw(
            &layout,
            &Scene {
                image: Some(&g),
                caption: caption.as_deref(),
                progress: Some(0.0),
            },
            Parts::ALL,
        )?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tiles,
                done: 0,
                total: total.max(1),
                image_dirty: false,
                bar_dirty: false,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let (sh, lay) = (shared.clone(), layout.clone());
        let thread = std::thread::Builder::new()
            .name("edge-sample-screen".into())
            .spawn(move || {
                let result = run(&mut *screen, &sh, &lay, pad);
                (screen, result)
            })
            .map_err(|e| crate::Error::display(format!("cannot start the screen thread: {e}")))?;
        Ok(LiveView {
            shared,
            thread: Some(thread),
            layout,
        })
    }

    /// Called from the workers after each step: counts it and, with an x̂0, replaces the
    /// batch's tiles (`to_tile` turns one image's model-space values into pixels).
    pub fn step(&self, event: &StepEvent, to_tile: impl Fn(&[f32]) -> Pixels) {
        let tiles = event.x0.map(|x0| {
            let chw = x0.len() / event.count.max(1);
            x0.chunks(chw).map(&to_tile).collect::<Vec<_>>()
        });
        let mut s = self.shared.state.lock().unwrap();
        s.done += 1;
        s.bar_dirty = true;
        if let Some(tiles) = tiles {
            for (k, t) in tiles.into_iter().enumerate() {
                if let Some(slot) = s.tiles.get_mut(event.first + k) {
                    *slot = t;
                }
            }
            s.image_dirty = true;
        }
        drop(s);
        self.shared.wake.notify_one();
    }

    /// Stops the thread and draws the finished picture with its caption.
    pub fn finish(
        mut self,
        picture: &Pixels,
        caption: Option<&str>,
    ) -> (Box<dyn Screen>, Result<DrawStats>) {
        self.shared.state.lock().unwrap().stop = true;
        self.shared.wake.notify_one();
        let (mut screen, stats) = self.thread.take().unwrap().join().expect("screen thread");
        let result = stats.and_then(|mut st| {
            let t = Instant::now();
            screen.draw(
                &self.layout,
                &Scene {
                    image: Some(picture),
                    caption,
                    progress: None,
                },
                Parts {
                    last: true,
                    ..Parts::ALL
                },
            )?;
            st.frames += 1;
            st.time += t.elapsed();
            Ok(st)
        });
        (screen, result)
    }
}

impl Drop for LiveView {
    /// An abandoned view (the run failed or was interrupted) stops its thread, which drops
    /// the screen and so restores whatever it changed; the panel keeps its last frame.
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shared.state.lock().unwrap().stop = true;
            self.shared.wake.notify_one();
            let _ = t.join();
        }
    }
}

/// Least time between two previews of the images (a preview redraws the whole picture, which
/// costs milliseconds on a large framebuffer), and between two progress-bar updates.
pub const IMAGE_EVERY: Duration = Duration::from_millis(100);
pub const BAR_EVERY: Duration = Duration::from_millis(33);

fn run(screen: &mut dyn Screen, shared: &Shared, layout: &Layout, pad: usize) -> Result<DrawStats> {
    let mut stats = DrawStats::default();
    let (mut last_image, mut last_bar) = (Instant::now(), Instant::now());
    loop {
        let (tiles, progress) = {
            let mut s = shared.state.lock().unwrap();
            let (image, bar) = loop {
                if s.stop {
                    return Ok(stats);
                }
                let image = s.image_dirty && last_image.elapsed() >= IMAGE_EVERY;
                let bar = s.bar_dirty && last_bar.elapsed() >= BAR_EVERY;
                if image || bar {
                    break (image, bar);
                }
                // Something is pending but not due yet: wake when it is.
                let due = [
                    (s.image_dirty, last_image, IMAGE_EVERY),
                    (s.bar_dirty, last_bar, BAR_EVERY),
                ]
                .iter()
                .filter(|d| d.0)
                .map(|d| d.2.saturating_sub(d.1.elapsed()))
                .min();
                s = match due {
                    Some(wait) => shared.wake.wait_timeout(s, wait).unwrap().0,
                    None => shared.wake.wait(s).unwrap(),
                };
            };
            let tiles = image.then(|| s.tiles.clone());
            if image {
                s.image_dirty = false;
            }
            if bar || image {
                s.bar_dirty = false;
            }
            (tiles, s.done as f32 / s.total as f32)
        };
        let t = Instant::now();
        let picture = tiles.map(|t| grid(&t, pad));
        screen.draw(
            layout,
            &Scene {
                image: picture.as_ref(),
                caption: None,
                progress: Some(progress),
            },
            if picture.is_some() {
                Parts::IMAGE
            } else {
                Parts::BAR
            },
        )?;
        if picture.is_some() {
            last_image = Instant::now();
        }
        last_bar = Instant::now();
        stats.frames += 1;
        stats.time += t.elapsed();
    }
}
