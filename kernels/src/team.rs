//! A small team of threads for splitting one network call between cores: one image on two or
//! four cores, where a batch-1 plan per core (the pipeline's workers) has nothing to spread.
//!
//! A layer of these UNets takes 10–500 µs, so handing work out has to cost well under a
//! microsecond: rayon's scope (a task per part, sleeping workers woken by the OS) measured
//! slower than one thread on them. Here the helpers stay awake between layers, spinning on one
//! atomic word for a couple of milliseconds after their last job before they sleep on a
//! condition variable, and the calling thread takes parts of each job itself.
//!
//! [`Team::run`] hands out the parts `0..parts` of a job one at a time (the caller and the
//! helpers claim the next index with a compare-and-swap), and returns once every part has
//! finished, so the job may borrow the caller's data.

use std::cell::{RefCell, UnsafeCell};
use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::view::DisjointMut;

/// How long a helper spins after a job before it sleeps.
const SPIN_FOR: Duration = Duration::from_millis(2);

type Job = dyn Fn(usize) + Sync;

/// The caller plus `threads − 1` helper threads.
pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    epoch: AtomicU64,
    busy: AtomicBool,
}

struct Shared {
    /// The job's epoch in the high 32 bits, the next unclaimed part in the low 32.
    state: AtomicU64,
    parts: AtomicUsize,
    /// Parts finished in this epoch.
    done: AtomicUsize,
    /// The job, valid from the epoch's start until `done == parts` (lifetime erased: the
    /// caller does not return before then).
    job: UnsafeCell<Option<&'static Job>>,
    stop: AtomicBool,
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller of `Team::run`, before it publishes the epoch
// (release store of `state`) and after every claimed part has finished (acquire load of
// `done`); helpers read it only after claiming a part of that epoch (acquire CAS of `state`).
unsafe impl Sync for Shared {}

const PART_MASK: u64 = 0xffff_ffff;

/// Layers with fewer multiply-adds run on one thread even when a team is given.
pub(crate) const TEAM_MIN_MACS: usize = 1 << 20;

/// Aborts the process if dropped while its thread unwinds: a panicking part must neither leave
/// the caller waiting forever nor let the caller return while helpers still run its job.
struct AbortOnPanic;

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::process::abort();
        }
    }
}

impl Shared {
    /// Claims and runs parts of the job of `epoch` until none is left.
    fn work(&self, epoch: u64) {
        loop {
            let s = self.state.load(Ordering::Acquire);
            let part = (s & PART_MASK) as usize;
            if s >> 32 != epoch || part >= self.parts.load(Ordering::Acquire) {
                return;
            }
            if self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            // SAFETY: the part was claimed in `epoch`, so the job is live until `done` counts
            // it (see `Shared`).
            let job = unsafe { (*self.job.get()).expect("a job is posted") };
            job(part);
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    fn helper(&self) {
        // A helper that panics would leave the caller waiting for its part forever.
        let _guard = AbortOnPanic;
        let mut seen = 0u64;
        loop {
            let since = Instant::now();
            let mut spins = 0u32;
            let epoch = loop {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let e = self.state.load(Ordering::Acquire) >> 32;
                if e != seen {
                    break e;
                }
                spins = spins.wrapping_add(1);
                if !spins.is_multiple_of(256) || since.elapsed() < SPIN_FOR {
                    spin_loop();
                    continue;
                }
                let mut guard = self.lock.lock().unwrap();
                self.sleeping.fetch_add(1, Ordering::SeqCst);
                while self.state.load(Ordering::SeqCst) >> 32 == seen
                    && !self.stop.load(Ordering::SeqCst)
                {
                    guard = self.wake.wait(guard).unwrap();
                }
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
            };
            seen = epoch;
            self.work(epoch);
        }
    }
}

impl Team {
    /// A team of `threads` threads in all (the caller and `threads − 1` helpers).
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            parts: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            stop: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let helpers = (1..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("edge-sample-team-{i}"))
                    .spawn(move || shared.helper())
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Team {
            shared,
            helpers,
            epoch: AtomicU64::new(0),
            busy: AtomicBool::new(false),
        })
    }

