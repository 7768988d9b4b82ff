//! Key recipes chosen on validation (`cache build --val`): the official Tip-Adapter recipe —
//! 10 passes of RandomResizedCrop(scale 0.5–1) + flip averaged into each key — was tuned on
//! object-centric ImageNet photos; a crop that keeps half an inspection image can cut a small
//! defect out. So `cache build --val` builds the keys with each candidate recipe, searches α/β
//! for each on the validation split, and keeps the best, ties going to the simpler recipe.

use crate::adapter::Head;
use crate::dataset::LabelledSet;
use crate::encoder::{ImageEncoder, ModelPaths};
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::pack::OwnedGda;
use crate::preprocess::augment::Augmentation;
use crate::progress::Progress;
use crate::train::build::{build_with_classifier, shots_classifier, BuildOptions, Built};
use crate::train::features::EncodedSplit;
use crate::train::gda::{fit_gda, search_alpha};
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

/// One candidate's result on the validation split (a row of `cache build --val --json` and of
/// the choice record stored in the pack): a key recipe with one head.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecipeScore {
    pub recipe: &'static str,
    /// `tip` (the cache), `gda` (the GDA layer alone) or `both`.
    pub head: &'static str,
    pub augment_epochs: u32,
    /// RandomResizedCrop's area range (`null` for plain and flip, which keep the eval view).
    pub crop_scale: Option<(f64, f64)>,
    /// Validation top-1 (percent) at the best α/β (and GDA α) for these keys; `null` when the
    /// head could not be fitted (see `note`).
    pub val_top1: Option<f64>,
    pub alpha: f32,
    pub beta: f32,
    /// α of the GDA term (heads `gda` and `both`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gda_alpha: Option<f32>,
    /// Why the head was not fitted, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub chosen: bool,
}

/// The keys built with the best candidate and every candidate's score.
#[derive(Debug, Clone)]
pub struct RecipeChoice {
    /// The chosen recipe's cache, with the α/β found for it and the chosen head (its GDA layer
    /// fitted on the recipe's views).
    pub built: Built,
    pub scores: Vec<RecipeScore>,
    pub chosen: RecipeName,
    pub head: Head,
    /// The rule that picked it.
    pub rule: Selection,
}

impl RecipeChoice {
    /// The kept candidate's validation top-1 (percent).
    pub fn val_top1(&self) -> Option<f64> {
        self.scores
            .iter()
            .find(|s| s.chosen)
            .and_then(|s| s.val_top1)
    }
}

/// The α of a GDA layer scored without a zero-shot term and without the cache (an image-only
/// backbone, head `gda`): a positive α cannot change a prediction there, so the official grid's
/// first point (1e-4) would be kept and would only flatten the probabilities; the layer's own
/// scale (1) is kept instead.
pub const GDA_ALONE_ALPHA: f32 = 1.0;

/// How the candidate (recipe, head) is picked from the validation scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// The simplest candidate within one standard error of the best validation top-1 (the
    /// "one-standard-error rule"): a difference the validation split cannot tell from noise is a
    /// tie, and ties go to the simpler candidate (recipes plain, flip, crop-0.8, official; heads
    /// tip, gda, both, recipe first). The standard error is the binomial one of the best
    /// accuracy p on n images, `√(p(1 − p)/n)`.
    #[default]
    OneSe,
    /// The first strictly best validation top-1 (only exact ties go to the simpler).
    Best,
}

impl Selection {
    pub fn name(self) -> &'static str {
        match self {
            Selection::OneSe => "one-se",
            Selection::Best => "best",
        }
    }
}

impl std::str::FromStr for Selection {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Selection, String> {
        [Selection::OneSe, Selection::Best]
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown selection rule '{s}' (one-se or best)"))
    }
}

/// The index of the candidate `rule` keeps among validation top-1 scores (percent; `None`:
/// not fitted) listed from the simplest, on `n` validation images.
pub fn select(scores: &[Option<f64>], n: usize, rule: Selection) -> Option<usize> {
    let best = scores
        .iter()
        .flatten()
        .copied()
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))?;
    let margin = match rule {
        Selection::Best => 0.0,
        Selection::OneSe => {
            let p = best / 100.0;
            100.0 * (p * (1.0 - p) / n.max(1) as f64).sqrt()
        }
    };
    scores
        .iter()
        .position(|v| v.is_some_and(|v| v >= best - margin))
}

/// One fitted candidate: which recipe (index into the built caches), head, and its GDA layer.
struct Fitted {
    recipe: usize,
    head: Head,
    gda: Option<OwnedGda>,
}

