//! [`Session`]: the online path as one owned, reusable value — image encoder, preprocessor,
//! tract's run state and an `Arc<Classifier>` — that turns camera frames into predictions.
//!
//! ```text
//! FrameRef (RGB/BGR/RGBA/GRAY/YUYV/NV12/I420/JPEG) → Preprocessor::run_frame → encoder input
//!   → ImageEncoder::run (tract) → L2-normalise → Classifier::logits → top-k → Prediction
//! ```
//!
//! After the first frame of a given size, tipedge's own code allocates nothing per frame (the
//! buffers are the session's; tests/alloc.rs counts, and says what tract's run allocates). A
//! session is `Send`: a daemon builds it and moves it to a worker thread. The classifier can be
//! replaced while frames flow, at a frame boundary: by the owner ([`Session::swap`]) or from any
//! thread through a [`Swapper`] (a file watcher that maps and verifies a new pack off the frame
//! thread); frames already being scored finish on the old classifier, whose mapping is released
//! when its last [`Prediction`] is dropped.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tipedge::classifier::Classifier;
//! use tipedge::encoder::{ImageEncoder, RunOptions};
//! use tipedge::preprocess::{FrameRef, PixelFormat};
//! use tipedge::session::{Session, SessionOptions};
//!
//! let encoder = Arc::new(ImageEncoder::load(
//!     "models/fixtures/efficientnet-lite0/image.onnx".as_ref(),
//!     &RunOptions::default(),
//! )?);
//! let classifier = Arc::new(Classifier::open("textile.pack", &encoder.expect())?);
//! let mut session = Session::new(encoder.clone(), classifier, SessionOptions::default())?;
//!
//! let nv12_bytes = vec![128u8; 640 * 480 * 3 / 2]; // from the camera
//! let frame = FrameRef::packed(&nv12_bytes, 640, 480, PixelFormat::Nv12)?;
//! let prediction = session.classify(&frame)?;
//! if let Some((label, best)) = prediction.best() {
//!     println!("frame {}: {label} {:.3}", prediction.frame, best.prob);
//! }
//!
//! // A new pack, mapped and verified on another thread, is used from the next frame on:
//! let swapper = session.swapper();
//! swapper.swap(Arc::new(Classifier::open("textile-v2.pack", &encoder.expect())?))?;
//! # Ok(())
//! # }
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::adapter::{top_k_at, ScoreScratch, Scored, MAX_TOP_K};
use crate::classifier::Classifier;
use crate::embed::ms;
use crate::encoder::{EncoderState, ImageEncoder, ModelPaths, RunOptions};
use crate::error::{Error, Result};
use crate::kernel::{l2_normalize_rows, MAX_BATCH};
use crate::pack::EncoderId;
use crate::preprocess::{DecodeLimits, FrameRef, PixelFormat, Preprocessor};
use crate::tda::{Tda, TdaConfig};

/// How a session reports and what it accepts.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Classes per prediction, best first (at most [`MAX_TOP_K`]).
    pub top_k: usize,
    /// Largest JPEG frame accepted (decompression-bomb guard).
    pub limits: DecodeLimits,
    /// The reject option: a frame whose best class has a (calibrated) probability below this is
    /// [`Prediction::unknown`] — a part the line has never seen is not silently called the
    /// nearest class. `None` accepts every frame.
    pub min_prob: Option<f32>,
    /// Test-time adaptation ([`crate::tda`]): caches filled from the stream's own confident
    /// and uncertain frames, added to every frame's logits (calibrated ones, when the classifier
    /// has a temperature: [`Tda::adapt_at`]). `None`: off. The caches are emptied
    /// when the classifier is swapped (its classes may differ) and by [`Session::reset_tda`].
    pub tda: Option<TdaConfig>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            top_k: 3,
            limits: DecodeLimits::default(),
            min_prob: None,
            tda: None,
        }
    }
}

