//! Image files → unit-norm features, and the few-shot classifier built from them. Shared by
//! `tipedge classify`, `tipedge demo` and the tests, so they all run the same path.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::adapter::Cache;
use crate::dataset::LabelledSet;
use crate::encoder::{l2_normalize_rows, ImageEncoder};
use crate::error::{Error, Result};
use crate::preprocess::{load_rgb, DecodeLimits, Preprocessor};

/// Where the time of one image went. Encode time is the batch's time divided by its size.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub encode_ms: f64,
}

/// One image's unit-norm feature (borrowed from the batch's output), or why it has none.
#[derive(Debug)]
pub struct Embedded<'f> {
    pub path: PathBuf,
    pub result: Result<&'f [f32]>,
    pub timings: Timings,
}

/// Decodes, preprocesses and encodes image files in batches of the encoder's batch size.
pub struct Embedder<'a> {
    encoder: &'a ImageEncoder,
    preprocessor: Preprocessor,
    limits: DecodeLimits,
    pixels: Vec<f32>,
}

impl<'a> Embedder<'a> {
    pub fn new(encoder: &'a ImageEncoder, limits: DecodeLimits) -> Self {
        Embedder {
            preprocessor: Preprocessor::new(encoder.recipe().clone()),
            pixels: Vec::with_capacity(encoder.batch() * encoder.recipe().tensor_len()),
            encoder,
            limits,
        }
    }

    /// Embeds every path; a file that cannot be read or decoded gets an `Err` entry and the
    /// others go on. `on_item` sees each result as soon as it is ready (for progress and
    /// streaming output).
    pub fn embed_all(&mut self, paths: &[PathBuf], mut on_item: impl FnMut(Embedded<'_>)) {
        let batch = self.encoder.batch();
        let tensor_len = self.encoder.recipe().tensor_len();
        let dim = self.encoder.dim();
        let mut pending: Vec<(PathBuf, Timings)> = Vec::with_capacity(batch);
        let mut iter = paths.iter().peekable();
        while iter.peek().is_some() {
            self.pixels.clear();
            pending.clear();
            for path in iter.by_ref() {
                let mut timings = Timings::default();
                let t0 = Instant::now();
                match load_rgb(path, &self.limits) {
                    Ok(img) => {
                        timings.decode_ms = ms(t0.elapsed());
                        let t1 = Instant::now();
                        let start = self.pixels.len();
                        self.pixels.resize(start + tensor_len, 0.0);
                        self.preprocessor.run(&img, &mut self.pixels[start..]);
                        timings.preprocess_ms = ms(t1.elapsed());
                        pending.push((path.clone(), timings));
                        if pending.len() == batch {
                            break;
                        }
                    }
                    Err(e) => on_item(Embedded {
                        path: path.clone(),
                        result: Err(e),
                        timings,
                    }),
                }
            }
            if pending.is_empty() {
                continue;
            }
            let t2 = Instant::now();
            let encoded = self.encoder.encode(&self.pixels, pending.len());
            let per_image = ms(t2.elapsed()) / pending.len() as f64;
            match encoded {
                Ok(mut feats) => {
                    l2_normalize_rows(&mut feats, dim);
                    for ((path, mut timings), f) in pending.drain(..).zip(feats.chunks_exact(dim)) {
                        timings.encode_ms = per_image;
                        on_item(Embedded {
                            path,
                            result: Ok(f),
                            timings,
                        });
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    for (path, timings) in pending.drain(..) {
                        let result = Err(Error::image(&path, &reason));
                        on_item(Embedded {
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A file that was skipped, with the one-line reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// Builds the in-memory cache from a folder-per-class shot set (no augmentation): keys are the
/// unit-norm features of the shots, values their class. Unreadable shots are skipped and
/// returned; a class left with no readable shot is an error (it could never be predicted).
pub fn build_cache(
    encoder: &ImageEncoder,
    shots: &LabelledSet,
    limits: DecodeLimits,
    mut progress: impl FnMut(usize),
) -> Result<(Cache, Vec<Skipped>)> {
    let items = shots.items();
    let paths: Vec<PathBuf> = items.iter().map(|(p, _)| p.clone()).collect();
    let label_of: std::collections::HashMap<&Path, u32> = items
        .iter()
        .map(|(p, c)| (p.as_path(), *c as u32))
        .collect();
    let dim = encoder.dim();
    let mut keys = Vec::with_capacity(paths.len() * dim);
    let mut labels = Vec::with_capacity(paths.len());
    let mut skipped = Vec::new();
    let mut done = 0;
    Embedder::new(encoder, limits).embed_all(&paths, |e| {
        match e.result {
            Ok(f) => {
                keys.extend_from_slice(f);
                labels.push(label_of[e.path.as_path()]);
            }
            Err(err) => skipped.push(Skipped {
                path: e.path,
                reason: err.to_string(),
            }),
        }
        done += 1;
        progress(done);
    });
    for (i, class) in shots.classes.iter().enumerate() {
        if !labels.contains(&(i as u32)) {
            return Err(Error::dataset(
                shots.root.join(&class.folder),
                "no readable shot in this class",
            ));
        }
    }
    Ok((Cache::new(dim, keys, labels, shots.classes.len())?, skipped))
}
