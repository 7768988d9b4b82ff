//! Camera streams: frames from a pipe, a FIFO, a file or a watched folder through a
//! [`Session`], at the camera's pace.
//!
//! ```text
//! reader thread ─→ latest-frame slot ─→ prepare thread ─→ caller's thread
//!  (FrameSource)    (1 frame; a newer     (Preparer: decode,  (Session::classify_prepared:
//!   never waits      one replaces it:      convert, resize,    encoder + scores, then the
//!   for us)          a stale drop)         normalise)          caller's output callback)
//! ```
//!
//! - **Latest-frame policy** ([`FramePolicy::Latest`]): the reader never waits for the
//!   classifier. When the classifier is slower than the camera, a frame waiting in the slot is
//!   replaced by the newer one and counted as dropped, so a prediction is never more than about
//!   two encoder runs behind the camera however long the stream runs. [`FramePolicy::All`]
//!   makes the reader wait instead (every frame of a file is classified).
//! - **Sampling**: `every` keeps one frame in N, `max_fps` at most that many frames per second
//!   (by arrival time); frames left out this way are counted apart from stale drops.
//! - **Pipelining**: frame n + 1 is decoded and preprocessed on the prepare thread while the
//!   encoder runs frame n on the caller's thread.
//! - **No allocation per frame** in this module after warm-up: three frame buffers circulate
//!   between the reader and the prepare thread, two input buffers between the prepare thread
//!   and the encoder. (A file from a watched folder that is not a JPEG is decoded into a new
//!   image; a bad frame's report allocates its message.)
//! - **Bad input**: a frame that cannot be read or decoded is reported to the callback (frame
//!   index or file, and the reason) and the stream goes on.
//! - **Stopping**: `stop` (SIGINT/SIGTERM in the CLI) ends the run after the frame in flight;
//!   the end of input ends it after the last frame.

pub mod events;
pub mod mjpeg;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod raw;
pub mod source;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::preprocess::{decode_rgb_bytes, is_jpeg, Colorimetry, FrameRef, PixelFormat};
use crate::session::{Prediction, Prepared, Preparer, Session};
pub use source::{FrameSource, Next, RepeatSource};

/// What the bytes of a frame are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameKind {
    /// Raw frames of one format and size (`--format nv12 --size 640x480`).
    Raw {
        format: PixelFormat,
        width: u32,
        height: u32,
        colorimetry: Colorimetry,
    },
    /// One JPEG per frame (MJPEG).
    Jpeg,
    /// Whole image files (a watched folder): JPEG, PNG, ….
    File,
}

/// What happens when frames arrive faster than they are classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePolicy {
    /// A waiting frame is replaced by the newest one (counted as dropped): bounded latency.
    Latest,
    /// The reader waits: every frame is classified (files, tests).
    All,
}

/// How a stream runs.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    pub kind: FrameKind,
    pub policy: FramePolicy,
    /// Keep one frame in `every` (1: all).
    pub every: u64,
    /// At most this many frames per second, by arrival time.
    pub max_fps: Option<f64>,
}

/// What the callback sees for each frame.
#[derive(Debug)]
pub enum Output<'a> {
    /// A classified frame.
    Frame {
        prediction: &'a Prediction,
        /// When the reader had the whole frame.
        arrival: SystemTime,
        /// From arrival to the prediction, in ms (waiting, preprocessing, encoder, scores).
        latency_ms: f64,
        /// The file, for a watched folder.
        path: Option<&'a Path>,
        /// The frame's unit-norm feature ([`Session::last_feature`]).
        feature: &'a [f32],
    },
    /// A frame or file that could not be classified; the stream goes on.
    Bad {
        frame: Option<u64>,
        path: Option<&'a Path>,
        /// One line naming the frame or file and the reason.
        error: &'a str,
    },
}

/// Counts of one run, for the summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StreamStats {
    /// Frames (or files) the reader delivered whole.
    pub read: u64,
    /// Left out by `every` / `max_fps`.
    pub sampled_out: u64,
    /// Replaced in the slot by a newer frame (the classifier was slower than the camera).
    pub dropped: u64,
    /// Classified.
    pub classified: u64,
    /// Bad frames, files or bytes (reported one by one).
    pub bad: u64,
    /// Seconds from start to the end of the run.
    pub seconds: f64,
    /// Latency (arrival → prediction) percentiles over the last `latency_frames` classified
    /// frames (at most 65,536), ms.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub latency_frames: u64,
    /// Whether the run ended by the stop flag (else by the end of input).
    pub stopped: bool,
}

