//! Building an adapter pack: a few-shot folder (or class names alone, for zero-shot CLIP) →
//! cache keys, class names and, for CLIP, the zero-shot classifier W → a [`PackDraft`] that
//! classifies in memory (`tipedge classify --shots`) or is written as a pack file
//! (`tipedge cache build`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::adapter::{AdapterParams, Head};
use crate::classifier::Classifier;
use crate::dataset::LabelledSet;
use crate::embed::Skipped;
use crate::encoder::{ImageEncoder, ModelPaths, RunOptions};
use crate::error::{Error, Result};
use crate::kernel::KeyDtype;
use crate::pack::{PackDraft, Provenance};
use crate::preprocess::DecodeLimits;
use crate::progress::Progress;
use crate::sidecar::Family;
use crate::train::calibration::calibrate;
use crate::train::features::encode_labelled;
use crate::train::keys::{build_keys_and_views, KeyRecipe};
use crate::train::recipes::{
    choice_record, choose_recipe, RecipeChoice, RecipeName, RecipeScore, Selection,
};
use crate::train::search::Grid;
use crate::zeroshot::{text_classifier, Prompts};

/// How the keys, W and the stored parameters are made.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub recipe: KeyRecipe,
    /// What W is made from (CLIP only): prompt templates or a CoOp context.
    pub prompts: Prompts,
    pub key_dtype: KeyDtype,
    /// α and β stored in the pack; the logit scale is the model's (its sidecar's, else 100).
    pub alpha: f32,
    pub beta: f32,
    /// Creation time stored in the pack (an input, so that output is reproducible).
    pub created_unix: i64,
    pub limits: DecodeLimits,
    /// How the text tower runs (CLIP).
    pub run: RunOptions,
}

/// A built cache: the draft and what went into it.
#[derive(Debug, Clone)]
pub struct Built {
    pub draft: PackDraft,
    /// The class folders on disk, in class order (for telling a query's class by its folder).
    pub class_folders: Vec<String>,
    /// Unreadable shots, left out.
    pub skipped: Vec<Skipped>,
    /// Every view of every readable shot, unit norm, with its class (what a GDA head is fitted
    /// on; see [`crate::train::keys::ShotKeys::views`]). Empty unless asked for.
    pub views: Vec<f32>,
    pub view_labels: Vec<u32>,
}

/// The version string packs record.
pub fn tool_version() -> String {
    format!("tipedge {}", env!("CARGO_PKG_VERSION"))
}

/// The model's logit scale for the zero-shot term: the sidecar's, else CLIP's 100.
pub fn logit_scale_of(encoder: &ImageEncoder) -> f32 {
    encoder
        .sidecar()
        .logit_scale
        .unwrap_or(crate::adapter::LOGIT_SCALE)
}

/// Keys from the `shots` (see [`build_keys`]), W for CLIP, the class names (folder names, `_`
/// read as a space), α/β from `options`, the provenance (K = the largest class, the recipe's
/// epochs and seed).
pub fn build_from_shots(
    encoder: &ImageEncoder,
    model: &ModelPaths,
    shots: &LabelledSet,
    options: &BuildOptions,
    progress: &mut dyn Progress,
) -> Result<Built> {
    let w = shots_classifier(encoder, model, shots, options, progress)?;
    build_with_classifier(encoder, shots, options, w, false, progress)
}

/// CLIP's zero-shot W for the classes of `shots` with `options`' templates (`None` for an
/// image-only backbone): it depends on neither the keys nor their recipe.
pub fn shots_classifier(
    encoder: &ImageEncoder,
    model: &ModelPaths,
    shots: &LabelledSet,
    options: &BuildOptions,
    progress: &mut dyn Progress,
) -> Result<Option<Vec<f32>>> {
    text_classifier(
        encoder,
        model,
        &shots.class_names(),
        &options.prompts,
        &options.run,
        progress,
    )
}