    /// Threads in the team, the caller included.
    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `job(0)`, …, `job(parts − 1)` on the team's threads (the caller included) and
    /// returns when all have finished. Not reentrant: a job must not run the team again.
    pub fn run(&self, parts: usize, job: &(dyn Fn(usize) + Sync)) {
        if parts <= 1 || self.helpers.is_empty() {
            (0..parts).for_each(job);
            return;
        }
        assert!(
            parts < PART_MASK as usize,
            "{parts} parts are more than a team handles"
        );
        assert!(
            !self.busy.swap(true, Ordering::Acquire),
            "Team::run called from inside a job, or from two threads"
        );
        let s = &*self.shared;
        // SAFETY: lifetime erased for the helpers; this function does not return before every
        // part of this epoch has finished, and clears the job before returning.
        let erased: &'static Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Job>(job) };
        // SAFETY: no helper reads `job` before the epoch below is published (see `Shared`).
        unsafe { *s.job.get() = Some(erased) };
        s.parts.store(parts, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        // 1 ..= 2³² − 1: never the helpers' initial 0, and it fits the high half of `state`.
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) % PART_MASK + 1;
        s.state.store(epoch << 32, Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap();
            s.wake.notify_all();
        }
        let guard = AbortOnPanic;
        s.work(epoch);
        drop(guard);
        while s.done.load(Ordering::Acquire) < parts {
            spin_loop();
        }
        // SAFETY: every part of this epoch has finished: no helper reads `job` until the next.
        unsafe { *s.job.get() = None };
        self.busy.store(false, Ordering::Release);
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap();
            self.shared.wake.notify_all();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Team({} threads)", self.threads())
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Team>>> = const { RefCell::new(None) };
}

/// Runs `f` with `team` as this thread's current team (see [`current`]).
pub fn with_team<R>(team: &Arc<Team>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<Team>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(team.clone())));
    f()
}

/// The team the current network call may use, if any.
pub fn current() -> Option<Arc<Team>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The `[start, end)` share of `total` items that part `p` of `parts` takes.
pub fn share(total: usize, p: usize, parts: usize) -> std::ops::Range<usize> {
    total * p / parts..total * (p + 1) / parts
}

