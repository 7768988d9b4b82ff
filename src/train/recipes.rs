//! Key recipes chosen on validation (`cache build --val`): the official Tip-Adapter recipe —
//! 10 passes of RandomResizedCrop(scale 0.5–1) + flip averaged into each key — was tuned on
//! object-centric ImageNet photos; a crop that keeps half an inspection image can cut a small
//! defect out. So `cache build --val` builds the keys with each candidate recipe, searches α/β
//! for each on the validation split, and keeps the best, ties going to the simpler recipe.

use crate::adapter::TipAdapter;
use crate::dataset::LabelledSet;
use crate::encoder::{ImageEncoder, ModelPaths};
use crate::error::{Error, Result};
use crate::preprocess::augment::Augmentation;
use crate::progress::Progress;
use crate::train::build::{build_with_classifier, shots_classifier, BuildOptions, Built};
use crate::train::features::EncodedSplit;
use crate::train::keys::KeyRecipe;
use crate::train::search::Grid;
use crate::train::tune::tune_model;

/// A key recipe `cache build` can be asked for by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeName {
    /// One unaugmented (eval-recipe) view per shot.
    Plain,
    /// Augmented passes of horizontal flips only, of the model's eval view.
    Flip,
    /// Augmented passes of RandomResizedCrop(scale 0.8–1) + flip.
    Crop08,
    /// Tip-Adapter's: augmented passes of RandomResizedCrop(scale 0.5–1) + flip.
    Official,
}

impl RecipeName {
    /// From the simplest to the official one: the order ties are broken in.
    pub const ALL: [RecipeName; 4] = [
        RecipeName::Plain,
        RecipeName::Flip,
        RecipeName::Crop08,
        RecipeName::Official,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RecipeName::Plain => "plain",
            RecipeName::Flip => "flip",
            RecipeName::Crop08 => "crop-0.8",
            RecipeName::Official => "official",
        }
    }

    /// The recipe with `epochs` augmented passes (ignored by `plain`) and `seed`.
    pub fn recipe(self, epochs: u32, seed: u64) -> KeyRecipe {
        let official = Augmentation::default();
        let (augment_epochs, augmentation) = match self {
            RecipeName::Plain => (0, official),
            // The eval view (resize + centre crop), mirrored with probability 0.5.
            RecipeName::Flip => (
                epochs,
                Augmentation {
                    eval_view: true,
                    ..official
                },
            ),
            RecipeName::Crop08 => (
                epochs,
                Augmentation {
                    scale: (0.8, 1.0),
                    ..official
                },
            ),
            RecipeName::Official => (epochs, official),
        };
        KeyRecipe {
            augment_epochs,
            augmentation,
            seed,
        }
    }
}

impl std::str::FromStr for RecipeName {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        RecipeName::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                format!("unknown key recipe '{s}' (plain, flip, crop-0.8, official, or auto)")
            })
    }
}

/// One candidate's result on the validation split (a row of `cache build --val --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecipeScore {
    pub recipe: &'static str,
    pub augment_epochs: u32,
    /// RandomResizedCrop's area range (`null` for plain and flip, which keep the eval view).
    pub crop_scale: Option<(f64, f64)>,
    /// Validation top-1 (percent) at the best α/β for these keys.
    pub val_top1: f64,
    pub alpha: f32,
    pub beta: f32,
    pub chosen: bool,
}

/// The keys built with the best candidate and every candidate's score.
#[derive(Debug, Clone)]
pub struct RecipeChoice {
    /// The chosen recipe's cache, with the α/β found for it.
    pub built: Built,
    pub scores: Vec<RecipeScore>,
    pub chosen: RecipeName,
}

/// Builds the cache of `shots` with each of `candidates` (in order: ties keep the earlier), each
/// with `epochs` augmented passes, searches α/β over `grid` on `val` for each, and returns the
/// best with its α/β. Deterministic: the same seed, the same choice.
#[allow(clippy::too_many_arguments)]
pub fn choose_recipe(
    encoder: &ImageEncoder,
    model: &ModelPaths,
    shots: &LabelledSet,
    options: &BuildOptions,
    candidates: &[RecipeName],
    val: &EncodedSplit,
    grid: &Grid,
    progress: &mut dyn Progress,
) -> Result<RecipeChoice> {
    if candidates.is_empty() {
        return Err(Error::Invalid("no key recipe to choose from".into()));
    }
    if val.labels.is_empty() {
        return Err(Error::Invalid(
            "the validation split has no readable image".into(),
        ));
    }
    let epochs = options.recipe.augment_epochs.max(1);
    // W depends on the class names and templates, not on the recipe: made once.
    let w = shots_classifier(encoder, model, shots, options, progress)?;
    let mut best: Option<(f64, RecipeName, Built)> = None;
    let mut scores = Vec::with_capacity(candidates.len());
    for &name in candidates {
        let recipe = name.recipe(epochs, options.recipe.seed);
        let built = build_with_classifier(
            encoder,
            shots,
            &BuildOptions {
                recipe,
                ..options.clone()
            },
            w.clone(),
            progress,
        )?;
        let d = &built.draft;
        let m = TipAdapter::new(d.keys(), d.text_classifier(), d.params)?;
        let tuned = tune_model(&m, &val.features, &val.labels, grid, progress)?;
        scores.push(RecipeScore {
            recipe: name.name(),
            augment_epochs: recipe.augment_epochs,
            crop_scale: (recipe.augment_epochs > 0 && !recipe.augmentation.eval_view)
                .then_some(recipe.augmentation.scale),
            val_top1: tuned.top1,
            alpha: tuned.alpha,
            beta: tuned.beta,
            chosen: false,
        });
        if best.as_ref().is_none_or(|b| tuned.top1 > b.0) {
            let mut built = built;
            built.draft.params = built.draft.params.with_alpha_beta(tuned.alpha, tuned.beta);
            best = Some((tuned.top1, name, built));
        }
    }
    let (_, chosen, built) = best.expect("at least one candidate");
    for s in &mut scores {
        s.chosen = s.recipe == chosen.name();
    }
    Ok(RecipeChoice {
        built,
        scores,
        chosen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_by_name() {
        for r in RecipeName::ALL {
            assert_eq!(r.name().parse::<RecipeName>(), Ok(r));
        }
        assert!("auto-ish".parse::<RecipeName>().is_err());
        let official = RecipeName::Official.recipe(10, 3);
        assert_eq!(official.augmentation, Augmentation::default());
        assert_eq!((official.augment_epochs, official.seed), (10, 3));
        assert_eq!(RecipeName::Plain.recipe(10, 3).augment_epochs, 0);
        assert!(RecipeName::Flip.recipe(10, 3).augmentation.eval_view);
        assert_eq!(
            RecipeName::Crop08.recipe(10, 3).augmentation.scale,
            (0.8, 1.0)
        );
    }
}