/// Where one frame's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FrameTimings {
    /// Frame → model input: JPEG decoding, colour conversion, resize, crop, normalisation.
    pub preprocess_ms: f64,
    /// The image encoder (tract); a batch's time divided by its size.
    pub encode_ms: f64,
    /// Zero-shot term, affinity kernel, top-k.
    pub score_ms: f64,
}

/// One frame's result: the best classes, allocation-free, with the classifier that scored it
/// (its class names; after a swap, the old one until this prediction is dropped).
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The frame's index in this session (0, 1, 2, … over every frame offered, bad ones too).
    pub frame: u64,
    /// Best first.
    pub top: heapless::Vec<Scored, MAX_TOP_K>,
    /// The best class's probability is below the session's `min_prob`: the frame is "unknown".
    pub unknown: bool,
    pub timings: FrameTimings,
    classifier: Arc<Classifier>,
}

impl Prediction {
    /// The class name of `scored`.
    pub fn label(&self, scored: &Scored) -> &str {
        &self.classifier.class_names()[scored.class]
    }
    /// The best class and its name.
    pub fn best(&self) -> Option<(&str, Scored)> {
        self.top.first().map(|s| (self.label(s), *s))
    }
    /// The classifier that produced this prediction.
    pub fn classifier(&self) -> &Arc<Classifier> {
        &self.classifier
    }
}

/// A classifier waiting to be installed at the next frame boundary.
struct SwapSlot {
    pending: AtomicBool,
    next: Mutex<Option<Arc<Classifier>>>,
    encoder: EncoderId,
    dim: usize,
}

impl SwapSlot {
    /// A classifier is usable by this session's encoder only if it was built with it.
    fn check(&self, c: &Classifier) -> Result<()> {
        if c.dim() != self.dim || c.encoder().sha256 != self.encoder.sha256 {
            return Err(Error::Invalid(format!(
                "classifier made with encoder {} (dim {}) cannot serve this session's encoder {} (dim {})",
                c.encoder(),
                c.dim(),
                self.encoder,
                self.dim
            )));
        }
        Ok(())
    }
}

/// A handle that replaces a session's classifier from another thread; the session installs it
/// at its next frame boundary. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Swapper {
    slot: Arc<SwapSlot>,
}

impl Swapper {
    /// Queues `classifier` for the next frame (a later call before that frame wins). Refuses a
    /// classifier made with another encoder; the current one then stays.
    pub fn swap(&self, classifier: Arc<Classifier>) -> Result<()> {
        self.slot.check(&classifier)?;
        *self.slot.next.lock().unwrap_or_else(|p| p.into_inner()) = Some(classifier);
        self.slot.pending.store(true, Ordering::Release);
        Ok(())
    }
}

/// One frame's model input, made ready off the encoder's thread by a [`Preparer`] and consumed
/// by [`Session::classify_prepared`]. Buffers circulate between the two: after warm-up no
/// allocation per frame.
#[derive(Debug, Clone)]
pub struct Prepared {
    pixels: Vec<f32>,
    /// The frame's index (its source's numbering), carried into the [`Prediction`].
    pub frame: u64,
    /// Time spent preparing it.
    pub preprocess_ms: f64,
}

/// The preprocessing half of a [`Session`] ([`Session::preparer`]): decoding, colour
/// conversion, resize, crop and normalisation of a frame into a [`Prepared`] buffer, on any
/// thread.
#[derive(Debug)]
pub struct Preparer {
    preprocessor: Preprocessor,
    limits: DecodeLimits,
    tensor_len: usize,
}

impl Preparer {
    /// The decoding limits (JPEG frames and files).
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// A buffer for one frame's input.
    pub fn buffer(&self) -> Prepared {
        Prepared {
            pixels: vec![0.0; self.tensor_len],
            frame: 0,
            preprocess_ms: 0.0,
        }
    }