/// A frame's bytes and where they came from.
struct RawFrame {
    bytes: Vec<u8>,
    index: u64,
    arrival: SystemTime,
    arrived: Instant,
    path: Option<PathBuf>,
}

/// A report of a bad item, from the reader or the prepare thread.
struct BadItem {
    frame: Option<u64>,
    path: Option<PathBuf>,
    error: String,
}

/// The reader's side of the hand-over: the latest frame, the free buffers, bad reports.
struct Slot {
    frame: Option<RawFrame>,
    free: Vec<Vec<u8>>,
    bad: std::collections::VecDeque<BadItem>,
    closed: bool,
    read: u64,
    sampled_out: u64,
    dropped: u64,
    /// An I/O error that ended the input.
    failed: Option<String>,
}

struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The prepare thread's hand-over to the caller's thread.
enum Work {
    Ready {
        prepared: Prepared,
        arrival: SystemTime,
        arrived: Instant,
        path: Option<PathBuf>,
    },
    Bad(BadItem),
}

/// Frame buffers between the reader and the prepare thread.
const FRAME_BUFFERS: usize = 3;
/// Input buffers between the prepare thread and the encoder.
const INPUT_BUFFERS: usize = 2;
/// Latency percentiles are over at most this many of the latest frames.
const LATENCY_WINDOW: usize = 1 << 16;
/// How often a waiting thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Runs `source` through `session` until the end of input or `stop`, calling `output` on the
/// caller's thread for every classified or bad frame, in order. Returns the run's counts and
/// the session (for another run).
pub fn run(
    mut session: Session,
    source: Box<dyn FrameSource>,
    options: &StreamOptions,
    stop: &Arc<AtomicBool>,
    mut output: impl FnMut(Output<'_>),
) -> Result<(StreamStats, Session)> {
    if options.every == 0 {
        return Err(Error::Invalid("--every must be at least 1".into()));
    }
    if let Some(f) = options.max_fps {
        if !(f.is_finite() && f > 0.0) {
            return Err(Error::Invalid(format!(
                "--max-fps must be a positive number, not {f}"
            )));
        }
    }
    let t0 = Instant::now();
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            frame: None,
            free: (0..FRAME_BUFFERS - 1).map(|_| Vec::new()).collect(),
            bad: std::collections::VecDeque::new(),
            closed: false,
            read: 0,
            sampled_out: 0,
            dropped: 0,
            failed: None,
        }),
        changed: Condvar::new(),
    });
    let reader = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(stop);
        let options = *options;
        thread::Builder::new()
            .name("tipedge-reader".into())
            .spawn(move || read_frames(source, &shared, &options, &stop))
            .map_err(|e| Error::Invalid(format!("cannot start the reader thread: {e}")))?
    };
    let (work_tx, work_rx) = mpsc::sync_channel::<Work>(1);
    let (free_tx, free_rx) = mpsc::sync_channel::<Prepared>(INPUT_BUFFERS);
    let preparer = session.preparer();
    for _ in 0..INPUT_BUFFERS {
        let _ = free_tx.send(preparer.buffer());
    }
    let preparing = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(stop);
        let kind = options.kind;
        thread::Builder::new()
            .name("tipedge-prepare".into())
            .spawn(move || prepare_frames(preparer, kind, &shared, &stop, &work_tx, &free_rx))
            .map_err(|e| Error::Invalid(format!("cannot start the prepare thread: {e}")))?
    };

    // The last LATENCY_WINDOW latencies, as a ring (a stream may run for days).
    let mut latencies: Vec<f64> = Vec::with_capacity(LATENCY_WINDOW);
    let mut stats = StreamStats::default();
    loop {
        if stop.load(Ordering::Relaxed) {
            stats.stopped = true;
            break;
        }
        let work = match work_rx.recv_timeout(POLL) {
            Ok(w) => w,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match work {
            Work::Ready {
                mut prepared,
                arrival,
                arrived,
                path,
            } => {
                match session.classify_prepared(&mut prepared) {
                    Ok(prediction) => {
                        let latency_ms = arrived.elapsed().as_secs_f64() * 1e3;
                        if latencies.len() < LATENCY_WINDOW {
                            latencies.push(latency_ms);
                        } else {
                            latencies[(stats.classified % LATENCY_WINDOW as u64) as usize] =
                                latency_ms;
                        }
                        stats.classified += 1;
                        output(Output::Frame {
                            prediction: &prediction,
                            arrival,
                            latency_ms,
                            path: path.as_deref(),
                            feature: session.last_feature(),
                        });
                    }
                    Err(e) => {
                        stats.bad += 1;
                        let error = match &path {
                            Some(p) => format!("{}: {e}", p.display()),
                            None => e.to_string(),
                        };
                        output(Output::Bad {
                            frame: Some(prepared.frame),
                            path: path.as_deref(),
                            error: &error,
                        });
                    }
                }
                // Back to the prepare thread; it may have ended.
                let _ = free_tx.try_send(prepared);
            }
            Work::Bad(b) => {
                stats.bad += 1;
                output(Output::Bad {
                    frame: b.frame,
                    path: b.path.as_deref(),
                    error: &b.error,
                });
            }
        }
    }
    // A source that watches the flag itself (a folder) ends the input on a signal.
    stats.stopped |= stop.load(Ordering::Relaxed);
    // Wind down: the reader stops at its next frame (a blocked read is left to the process's
    // end), the prepare thread at its next wait.
    {
        let mut slot = shared.lock();
        slot.closed = true;
        stats.read = slot.read;
        stats.sampled_out = slot.sampled_out;
        stats.dropped = slot.dropped;
        if let Some(f) = slot.failed.take() {
            stats.bad += 1;
            output(Output::Bad {
                frame: None,
                path: None,
                error: &f,
            });
        }
    }
    shared.changed.notify_all();
    drop(work_rx);
    drop(free_tx);
    let _ = preparing.join();
    if !stats.stopped {
        let _ = reader.join();
    }
    stats.seconds = t0.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| -> f64 {
        if latencies.is_empty() {
            0.0
        } else {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        }
    };
    stats.latency_p50_ms = pct(0.5);
    stats.latency_p99_ms = pct(0.99);
    stats.latency_max_ms = latencies.last().copied().unwrap_or(0.0);
    stats.latency_frames = latencies.len() as u64;
    Ok((stats, session))
}

