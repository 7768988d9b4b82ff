//! Image files → image features, in batches of the encoder's batch size, with each file's
//! decode / preprocess / encode time: what the offline work (cache keys, validation and test
//! features) and `tipedge embed` read images with. A file that cannot be read is reported and
//! the others go on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::encoder::{EncoderState, ImageEncoder};
use crate::error::{Error, Result};
use crate::kernel::l2_normalize_rows;
use crate::preprocess::augment::AugmentPass;
use crate::preprocess::{load_rgb, DecodeLimits, Preprocessor};

/// Where the time of one image went. Encode time is the batch's time divided by its size.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub encode_ms: f64,
}

/// One image's feature (borrowed from the batch's output; unit-norm unless the embedder was
/// told otherwise), or why it has none.
#[derive(Debug)]
pub struct Embedded<'f> {
    /// Position of the image in the list given to [`Embedder::embed_all`].
    pub index: usize,
    pub path: PathBuf,
    pub result: Result<&'f [f32]>,
    pub timings: Timings,
}

/// Decodes, preprocesses and encodes image files in batches of the encoder's batch size.
pub struct Embedder<'a> {
    encoder: &'a ImageEncoder,
    state: EncoderState,
    preprocessor: Preprocessor,
    limits: DecodeLimits,
    features: Vec<f32>,
    augment: Option<AugmentPass>,
    normalize: bool,
}

impl<'a> Embedder<'a> {
    pub fn new(encoder: &'a ImageEncoder, limits: DecodeLimits) -> Result<Self> {
        Ok(Embedder {
            state: encoder.state()?,
            preprocessor: Preprocessor::new(encoder.recipe().clone()),
            features: vec![0.0; encoder.batch() * encoder.dim()],
            encoder,
            limits,
            augment: None,
            normalize: true,
        })
    }

    /// Draw a random augmented view of each image (training) instead of the model's eval
    /// recipe; `None` goes back to the recipe.
    pub fn set_augmentation(&mut self, pass: Option<AugmentPass>) {
        self.augment = pass;
    }

    /// Whether features are L2-normalised (the default) or left raw, as the cache building
    /// of Tip-Adapter averages raw features over augmentation passes before normalising.
    pub fn set_normalize(&mut self, normalize: bool) {
        self.normalize = normalize;
    }

    /// Embeds every path; a file that cannot be read or decoded gets an `Err` entry and the
    /// others go on. `on_item` sees each result as soon as it is ready (for progress and
    /// streaming output).
    pub fn embed_all(&mut self, paths: &[PathBuf], mut on_item: impl FnMut(Embedded<'_>)) {
        let batch = self.encoder.batch();
        let dim = self.encoder.dim();
        let mut pending: Vec<(usize, PathBuf, Timings)> = Vec::with_capacity(batch);
        let mut iter = paths.iter().enumerate().peekable();
        while iter.peek().is_some() {
            pending.clear();
            for (index, path) in iter.by_ref() {
                let mut timings = Timings::default();
                let t0 = Instant::now();
                match load_rgb(path, &self.limits) {
                    Ok(img) => {
                        timings.decode_ms = ms(t0.elapsed());
                        let t1 = Instant::now();
                        let out = self.state.image_mut(pending.len());
                        match &self.augment {
                            Some(pass) => pass.augmentation.apply(
                                &mut self.preprocessor,
                                &img,
                                &mut pass.rng_for(index),
                                out,
                            ),
                            None => self.preprocessor.run(&img, out),
                        }
                        timings.preprocess_ms = ms(t1.elapsed());
                        pending.push((index, path.clone(), timings));
                        if pending.len() == batch {
                            break;
                        }
                    }
                    Err(e) => on_item(Embedded {
                        index,
                        path: path.clone(),
                        result: Err(e),
                        timings,
                    }),
                }
            }
            if pending.is_empty() {
                continue;
            }
            let n = pending.len();
            let t2 = Instant::now();
            let feats = &mut self.features[..n * dim];
            let encoded = self.encoder.run(&mut self.state, n, feats);
            let per_image = ms(t2.elapsed()) / n as f64;
            match encoded {
                Ok(()) => {
                    if self.normalize {
                        l2_normalize_rows(feats, dim);
                    }
                    for ((index, path, mut timings), f) in
                        pending.drain(..).zip(feats.chunks_exact(dim))
                    {
                        timings.encode_ms = per_image;
                        on_item(Embedded {
                            index,
                            path,
                            result: Ok(f),
                            timings,
                        });
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    for (index, path, timings) in pending.drain(..) {
                        let result = Err(Error::image(&path, &reason));
                        on_item(Embedded {
                            index,
                            path,
                            result,
                            timings,
                        });
                    }
                }
            }
        }
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A file that was skipped, with the one-line reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}