/// [`build_from_shots`] with the zero-shot classifier W already made (`None` for an image-only
/// backbone): what several key recipes over the same classes share. `keep_views` also keeps
/// every view in [`Built::views`] (for a GDA fit).
pub fn build_with_classifier(
    encoder: &ImageEncoder,
    shots: &LabelledSet,
    options: &BuildOptions,
    w: Option<Vec<f32>>,
    keep_views: bool,
    progress: &mut dyn Progress,
) -> Result<Built> {
    let passes = options.recipe.augment_epochs.max(1) as usize;
    progress.start("cache", shots.len() * passes);
    let keys = build_keys_and_views(
        encoder,
        shots,
        &options.recipe,
        options.limits,
        keep_views,
        |n| progress.set(n),
    );
    progress.finish();
    let keys = keys?;
    if keys.labels.is_empty() {
        return Err(Error::dataset(&shots.root, "no shot could be encoded"));
    }
    let class_names = shots.class_names();
    let provenance = Provenance {
        shots: shots.max_per_class() as u32,
        augment_epochs: options.recipe.augment_epochs,
        seed: options.recipe.seed,
        tool_version: tool_version(),
        created_unix: options.created_unix,
    };
    let params = AdapterParams {
        alpha: options.alpha,
        beta: options.beta,
        logit_scale: logit_scale_of(encoder),
    };
    params.check()?;
    let (views, view_labels) = (keys.views, keys.view_labels);
    let has_w = w.is_some();
    let mut draft = PackDraft::from_f32_keys(
        keys.dim,
        keys.keys,
        keys.labels,
        class_names,
        w,
        params,
        encoder.id().clone(),
        provenance,
    )?;
    draft.convert_keys(options.key_dtype)?;
    if has_w {
        draft.prompt_context = options.prompts.context_bytes().map(<[u8]>::to_vec);
    }
    Ok(Built {
        draft,
        class_folders: shots.classes.iter().map(|c| c.folder.clone()).collect(),
        skipped: keys.skipped,
        views,
        view_labels,
    })
}

/// A zero-shot CLIP classifier among `classes`: W from the names and `prompts`, no keys.
pub fn build_zero_shot(
    encoder: &ImageEncoder,
    model: &ModelPaths,
    classes: &[String],
    prompts: &Prompts,
    run: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<Built> {
    if encoder.family() != Family::Clip {
        return Err(Error::model(
            &model.image,
            "an image-only backbone needs shots (it has no text tower for zero-shot)",
        ));
    }
    if classes.is_empty() {
        return Err(Error::Invalid(
            "zero-shot needs class names (or shots, or a pack)".into(),
        ));
    }
    let w = text_classifier(encoder, model, classes, prompts, run, progress)?;
    let params = AdapterParams {
        logit_scale: logit_scale_of(encoder),
        ..AdapterParams::default()
    };
    let mut draft = PackDraft::from_f32_keys(
        encoder.dim(),
        Vec::new(),
        Vec::new(),
        classes.to_vec(),
        w,
        params,
        encoder.id().clone(),
        Provenance {
            tool_version: tool_version(),
            ..Provenance::default()
        },
    )?;
    draft.prompt_context = prompts.context_bytes().map(<[u8]>::to_vec);
    Ok(Built {
        draft,
        class_folders: classes.to_vec(),
        skipped: Vec::new(),
        views: Vec::new(),
        view_labels: Vec::new(),
    })
}

impl Classifier {
    /// A classifier built in memory from a folder of shots (one sub-folder per class) with
    /// `encoder` (see [`build_from_shots`]); unreadable shots are returned beside it.
    pub fn from_shots(
        encoder: &ImageEncoder,
        model: &ModelPaths,
        shots: &Path,
        options: &BuildOptions,
        progress: &mut dyn Progress,
    ) -> Result<(Classifier, Vec<Skipped>)> {
        let set = LabelledSet::read(shots)?;
        let built = build_from_shots(encoder, model, &set, options, progress)?;
        Ok((Classifier::from_draft(built.draft), built.skipped))
    }
}

/// What `tipedge cache build` asks for.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    pub model: &'a ModelPaths,
    pub shots: &'a Path,
    /// Draw this many shots per class (seeded by the recipe's seed); all images if `None`.
    pub shots_per_class: Option<usize>,
    pub options: BuildOptions,
    /// Choose the key recipe and α/β on a validation split (`None`: `options.recipe`, α/β as
    /// given).
    pub val: Option<ValSearch<'a>>,
    pub out: &'a Path,
}

/// `cache build --val`: candidates, split and grid of the choice.
#[derive(Debug, Clone)]
pub struct ValSearch<'a> {
    pub split: &'a Path,
    /// Feature store folder for the split's features.
    pub store: Option<&'a Path>,
    pub grid: &'a Grid,
    /// In order of simplicity: ties keep the earlier.
    pub recipes: Vec<RecipeName>,
    /// The heads to choose from, in the order ties keep (`tip` first).
    pub heads: Vec<Head>,
    /// How the candidate is picked from the validation scores.
    pub select: Selection,
    /// Fit the temperature of calibrated probabilities at the chosen point.
    pub calibrate: bool,
}