/// The reader thread: frames from the source into the slot, never waiting for the classifier
/// under [`FramePolicy::Latest`].
fn read_frames(
    mut source: Box<dyn FrameSource>,
    shared: &Shared,
    options: &StreamOptions,
    stop: &AtomicBool,
) {
    let min_gap = options.max_fps.map(|f| Duration::from_secs_f64(1.0 / f));
    let mut last_kept: Option<Instant> = None;
    let mut buf = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) || shared.lock().closed {
            break;
        }
        let next = match source.next(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                shared.lock().failed = Some(format!("input: {e}"));
                break;
            }
        };
        let arrived = Instant::now();
        match next {
            Next::End => break,
            Next::Bad {
                index,
                what,
                reason,
            } => {
                let mut slot = shared.lock();
                slot.bad.push_back(BadItem {
                    frame: index,
                    path: None,
                    error: format!("{what}: {reason}"),
                });
                drop(slot);
                shared.changed.notify_all();
            }
            Next::Frame {
                index,
                arrival,
                path,
            } => {
                let mut slot = shared.lock();
                slot.read += 1;
                let sampled = index % options.every == 0
                    && match (min_gap, last_kept) {
                        (Some(gap), Some(last)) => arrived.duration_since(last) >= gap,
                        _ => true,
                    };
                if !sampled {
                    slot.sampled_out += 1;
                    continue;
                }
                last_kept = Some(arrived);
                if options.policy == FramePolicy::All {
                    while slot.frame.is_some() && !slot.closed && !stop.load(Ordering::Relaxed) {
                        slot = shared
                            .changed
                            .wait_timeout(slot, POLL)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    if slot.closed {
                        break;
                    }
                }
                let frame = RawFrame {
                    bytes: std::mem::take(&mut buf),
                    index,
                    arrival,
                    arrived,
                    path,
                };
                if let Some(stale) = slot.frame.replace(frame) {
                    slot.dropped += 1;
                    buf = stale.bytes;
                } else {
                    // Three buffers: with the slot empty, one is always free (see FRAME_BUFFERS).
                    buf = slot.free.pop().unwrap_or_default();
                }
                drop(slot);
                shared.changed.notify_all();
            }
        }
    }
    shared.lock().closed = true;
    shared.changed.notify_all();
}

