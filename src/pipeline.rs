//! Image files → unit-norm features, and the few-shot classifier built from them. Shared by
//! `tipedge classify`, `tipedge demo` and the tests, so they all run the same path.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::adapter::Cache;
use crate::dataset::LabelledSet;
use crate::encoder::ImageEncoder;
use crate::error::{Error, Result};
use crate::kernel::l2_normalize_rows;
use crate::preprocess::augment::{AugmentPass, Augmentation};
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
    preprocessor: Preprocessor,
    limits: DecodeLimits,
    pixels: Vec<f32>,
    augment: Option<AugmentPass>,
    normalize: bool,
}

impl<'a> Embedder<'a> {
    pub fn new(encoder: &'a ImageEncoder, limits: DecodeLimits) -> Self {
        Embedder {
            preprocessor: Preprocessor::new(encoder.recipe().clone()),
            pixels: Vec::with_capacity(encoder.batch() * encoder.recipe().tensor_len()),
            encoder,
            limits,
            augment: None,
            normalize: true,
        }
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
        let tensor_len = self.encoder.recipe().tensor_len();
        let dim = self.encoder.dim();
        let mut pending: Vec<(usize, PathBuf, Timings)> = Vec::with_capacity(batch);
        let mut iter = paths.iter().enumerate().peekable();
        while iter.peek().is_some() {
            self.pixels.clear();
            pending.clear();
            for (index, path) in iter.by_ref() {
                let mut timings = Timings::default();
                let t0 = Instant::now();
                match load_rgb(path, &self.limits) {
                    Ok(img) => {
                        timings.decode_ms = ms(t0.elapsed());
                        let t1 = Instant::now();
                        let start = self.pixels.len();
                        self.pixels.resize(start + tensor_len, 0.0);
                        let out = &mut self.pixels[start..];
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
            let t2 = Instant::now();
            let encoded = self.encoder.encode(&self.pixels, pending.len());
            let per_image = ms(t2.elapsed()) / pending.len() as f64;
            match encoded {
                Ok(mut feats) => {
                    if self.normalize {
                        l2_normalize_rows(&mut feats, dim);
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A file that was skipped, with the one-line reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// How the cache keys are drawn from the shots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyRecipe {
    /// Augmented passes over the shots (Tip-Adapter's `augment_epoch`, 10 in its configs);
    /// 0 encodes each shot once with the model's eval recipe.
    pub augment_epochs: u32,
    pub augmentation: Augmentation,
    pub seed: u64,
}

impl KeyRecipe {
    /// No augmentation: one eval-recipe feature per shot.
    pub fn plain() -> KeyRecipe {
        KeyRecipe {
            augment_epochs: 0,
            augmentation: Augmentation::default(),
            seed: 0,
        }
    }
}

/// Builds the in-memory cache from a folder-per-class shot set, as the official
/// `build_cache_model` does: `augment_epochs` passes of random crops and flips, the raw
/// (unnormalised) features of each shot averaged over the passes and L2-normalised once.
/// With 0 passes each key is the unit-norm feature of the eval-recipe image.
///
/// Unreadable shots are skipped and returned; a class left with no readable shot is an error
/// (it could never be predicted). `progress` is called with the number of images encoded.
pub fn build_cache(
    encoder: &ImageEncoder,
    shots: &LabelledSet,
    recipe: &KeyRecipe,
    limits: DecodeLimits,
    mut progress: impl FnMut(usize),
) -> Result<(Cache, Vec<Skipped>)> {
    let items = shots.items();
    let paths: Vec<PathBuf> = items.iter().map(|(p, _)| p.clone()).collect();
    let dim = encoder.dim();
    let passes = recipe.augment_epochs.max(1) as usize;
    let mut sums = vec![0f64; paths.len() * dim];
    let mut failed: Vec<Option<Skipped>> = vec![None; paths.len()];
    let mut embedder = Embedder::new(encoder, limits);
    embedder.set_normalize(recipe.augment_epochs == 0);
    let mut done = 0;
    for epoch in 0..passes {
        embedder.set_augmentation((recipe.augment_epochs > 0).then_some(AugmentPass {
            augmentation: recipe.augmentation,
            seed: recipe.seed,
            epoch: epoch as u64,
        }));
        embedder.embed_all(&paths, |e| {
            match e.result {
                Ok(f) => {
                    for (s, &v) in sums[e.index * dim..(e.index + 1) * dim].iter_mut().zip(f) {
                        *s += f64::from(v);
                    }
                }
                Err(err) => {
                    failed[e.index].get_or_insert(Skipped {
                        path: e.path,
                        reason: err.to_string(),
                    });
                }
            }
            done += 1;
            progress(done);
        });
    }
    let mut keys = Vec::with_capacity(paths.len() * dim);
    let mut labels = Vec::with_capacity(paths.len());
    for (i, (_, class)) in items.iter().enumerate() {
        if failed[i].is_none() {
            keys.extend(mean_normalized(&sums[i * dim..(i + 1) * dim], passes));
            labels.push(*class as u32);
        }
    }
    for (i, class) in shots.classes.iter().enumerate() {
        if !labels.contains(&(i as u32)) {
            return Err(Error::dataset(
                shots.root.join(&class.folder),
                "no readable shot in this class",
            ));
        }
    }
    let skipped = failed.into_iter().flatten().collect();
    Ok((Cache::new(dim, keys, labels, shots.classes.len())?, skipped))
}

/// A key from the sum of its `passes` raw features: the mean, L2-normalised (in f64, then
/// rounded once to f32).
pub fn mean_normalized(sum: &[f64], passes: usize) -> impl Iterator<Item = f32> + '_ {
    let mean = move |s: f64| s / passes as f64;
    let norm = sum.iter().map(|&s| mean(s) * mean(s)).sum::<f64>().sqrt();
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    sum.iter().map(move |&s| (mean(s) * inv) as f32)
}