    /// Prepares frame `index` into `into`; a bad frame is an error naming its index and the
    /// reason (`into` is then not ready).
    pub fn prepare(&mut self, frame: &FrameRef<'_>, index: u64, into: &mut Prepared) -> Result<()> {
        if into.pixels.len() != self.tensor_len {
            into.pixels = vec![0.0; self.tensor_len];
        }
        let t0 = Instant::now();
        self.preprocessor
            .run_frame(frame, &self.limits, &mut into.pixels)
            .map_err(|e| Error::frame(index, e))?;
        into.frame = index;
        into.preprocess_ms = ms(t0.elapsed());
        Ok(())
    }
}

/// The online path (see the module documentation).
pub struct Session {
    encoder: Arc<ImageEncoder>,
    state: EncoderState,
    preprocessor: Preprocessor,
    /// `batch × dim`: the encoder's output, normalised in place.
    features: Vec<f32>,
    classifier: Arc<Classifier>,
    scratch: ScoreScratch,
    /// `MAX_BATCH × n_classes` of the current classifier.
    logits: Vec<f32>,
    slot: Arc<SwapSlot>,
    options: SessionOptions,
    next_frame: u64,
    tda: Option<Tda>,
}

impl Session {
    /// A session over a loaded encoder and a classifier built with it.
    pub fn new(
        encoder: Arc<ImageEncoder>,
        classifier: Arc<Classifier>,
        options: SessionOptions,
    ) -> Result<Session> {
        if options.top_k == 0 || options.top_k > MAX_TOP_K {
            return Err(Error::Invalid(format!(
                "top-k must be 1..={MAX_TOP_K}, not {}",
                options.top_k
            )));
        }
        if let Some(p) = options.min_prob {
            if !(p > 0.0 && p < 1.0) {
                return Err(Error::Invalid(format!(
                    "the minimum probability must lie strictly between 0 and 1, not {p}"
                )));
            }
        }
        let slot = Arc::new(SwapSlot {
            pending: AtomicBool::new(false),
            next: Mutex::new(None),
            encoder: encoder.id().clone(),
            dim: encoder.dim(),
        });
        slot.check(&classifier)?;
        let tda = options
            .tda
            .map(|cfg| Tda::new(cfg, encoder.dim(), classifier.n_classes()))
            .transpose()?;
        Ok(Session {
            state: encoder.state()?,
            preprocessor: Preprocessor::new(encoder.recipe().clone()),
            features: vec![0.0; encoder.batch() * encoder.dim()],
            scratch: classifier.scratch(),
            logits: vec![0.0; MAX_BATCH * classifier.n_classes()],
            classifier,
            encoder,
            slot,
            options,
            next_frame: 0,
            tda,
        })
    }

    /// Loads the model's image tower and maps + verifies the pack made with it.
    pub fn open(
        model: &Path,
        pack: &Path,
        run: &RunOptions,
        options: SessionOptions,
    ) -> Result<Session> {
        let paths = ModelPaths::resolve(model)?;
        let encoder = Arc::new(ImageEncoder::load(&paths.image, run)?);
        let classifier = Arc::new(Classifier::open(pack, &encoder.expect())?);
        Session::new(encoder, classifier, options)
    }