/// The prepare thread: the latest frame into a model input, then to the caller's thread. It
/// takes an input buffer first and the frame only then, so the frame it prepares is the newest
/// one when the encoder can next take it.
fn prepare_frames(
    mut preparer: Preparer,
    kind: FrameKind,
    shared: &Shared,
    stop: &AtomicBool,
    work: &mpsc::SyncSender<Work>,
    free: &mpsc::Receiver<Prepared>,
) {
    let mut spare: Option<Prepared> = None;
    loop {
        let mut prepared = match spare.take() {
            Some(p) => p,
            None => loop {
                match free.recv_timeout(POLL) {
                    Ok(p) => break p,
                    Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => continue,
                    Err(_) => return,
                }
            },
        };
        // Bad reports first (they are older than the waiting frame), then the frame.
        let (bad, frame) = {
            let mut slot = shared.lock();
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if !slot.bad.is_empty() || slot.frame.is_some() {
                    break;
                }
                if slot.closed {
                    return;
                }
                slot = shared
                    .changed
                    .wait_timeout(slot, POLL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            match slot.bad.pop_front() {
                Some(b) => (Some(b), None),
                None => (None, slot.frame.take()),
            }
        };
        shared.changed.notify_all();
        let item = match (bad, frame) {
            (Some(b), _) => {
                spare = Some(prepared);
                Work::Bad(b)
            }
            (None, Some(frame)) => {
                let result = prepare_one(&mut preparer, kind, &frame, &mut prepared);
                let RawFrame {
                    bytes,
                    arrival,
                    arrived,
                    path,
                    index,
                } = frame;
                shared.lock().free.push(bytes);
                shared.changed.notify_all();
                match result {
                    Ok(()) => Work::Ready {
                        prepared,
                        arrival,
                        arrived,
                        path,
                    },
                    Err(e) => {
                        spare = Some(prepared);
                        Work::Bad(BadItem {
                            frame: Some(index),
                            error: match &path {
                                Some(p) => format!("{}: {e}", p.display()),
                                None => e.to_string(),
                            },
                            path,
                        })
                    }
                }
            }
            (None, None) => {
                spare = Some(prepared);
                continue;
            }
        };
        if work.send(item).is_err() {
            return;
        }
    }
}

fn prepare_one(
    preparer: &mut Preparer,
    kind: FrameKind,
    frame: &RawFrame,
    into: &mut Prepared,
) -> Result<()> {
    let index = frame.index;
    match kind {
        FrameKind::Raw {
            format,
            width,
            height,
            colorimetry,
        } => {
            let f = FrameRef::packed(&frame.bytes, width, height, format)
                .map_err(|e| Error::frame(index, e))?
                .with_colorimetry(colorimetry);
            preparer.prepare(&f, index, into)
        }
        FrameKind::Jpeg => preparer.prepare(&FrameRef::jpeg(&frame.bytes), index, into),
        FrameKind::File => {
            if is_jpeg(&frame.bytes) {
                return preparer.prepare(&FrameRef::jpeg(&frame.bytes), index, into);
            }
            let name = frame.path.as_deref().unwrap_or(Path::new("(file)"));
            let img = decode_rgb_bytes(&frame.bytes, name, preparer.limits())?;
            let f = FrameRef::packed(img.as_raw(), img.width(), img.height(), PixelFormat::Rgb24)
                .map_err(|e| Error::frame(index, e))?;
            preparer.prepare(&f, index, into)
        }
    }
}

/// A file of `tests/data/stream` (made by its `make.sh`), for the readers' tests.
#[cfg(test)]
pub(crate) fn test_fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/stream")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
