//! Offline key construction: the few-shot images of each class → the cache keys, as the
//! official `build_cache_model` makes them (augmented passes averaged, then normalised).

use std::path::PathBuf;

use crate::dataset::LabelledSet;
use crate::embed::{Embedder, Skipped};
use crate::encoder::ImageEncoder;
use crate::error::{Error, Result};
use crate::preprocess::augment::{AugmentPass, Augmentation};
use crate::preprocess::DecodeLimits;

/// Tip-Adapter's `augment_epoch` (10 in its configs): `cache build`'s default passes.
pub const DEFAULT_AUGMENT_EPOCHS: u32 = 10;

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

/// The keys of a shot set, one per readable shot, in the shots' order (class by class).
#[derive(Debug, Clone)]
pub struct ShotKeys {
    pub dim: usize,
    /// `labels.len() × dim`, unit norm.
    pub keys: Vec<f32>,
    /// The class of each key (index into the shot set's classes).
    pub labels: Vec<u32>,
    /// Every view the keys were averaged from, each L2-normalised on its own
    /// (`view_labels.len() × dim`, pass by pass): what the GDA head is fitted on, as the official
    /// code fits it on the unit-norm features of every augmented view. With 0 passes, the keys.
    /// Empty unless asked for ([`build_keys_and_views`]).
    pub views: Vec<f32>,
    pub view_labels: Vec<u32>,
    /// Unreadable shots, left out.
    pub skipped: Vec<Skipped>,
}

/// Builds the keys from a folder-per-class shot set, as the official `build_cache_model`
/// does: `augment_epochs` passes of random crops and flips, the raw (unnormalised) features of
/// each shot averaged over the passes and L2-normalised once. With 0 passes each key is the
/// unit-norm feature of the eval-recipe image.
///
/// Unreadable shots are skipped and returned; a class left with no readable shot is an error
/// (it could never be predicted). `progress` is called with the number of images encoded.
pub fn build_keys(
    encoder: &ImageEncoder,
    shots: &LabelledSet,
    recipe: &KeyRecipe,
    limits: DecodeLimits,
    progress: impl FnMut(usize),
) -> Result<ShotKeys> {
    build_keys_and_views(encoder, shots, recipe, limits, false, progress)
}

/// [`build_keys`], also keeping every view (`keep_views`: what a GDA layer is fitted on; they
/// take `passes` times the keys' memory, so only when asked).
pub fn build_keys_and_views(
    encoder: &ImageEncoder,
    shots: &LabelledSet,
    recipe: &KeyRecipe,
    limits: DecodeLimits,
    keep_views: bool,
    mut progress: impl FnMut(usize),
) -> Result<ShotKeys> {
    let items = shots.items();
    let paths: Vec<PathBuf> = items.iter().map(|(p, _)| p.clone()).collect();
    let dim = encoder.dim();
    let passes = recipe.augment_epochs.max(1) as usize;
    let mut sums = vec![0f64; paths.len() * dim];
    let mut views = vec![
        0f32;
        if keep_views {
            passes * paths.len() * dim
        } else {
            0
        }
    ];
    let mut failed: Vec<Option<Skipped>> = vec![None; paths.len()];
    let mut embedder = Embedder::new(encoder, limits)?;
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
                    if keep_views {
                        let at = (epoch * paths.len() + e.index) * dim;
                        views[at..at + dim].copy_from_slice(f);
                        crate::kernel::l2_normalize_rows(&mut views[at..at + dim], dim);
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
    // The views of the shots that every pass could read, compacted in place (pass by pass).
    let mut view_labels = Vec::new();
    if keep_views {
        for slot in 0..passes * paths.len() {
            let i = slot % paths.len();
            if failed[i].is_none() {
                let to = view_labels.len() * dim;
                views.copy_within(slot * dim..(slot + 1) * dim, to);
                view_labels.push(items[i].1 as u32);
            }
        }
        views.truncate(view_labels.len() * dim);
    }
    for (i, class) in shots.classes.iter().enumerate() {
        if !labels.contains(&(i as u32)) {
            let first = items
                .iter()
                .zip(&failed)
                .find_map(|((_, c), f)| f.as_ref().filter(|_| *c == i));
            return Err(Error::dataset(
                shots.root.join(&class.folder),
                match first {
                    Some(f) => format!("no readable shot in this class (first: {})", f.reason),
                    None => "no readable shot in this class".into(),
                },
            ));
        }
    }
    Ok(ShotKeys {
        dim,
        keys,
        labels,
        views,
        view_labels,
        skipped: failed.into_iter().flatten().collect(),
    })
}

/// A key from the sum of its `passes` raw features: the mean, L2-normalised (in f64, then
/// rounded once to f32).
pub fn mean_normalized(sum: &[f64], passes: usize) -> impl Iterator<Item = f32> + '_ {
    let mean = move |s: f64| s / passes as f64;
    let norm = sum.iter().map(|&s| mean(s) * mean(s)).sum::<f64>().sqrt();
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    sum.iter().map(move |&s| (mean(s) * inv) as f32)
}