/// What `tipedge cache build` did (its `--json` record, `"type": "pack"`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename = "pack")]
pub struct BuildReport {
    pub pack: PathBuf,
    pub classes: Vec<String>,
    pub keys: usize,
    pub dim: usize,
    pub key_dtype: &'static str,
    pub text_classifier: bool,
    pub shots_per_class: u32,
    pub augment_epochs: u32,
    pub seed: u64,
    pub alpha: f32,
    pub beta: f32,
    pub encoder: String,
    pub encoder_sha256: String,
    pub bytes: u64,
    /// With --val: the recipe kept, every candidate's validation score, the chosen point's
    /// validation top-1 and the temperature fitted there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipe: Option<&'static str>,
    /// With --val: the rule that picked the recipe and head (`one-se` or `best`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub select: Option<&'static str>,
    /// The terms the pack scores with (`tip`, `gda`, `both`) and the GDA term's α.
    pub head: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gda_alpha: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recipes: Vec<RecipeScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_top1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// One line per unreadable shot.
    pub skipped: Vec<String>,
    pub seconds: f64,
}

/// The cache of `shots` with the key recipe, head and parameters chosen on `val`'s split
/// ([`choose_recipe`]), the choice recorded in the draft and, if asked, the temperature fitted
/// there: what `cache build --val` writes and `classify --shots --val` scores with.
pub fn build_chosen_on_val(
    encoder: &ImageEncoder,
    model: &ModelPaths,
    shots: &LabelledSet,
    options: &BuildOptions,
    val: &ValSearch<'_>,
    progress: &mut dyn Progress,
) -> Result<RecipeChoice> {
    let split = encode_labelled(
        encoder,
        val.split,
        &shots.class_names(),
        val.store,
        options.limits,
        "val",
        progress,
    )?;
    let mut choice = choose_recipe(
        encoder,
        model,
        shots,
        options,
        &val.recipes,
        &val.heads,
        val.select,
        &split,
        val.grid,
        progress,
    )?;
    let record = choice_record(&choice, split.labels.len());
    let d = &mut choice.built.draft;
    d.choice = Some(record);
    if val.calibrate {
        d.temperature =
            calibrate(&d.model(), &split.features, &split.labels, progress)?.temperature;
    }
    Ok(choice)
}

/// `tipedge cache build`: draws the shots, builds the draft, writes the pack atomically.
pub fn build_pack(
    encoder: &ImageEncoder,
    request: &BuildRequest<'_>,
    progress: &mut dyn Progress,
) -> Result<BuildReport> {
    let t0 = Instant::now();
    let mut shots = LabelledSet::read(request.shots)?;
    if let Some(k) = request.shots_per_class {
        shots = shots.sample_k_shot(k, request.options.recipe.seed)?;
    }
    let (built, choice) = match &request.val {
        None => (
            build_from_shots(encoder, request.model, &shots, &request.options, progress)?,
            None,
        ),
        Some(v) => {
            let choice = build_chosen_on_val(
                encoder,
                request.model,
                &shots,
                &request.options,
                v,
                progress,
            )?;
            let top1 = choice.val_top1();
            (choice.built, Some((choice.chosen, choice.scores, top1)))
        }
    };
    let d = &built.draft;
    d.write(request.out)?;
    let bytes = std::fs::metadata(request.out).map(|m| m.len()).unwrap_or(0);
    Ok(BuildReport {
        pack: request.out.to_path_buf(),
        classes: d.class_names().to_vec(),
        keys: d.n_keys(),
        dim: d.dim(),
        key_dtype: d.key_dtype().name(),
        text_classifier: d.text_classifier().is_some(),
        shots_per_class: d.provenance.shots,
        augment_epochs: d.provenance.augment_epochs,
        seed: d.provenance.seed,
        alpha: d.params.alpha,
        beta: d.params.beta,
        encoder: d.encoder.name.clone(),
        encoder_sha256: d.encoder.sha256_hex(),
        bytes,
        recipe: choice.as_ref().map(|c| c.0.name()),
        select: request.val.as_ref().map(|v| v.select.name()),
        head: d.head().name(),
        gda_alpha: d.gda().map(|g| g.alpha),
        val_top1: choice.as_ref().and_then(|c| c.2),
        temperature: d.temperature,
        recipes: choice.map(|c| c.1).unwrap_or_default(),
        skipped: built.skipped.iter().map(|s| s.reason.clone()).collect(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