/// `f(part, first unit)` over `data` whole, or, when a team of several threads is given and
/// `data` holds at least `min` floats, over an even share of whole units of `unit` floats per
/// thread (the last part also takes a trailing partial unit). Same results either way when the
/// units are independent.
pub fn split_units(
    team: Option<&Team>,
    data: &mut [f32],
    unit: usize,
    min: usize,
    f: &(dyn Fn(&mut [f32], usize) + Sync),
) {
    let team = team.filter(|t| t.threads() > 1 && data.len() >= min);
    let Some(team) = team else {
        return f(data, 0);
    };
    let (units, parts, len) = (data.len().div_ceil(unit), team.threads(), data.len());
    let base = DisjointMut::new(data);
    team.run(parts, &|p| {
        let share = share(units, p, parts);
        let (start, end) = (share.start * unit, (share.end * unit).min(len));
        // SAFETY: the parts take disjoint ranges of `data`.
        f(unsafe { base.slice_mut(start..end) }, share.start)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_per_job() {
        let team = Team::new(3).unwrap();
        assert_eq!(team.threads(), 3);
        let counts: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..200 {
            let parts = 1 + round % 37;
            team.run(parts, &|p| {
                counts[p].fetch_add(1, Ordering::Relaxed);
            });
            for (p, c) in counts.iter().enumerate() {
                assert_eq!(
                    c.swap(0, Ordering::Relaxed),
                    (p < parts) as usize,
                    "round {round}"
                );
            }
        }
    }

    #[test]
    fn helpers_that_slept_wake_for_the_next_job() {
        let team = Team::new(2).unwrap();
        std::thread::sleep(SPIN_FOR * 3);
        let ran_elsewhere = AtomicBool::new(false);
        let me = std::thread::current().id();
        // Parts that take a while, so the woken helper gets some.
        for _ in 0..20 {
            team.run(8, &|_| {
                if std::thread::current().id() != me {
                    ran_elsewhere.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
            });
            std::thread::sleep(SPIN_FOR * 2);
        }
        assert!(ran_elsewhere.load(Ordering::Relaxed));
    }

    #[test]
    fn helpers_take_parts_of_every_job_concurrently() {
        // Part 0 waits for part 1: it finishes only if another thread runs part 1 meanwhile,
        // in every job (a helper that missed a job's epoch would leave the caller alone).
        let team = Team::new(2).unwrap();
        for job in 0..6 {
            let other = AtomicBool::new(false);
            let deadline = Instant::now() + Duration::from_secs(30);
            team.run(2, &|p| {
                if p == 0 {
                    while !other.load(Ordering::Acquire) {
                        assert!(
                            Instant::now() < deadline,
                            "job {job}: no helper took part 1"
                        );
                        spin_loop();
                    }
                } else {
                    other.store(true, Ordering::Release);
                }
            });
            // Every other job finds the helper asleep.
            if job % 2 == 1 {
                std::thread::sleep(SPIN_FOR * 3);
            }
        }
    }

    /// A part that panics ends the process with SIGABRT (a helper's panic would leave the
    /// caller waiting forever; the caller's, unwinding out of `run` while helpers still run its
    /// job). The panicking team runs in a child process: this test binary, this test alone.
    #[cfg(unix)]
    #[test]
    fn a_panicking_part_aborts_the_process() {
        const CHILD: &str = "EDGE_SAMPLE_TEAM_PANIC_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let team = Team::new(2).unwrap();
            team.run(2, &|_| panic!("a part panics"));
            return;
        }
        let exe = std::env::current_exe().unwrap();
        // Through qemu when the tests run emulated.
        let mut cmd = crate::testing::command(&exe);
        let name = "team::tests::a_panicking_part_aborts_the_process";
        let out = cmd
            .args(["--exact", name, "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(6),
            "child ended with {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn split_units_hands_each_thread_whole_units_or_runs_whole() {
        // f marks each float with the index of the unit it was given as first + its offset.
        let mark = |d: &mut [f32], first: usize| {
            for (i, v) in d.iter_mut().enumerate() {
                *v = (first * 4 + i) as f32;
            }
        };
        let want: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let team = Team::new(3).unwrap();
        // 30 floats in units of 4 (the last one partial) over 3 threads; then below `min`
        // and without a team: one call on everything.
        for (team, min) in [(Some(&team), 0), (Some(&team), 31), (None, 0)] {
            let mut data = vec![f32::NAN; 30];
            let calls = AtomicUsize::new(0);
            split_units(team, &mut data, 4, min, &|d, first| {
                calls.fetch_add(1, Ordering::Relaxed);
                mark(d, first)
            });
            assert_eq!(data, want, "min {min}");
            let split = team.is_some() && min <= 30;
            assert_eq!(calls.into_inner(), if split { 3 } else { 1 });
        }
    }

    #[test]
    fn debug_names_the_threads() {
        assert_eq!(format!("{:?}", Team::new(2).unwrap()), "Team(2 threads)");
    }

    #[test]
    fn shares_cover_the_range_in_order() {
        for total in [0, 1, 5, 16, 17] {
            for parts in 1..6 {
                let got: Vec<usize> = (0..parts).flat_map(|p| share(total, p, parts)).collect();
                assert_eq!(got, (0..total).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn current_team_is_set_only_inside_with_team() {
        let team = Arc::new(Team::new(2).unwrap());
        assert!(current().is_none());
        with_team(&team, || assert_eq!(current().unwrap().threads(), 2));
        assert!(current().is_none());
    }
}
