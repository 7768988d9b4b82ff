//! `tipedge tune`: α/β of a pack chosen on a validation split with the official grid search,
//! written into a new pack.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::adapter::{Head, TipAdapter};
use crate::encoder::ImageEncoder;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::pack::{write_with_alpha_beta, Pack};
use crate::preprocess::DecodeLimits;
use crate::progress::Progress;
use crate::train::calibration::{calibrate, Calibration};
use crate::train::features::encode_labelled;
use crate::train::search::{grid_accuracy, Grid, GridAccuracy};

/// The grid search of `model` over encoded features with a progress stage named `stage`.
pub fn search(
    model: &TipAdapter<'_>,
    features: &[f32],
    labels: &[u32],
    grid: &Grid,
    stage: &str,
    progress: &mut dyn Progress,
) -> Result<GridAccuracy> {
    progress.start(stage, labels.len());
    let acc = grid_accuracy(&Kernel::detect(), model, features, labels, grid, |n| {
        progress.set(n)
    });
    progress.finish();
    acc.map_err(|e| crate::Error::Invalid(e.to_string()))
}

/// The accuracy (percent) of `model` at its own α and β.
pub fn accuracy_at_params(model: &TipAdapter<'_>, features: &[f32], labels: &[u32]) -> Result<f64> {
    let p = model.params();
    let grid = Grid::single(p.alpha, p.beta);
    Ok(search(
        model,
        features,
        labels,
        &grid,
        "score",
        &mut crate::progress::Silent,
    )?
    .accuracy(0, 0))
}

/// The official search's outcome for one model on a split.
#[derive(Debug, Clone)]
pub struct Tuned {
    /// Accuracy (percent) at the model's own α/β, before the search.
    pub before: f64,
    pub alpha: f32,
    pub beta: f32,
    /// Accuracy (percent) at the chosen α/β.
    pub top1: f64,
}

/// Scores `model` at its own α/β, then over `grid`, and keeps the official choice (first
/// strictly best point, β outer, α inner).
pub fn tune_model(
    model: &TipAdapter<'_>,
    features: &[f32],
    labels: &[u32],
    grid: &Grid,
    progress: &mut dyn Progress,
) -> Result<Tuned> {
    let before = accuracy_at_params(model, features, labels)?;
    let (alpha, beta, top1) = search(model, features, labels, grid, "search", progress)?.best();
    Ok(Tuned {
        before,
        alpha,
        beta,
        top1,
    })
}

/// What `tipedge tune` asks for.
#[derive(Debug, Clone)]
pub struct TuneRequest<'a> {
    pub pack: &'a Path,
    /// Validation split: a folder per class, or a split file.
    pub val: &'a Path,
    /// Where the tuned pack goes (may be `pack` itself).
    pub out: &'a Path,
    pub grid: &'a Grid,
    /// Feature store folder; `None` encodes everything and keeps nothing.
    pub store: Option<&'a Path>,
    pub limits: DecodeLimits,
    /// Fit the temperature of calibrated probabilities at the chosen α/β on the same split
    /// (false: the pack is written without one, as the official code has none).
    pub calibrate: bool,
}

/// Grid extent, in the report.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct GridSize {
    pub betas: usize,
    pub alphas: usize,
}

/// Seconds spent, in the report.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TuneSeconds {
    pub encode: f64,
    pub search: f64,
}

/// What `tipedge tune` found (its `--json` record, `"type": "tune"`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename = "tune")]
pub struct TuneReport {
    pub pack: PathBuf,
    pub alpha: f32,
    pub beta: f32,
    /// Validation top-1 (percent) at the chosen α/β.
    pub val_top1: f64,
    /// Validation top-1 at the pack's α/β before tuning.
    pub val_top1_before: f64,
    pub alpha_before: f32,
    pub beta_before: f32,
    pub n_val: usize,
    /// The temperature fitted at the chosen α/β; `null` when not asked (`--no-calibration`).
    pub calibration: Option<Calibration>,
    pub grid: GridSize,
    pub features_from_store: usize,
    pub skipped: Vec<String>,
    pub seconds: TuneSeconds,
}

/// `tipedge tune`: encodes the validation split (through the feature store), scores the pack's
/// own α/β and the whole grid, keeps the official choice (first strictly best point, β outer,
/// α inner), fits the temperature of calibrated probabilities at that point on the same split
/// (unless not asked; a split that cannot fit one keeps T = 1 and says why) and writes the pack
/// with them, atomically.
pub fn tune(
    encoder: &ImageEncoder,
    request: &TuneRequest<'_>,
    progress: &mut dyn Progress,
) -> Result<TuneReport> {
    let t0 = Instant::now();
    let pack = Pack::open(request.pack, &encoder.expect())?;
    if pack.head() == Head::Gda {
        return Err(crate::Error::pack(
            request.pack,
            "the pack scores with its GDA layer alone, so α/β of the cache do not matter; its GDA \
             α was chosen by `cache build --val` (rebuild to choose again)",
        ));
    }
    let val = encode_labelled(
        encoder,
        request.val,
        pack.class_names(),
        request.store,
        request.limits,
        "val",
        progress,
    )?;
    let t_encode = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let before = pack.params();
    // With head `both` the GDA term is part of the logits the search holds fixed.
    let model = pack.model();
    let tuned = tune_model(&model, &val.features, &val.labels, request.grid, progress)?;
    let chosen = model.with_params(before.with_alpha_beta(tuned.alpha, tuned.beta));
    let calibration = request
        .calibrate
        .then(|| calibrate(&chosen, &val.features, &val.labels, progress))
        .transpose()?;
    let t_search = t1.elapsed().as_secs_f64();
    let temperature = calibration.as_ref().and_then(|c| c.temperature);
    write_with_alpha_beta(&pack, request.out, tuned.alpha, tuned.beta, temperature)?;
    Ok(TuneReport {
        pack: request.out.to_path_buf(),
        alpha: tuned.alpha,
        beta: tuned.beta,
        val_top1: tuned.top1,
        val_top1_before: tuned.before,
        alpha_before: before.alpha,
        beta_before: before.beta,
        n_val: val.labels.len(),
        calibration,
        grid: GridSize {
            betas: request.grid.betas.len(),
            alphas: request.grid.alphas.len(),
        },
        features_from_store: val.from_store,
        skipped: val.skipped.iter().map(|s| s.reason.clone()).collect(),
        seconds: TuneSeconds {
            encode: t_encode,
            search: t_search,
        },
    })
}