/// Builds the cache of `shots` with each of `candidates` (listed from the simplest), each with
/// `epochs` augmented passes; for each, and each of `heads` (from the simplest), searches the
/// parameters on `val` — α/β over `grid` for the cache, the official α grid for the GDA term
/// (fitted on the recipe's views); for `both`, the GDA α on top of the cache at its best α/β —
/// and keeps the candidate `rule` selects, with its parameters. Deterministic: the same seed,
/// the same choice. A head that cannot be fitted (one unaugmented view per class gives GDA no
/// covariance) is reported with the reason and skipped.
#[allow(clippy::too_many_arguments)]
pub fn choose_recipe(
    encoder: &ImageEncoder,
    model: &ModelPaths,
    shots: &LabelledSet,
    options: &BuildOptions,
    candidates: &[RecipeName],
    heads: &[Head],
    rule: Selection,
    val: &EncodedSplit,
    grid: &Grid,
    progress: &mut dyn Progress,
) -> Result<RecipeChoice> {
    if candidates.is_empty() || heads.is_empty() {
        return Err(Error::Invalid(
            "no key recipe or head to choose from".into(),
        ));
    }
    if val.labels.is_empty() {
        return Err(Error::Invalid(
            "the validation split has no readable image".into(),
        ));
    }
    let epochs = options.recipe.augment_epochs.max(1);
    // W depends on the class names and templates, not on the recipe: made once.
    let w = shots_classifier(encoder, model, shots, options, progress)?;
    let kernel = Kernel::detect();
    // Every recipe's cache (with its tuned α/β; the views dropped once the GDA layer is fitted)
    // and every (recipe, head) row, in order of simplicity.
    let mut builts: Vec<Built> = Vec::with_capacity(candidates.len());
    let mut fitted: Vec<Option<Fitted>> = Vec::with_capacity(candidates.len() * heads.len());
    let mut scores = Vec::with_capacity(candidates.len() * heads.len());
    let needs_gda = heads.iter().any(|h| h.uses_gda());
    for &name in candidates {
        let recipe = name.recipe(epochs, options.recipe.seed);
        let mut built = build_with_classifier(
            encoder,
            shots,
            &BuildOptions {
                recipe,
                ..options.clone()
            },
            w.clone(),
            needs_gda,
            progress,
        )?;
        let d = &built.draft;
        let tip = d.model();
        let tuned = tune_model(&tip, &val.features, &val.labels, grid, progress)?;
        let tip = tip.with_params(d.params.with_alpha_beta(tuned.alpha, tuned.beta));
        let layer =
            needs_gda.then(|| fit_gda(&built.views, &built.view_labels, d.n_classes(), d.dim()));
        for &head in heads {
            let row = |val_top1, gda_alpha, note| RecipeScore {
                recipe: name.name(),
                head: head.name(),
                augment_epochs: recipe.augment_epochs,
                crop_scale: (recipe.augment_epochs > 0 && !recipe.augmentation.eval_view)
                    .then_some(recipe.augmentation.scale),
                val_top1,
                alpha: tuned.alpha,
                beta: tuned.beta,
                gda_alpha,
                note,
                chosen: false,
            };
            let (top1, gda) = match (head, &layer) {
                (Head::Tip, _) => (tuned.top1, None),
                (_, Some(Err(e))) => {
                    scores.push(row(None, None, Some(e.to_string())));
                    fitted.push(None);
                    continue;
                }
                (_, Some(Ok(g))) => {
                    // What the GDA term is added to: zero-shot, or the tuned cache model.
                    let base = match head {
                        Head::Gda => tip
                            .classifier()
                            .is_some()
                            .then(|| tip.logits_all(&kernel, &val.features, true)),
                        _ => Some(tip.logits_all(&kernel, &val.features, false)),
                    }
                    .transpose()?;
                    let (mut alpha, top1) =
                        search_alpha(g, base.as_deref(), &val.features, &val.labels)?;
                    if base.is_none() {
                        alpha = GDA_ALONE_ALPHA;
                    }
                    let owned = OwnedGda {
                        weights: g.weights.clone(),
                        bias: g.bias.clone(),
                        alpha,
                    };
                    (top1, Some(owned))
                }
                (_, None) => unreachable!("fitted whenever a head uses GDA"),
            };
            scores.push(row(Some(top1), gda.as_ref().map(|g| g.alpha), None));
            fitted.push(Some(Fitted {
                recipe: builts.len(),
                head,
                gda,
            }));
        }
        built.draft.params = built.draft.params.with_alpha_beta(tuned.alpha, tuned.beta);
        built.views = Vec::new();
        built.view_labels = Vec::new();
        builts.push(built);
    }
    let val_top1: Vec<Option<f64>> = scores.iter().map(|s| s.val_top1).collect();
    let Some(i) = select(&val_top1, val.labels.len(), rule) else {
        let why = scores
            .iter()
            .find_map(|s| s.note.clone())
            .unwrap_or_default();
        return Err(Error::Invalid(format!(
            "no candidate recipe and head could be fitted: {why}"
        )));
    };
    scores[i].chosen = true;
    let Fitted { recipe, head, gda } = fitted.swap_remove(i).expect("selected rows were fitted");
    let mut built = builts.swap_remove(recipe);
    built.draft.set_head(head, gda)?;
    Ok(RecipeChoice {
        built,
        scores,
        chosen: candidates[recipe],
        head,
        rule,
    })
}

/// The choice record a pack stores (FORMAT.md, section `choice`): what was chosen, on how many
/// validation images, and every candidate's row.
pub fn choice_record(choice: &RecipeChoice, val_images: usize) -> String {
    serde_json::json!({
        "chosen_on": "validation",
        "val_images": val_images,
        "rule": choice.rule.name(),
        "recipe": choice.chosen.name(),
        "head": choice.head.name(),
        "candidates": choice.scores,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_standard_error_ties_go_to_the_simpler() {
        // Best 70 % on 100 images: one standard error is √(0.7·0.3/100) = 4.58 points.
        let s = [Some(66.0), None, Some(65.0), Some(70.0), Some(69.0)];
        assert_eq!(select(&s, 100, Selection::Best), Some(3));
        assert_eq!(select(&s, 100, Selection::OneSe), Some(0));
        // On 10,000 images the margin is 0.46 points: 69 is no longer a tie, 70 is kept.
        assert_eq!(select(&s, 10_000, Selection::OneSe), Some(3));
        assert_eq!(
            select(&[Some(50.0), Some(50.0)], 10, Selection::Best),
            Some(0)
        );
        assert_eq!(select(&[None, None], 10, Selection::OneSe), None);
        assert_eq!(select(&[], 10, Selection::OneSe), None);
        assert_eq!("one-se".parse(), Ok(Selection::OneSe));
        assert!("median".parse::<Selection>().is_err());
    }

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