    pub fn encoder(&self) -> &Arc<ImageEncoder> {
        &self.encoder
    }
    /// The classifier the next frame will be scored with (after any queued swap).
    pub fn classifier(&self) -> &Arc<Classifier> {
        &self.classifier
    }
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }
    /// Frames offered so far (the next frame's index).
    pub fn frames(&self) -> u64 {
        self.next_frame
    }

    /// Counts a frame rejected before it reached the session (a caller that could not describe
    /// it as a [`FrameRef`]: a buffer shorter than its size, a stride below a row) and returns
    /// its index, so that frame indices stay those of every frame offered.
    pub fn reject_frame(&mut self) -> u64 {
        let index = self.next_frame;
        self.next_frame += 1;
        index
    }

    /// Replaces the classifier now (it must be made with this session's encoder); returns the
    /// old one. Reallocates the scoring buffers only if the class count changes.
    pub fn swap(&mut self, classifier: Arc<Classifier>) -> Result<Arc<Classifier>> {
        self.slot.check(&classifier)?;
        Ok(self.install(classifier))
    }

    /// A handle for swapping the classifier from another thread.
    pub fn swapper(&self) -> Swapper {
        Swapper {
            slot: Arc::clone(&self.slot),
        }
    }

    fn install(&mut self, classifier: Arc<Classifier>) -> Arc<Classifier> {
        if !self.scratch.fits(classifier.dim(), classifier.n_classes()) {
            self.scratch = classifier.scratch();
            self.logits = vec![0.0; MAX_BATCH * classifier.n_classes()];
        }
        if let Some(t) = &mut self.tda {
            if t.n_classes() == classifier.n_classes() {
                t.reset();
            } else {
                *t = Tda::new(*t.config(), t.dim(), classifier.n_classes())
                    .expect("a configuration that was accepted once");
            }
        }
        std::mem::replace(&mut self.classifier, classifier)
    }

    /// Test-time adaptation's caches, when [`SessionOptions::tda`] is set.
    pub fn tda(&self) -> Option<&Tda> {
        self.tda.as_ref()
    }

    /// Empties the test-time adaptation caches (a new batch or product on the line).
    pub fn reset_tda(&mut self) {
        if let Some(t) = &mut self.tda {
            t.reset();
        }
    }

    /// The frame boundary: installs a classifier queued by a [`Swapper`].
    fn take_pending_swap(&mut self) {
        if self.slot.pending.swap(false, Ordering::AcqRel) {
            let next = self
                .slot
                .next
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(c) = next {
                self.install(c);
            }
        }
    }

    /// Classifies one frame. A bad frame is an error naming its index and the reason; the
    /// session goes on with the next.
    pub fn classify(&mut self, frame: &FrameRef<'_>) -> Result<Prediction> {
        self.take_pending_swap();
        let index = self.next_frame;
        self.next_frame += 1;
        let t0 = Instant::now();
        self.preprocessor
            .run_frame(frame, &self.options.limits, self.state.image_mut(0))
            .map_err(|e| Error::frame(index, e))?;
        self.encode_and_score(index, ms(t0.elapsed()))
    }

    /// A preparing half for another thread: a pipeline preprocesses frame n + 1 with it while
    /// this session encodes frame n (see [`Preparer`]).
    pub fn preparer(&self) -> Preparer {
        Preparer {
            preprocessor: Preprocessor::new(self.encoder.recipe().clone()),
            limits: self.options.limits,
            tensor_len: self.state.tensor_len(),
        }
    }

    /// Classifies a frame a [`Preparer`] made ready: its input goes into the encoder without a
    /// copy (batch 1), and `prepared` gets a buffer back to prepare the next frame into. The
    /// prediction carries `prepared.frame` as its index.
    pub fn classify_prepared(&mut self, prepared: &mut Prepared) -> Result<Prediction> {
        self.take_pending_swap();
        self.next_frame += 1;
        let index = prepared.frame;
        if prepared.pixels.len() != self.state.tensor_len() {
            return Err(Error::frame(
                index,
                format!(
                    "prepared input of {} values, the encoder takes {}",
                    prepared.pixels.len(),
                    self.state.tensor_len()
                ),
            ));
        }
        self.state.load_image(&mut prepared.pixels);
        self.encode_and_score(index, prepared.preprocess_ms)
    }

    /// Encodes image 0 of the input and scores it: the shared end of [`Session::classify`] and
    /// [`Session::classify_prepared`].
    fn encode_and_score(&mut self, index: u64, preprocess_ms: f64) -> Result<Prediction> {
        let encode_ms = self.encode(1).map_err(|e| Error::frame(index, e))?;
        let mut timings = FrameTimings {
            preprocess_ms,
            encode_ms,
            score_ms: 0.0,
        };
        let t2 = Instant::now();
        let (dim, nc) = (self.encoder.dim(), self.classifier.n_classes());
        if let Some(why) = not_finite(&self.features[..dim], "the image encoder's feature is") {
            return Err(Error::frame(index, why));
        }
        self.classifier
            .logits(
                &mut self.scratch,
                &self.features[..dim],
                &mut self.logits[..nc],
            )
            .map_err(|e| Error::frame(index, e))?;
        if let Some(why) = not_finite(&self.logits[..nc], "the logits are") {
            return Err(Error::frame(index, why));
        }
        if let Some(t) = &mut self.tda {
            let temperature = self.classifier.temperature().unwrap_or(1.0);
            t.adapt_at(&self.features[..dim], &mut self.logits[..nc], temperature)
                .map_err(|e| Error::frame(index, e))?;
        }
        let top = self.top(&self.logits[..nc]);
        timings.score_ms = ms(t2.elapsed());
        Ok(Prediction {
            frame: index,
            unknown: self.is_unknown(&top),
            top,
            timings,
            classifier: Arc::clone(&self.classifier),
        })
    }

    /// An RGB image (a decoded file) as a frame.
    pub fn classify_image(&mut self, image: &image::RgbImage) -> Result<Prediction> {
        let frame = FrameRef::packed(
            image.as_raw(),
            image.width(),
            image.height(),
            PixelFormat::Rgb24,
        )
        .map_err(|e| Error::frame(self.next_frame, e))?;
        self.classify(&frame)
    }

    /// Classifies frames in runs of the encoder's batch size (the graph was optimised for it);
    /// one result per frame, in order: a bad frame gets its error and the others go on. The
    /// encode time of a run is shared equally by its frames.
    pub fn classify_batch(&mut self, frames: &[FrameRef<'_>]) -> Vec<Result<Prediction>> {
        let mut results = Vec::with_capacity(frames.len());
        for run in frames.chunks(self.encoder.batch()) {
            self.take_pending_swap();
            self.classify_run(run, &mut results);
        }
        results
    }

    fn classify_run(&mut self, frames: &[FrameRef<'_>], results: &mut Vec<Result<Prediction>>) {
        // Preprocess the good frames into the batch rows: (result slot, frame index, ms).
        let mut rows: Vec<(usize, u64, f64)> = Vec::with_capacity(frames.len());
        for frame in frames {
            let index = self.next_frame;
            self.next_frame += 1;
            let t0 = Instant::now();
            let row = rows.len();
            match self.preprocessor.run_frame(
                frame,
                &self.options.limits,
                self.state.image_mut(row),
            ) {
                Ok(()) => {
                    rows.push((results.len(), index, ms(t0.elapsed())));
                    // Replaced by the prediction below.
                    results.push(Err(Error::frame(index, "not scored")));
                }
                Err(e) => results.push(Err(Error::frame(index, e))),
            }
        }
        if rows.is_empty() {
            return;
        }
        let n = rows.len();
        let encode_ms = match self.encode(n) {
            Ok(t) => t / n as f64,
            Err(e) => {
                let reason = e.to_string();
                for &(at, index, _) in &rows {
                    results[at] = Err(Error::frame(index, reason.as_str()));
                }
                return;
            }
        };
        let (dim, nc) = (self.encoder.dim(), self.classifier.n_classes());
        for (chunk_no, chunk) in rows.chunks(MAX_BATCH).enumerate() {
            let start = chunk_no * MAX_BATCH;
            let t2 = Instant::now();
            let scored = self.classifier.logits(
                &mut self.scratch,
                &self.features[start * dim..(start + chunk.len()) * dim],
                &mut self.logits[..chunk.len() * nc],
            );
            let score_ms = ms(t2.elapsed()) / chunk.len() as f64;
            for (j, &(at, index, preprocess_ms)) in chunk.iter().enumerate() {
                let feature = &self.features[(start + j) * dim..(start + j + 1) * dim];
                let bad = not_finite(feature, "the image encoder's feature is")
                    .or_else(|| not_finite(&self.logits[j * nc..(j + 1) * nc], "the logits are"));
                if let (Ok(()), Some(why)) = (&scored, bad) {
                    results[at] = Err(Error::frame(index, why));
                    continue;
                }
                // In frame order: each frame enters the TDA caches before the next is scored.
                let adapted = match (&scored, &mut self.tda) {
                    (Ok(()), Some(t)) => t.adapt_at(
                        &self.features[(start + j) * dim..(start + j + 1) * dim],
                        &mut self.logits[j * nc..(j + 1) * nc],
                        self.classifier.temperature().unwrap_or(1.0),
                    ),
                    _ => Ok(()),
                };
                results[at] = match scored.as_ref().and(adapted.as_ref()) {
                    Ok(_) => Ok({
                        let top = self.top(&self.logits[j * nc..(j + 1) * nc]);
                        Prediction {
                            frame: index,
                            unknown: self.is_unknown(&top),
                            top,
                            timings: FrameTimings {
                                preprocess_ms,
                                encode_ms,
                                score_ms,
                            },
                            classifier: Arc::clone(&self.classifier),
                        }
                    }),
                    Err(e) => Err(Error::frame(index, e)),
                };
            }
        }
    }

    /// The best classes of one row of logits, with the classifier's calibrated probabilities.
    /// (Callers have refused non-finite logits: see [`not_finite`].)
    fn top(&self, logits: &[f32]) -> heapless::Vec<Scored, MAX_TOP_K> {
        let t = self.classifier.temperature().unwrap_or(1.0);
        top_k_at(logits, self.options.top_k, t)
    }

    /// Whether the best class falls below the reject threshold.
    fn is_unknown(&self, top: &[Scored]) -> bool {
        match (self.options.min_prob, top.first()) {
            (Some(p), Some(best)) => best.prob < p,
            _ => false,
        }
    }

    /// The unit-norm feature of one frame (what `tipedge embed` and Python's `embed` return).
    pub fn embed(&mut self, frame: &FrameRef<'_>) -> Result<&[f32]> {
        let index = self.next_frame;
        self.next_frame += 1;
        self.preprocessor
            .run_frame(frame, &self.options.limits, self.state.image_mut(0))
            .map_err(|e| Error::frame(index, e))?;
        self.encode(1).map_err(|e| Error::frame(index, e))?;
        Ok(&self.features[..self.encoder.dim()])
    }

    /// How often the encoder's input tensor had to be allocated anew (see
    /// [`EncoderState::input_replacements`]).
    pub fn input_replacements(&self) -> u64 {
        self.state.input_replacements()
    }

    /// The unit-norm feature of the last frame classified (by [`Session::classify`] or
    /// [`Session::classify_prepared`]) or embedded: what enrolment from a stream keeps as a key.
    pub fn last_feature(&self) -> &[f32] {
        &self.features[..self.encoder.dim()]
    }

    /// The logits of the last frame classified with [`Session::classify`].
    pub fn last_logits(&self) -> &[f32] {
        &self.logits[..self.classifier.n_classes()]
    }

    /// Runs the encoder on the first `n` rows of the input and L2-normalises the features.
    /// Returns the time it took, in ms.
    fn encode(&mut self, n: usize) -> Result<f64> {
        let dim = self.encoder.dim();
        let t = Instant::now();
        let out = &mut self.features[..n * dim];
        self.encoder.run(&mut self.state, n, out)?;
        l2_normalize_rows(out, dim);
        Ok(ms(t.elapsed()))
    }
}

/// Why `values` cannot be used, if one is NaN or infinite: a frame whose feature or logits are
/// not finite is refused rather than predicted (its top class would be meaningless, and a NaN
/// feature would poison the TDA caches). Allocates only for the refusal.
fn not_finite(values: &[f32], what: &str) -> Option<String> {
    let i = values.iter().position(|v| !v.is_finite())?;
    Some(format!(
        "{what} not finite (value {i} is {}); the frame is not scored",
        values[i]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_move_between_threads_and_swappers_are_shared() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<Session>();
        send_sync::<Swapper>();
        send_sync::<Prediction>();
    }
}
