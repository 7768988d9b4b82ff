//! `tipedge finetune`: Tip-Adapter-F on a pack — the shots it was built from drawn again,
//! encoded as training views (augmented afresh every epoch, as the official run, and/or plain),
//! the keys trained ([`super::finetune`]), the best epoch kept on the validation split, α/β
//! searched again, the better views kept on validation, and a new pack written — unless it does
//! not beat the input pack on validation, in which case the input is written unchanged.
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::adapter::{AdapterParams, Head, TipAdapter};
use crate::dataset::LabelledSet;
use crate::embed::Embedder;
use crate::encoder::ImageEncoder;
use crate::error::{Error, Result};
use crate::kernel::{KeyData, KeyDtype, Keys};
use crate::pack::{write_pack, OwnedGda, Pack, PackDraft};
use crate::preprocess::augment::{AugmentPass, Augmentation};
use crate::preprocess::DecodeLimits;
use crate::progress::Progress;
use crate::rng::derive_seed;
use crate::train::build::tool_version;
use crate::train::calibration::{calibrate, Calibration};
use crate::train::features::{class_map, encode_labelled};
use crate::train::finetune::{train, EpochReport, FinetuneConfig, TipAdapterF, Trained};
use crate::train::search::Grid;
use crate::train::tune::{accuracy_at_params, tune_model, Tuned};

/// What `tipedge finetune` asks for.
#[derive(Debug, Clone)]
pub struct FinetuneRequest<'a> {
    /// The pack to start from.
    pub pack: &'a Path,
    /// The few-shot folder the pack was built from; `None`: the pack's keys are all stored
    /// shots (enrolled on a device).
    pub shots: Option<&'a Path>,
    /// Validation split: picks the epoch and α/β.
    pub val: &'a Path,
    pub out: &'a Path,
    /// Shots per class and seed of the draw [default: the pack's provenance].
    pub shots_per_class: Option<usize>,
    pub seed: Option<u64>,
    /// Epochs, batch size, learning rate (the seed is replaced by the draw's).
    pub config: FinetuneConfig,
    /// α and β of the training loss (the official init_alpha / init_beta).
    pub train_alpha: f32,
    pub train_beta: f32,
    /// Storage of the fine-tuned keys [default: the pack's].
    pub key_dtype: Option<KeyDtype>,
    pub grid: &'a Grid,
    pub store: Option<&'a Path>,
    pub limits: DecodeLimits,
    /// Fit the temperature of calibrated probabilities on the validation split, for the keys
    /// as stored (after conversion to the pack's dtype) at the chosen α/β.
    pub calibrate: bool,
    /// Creation time of the new pack, Unix seconds.
    pub created_unix: i64,
    /// Which training views to try; the best on validation is kept.
    pub views: ViewsChoice,
    /// Write the input pack instead when training does not beat it on validation.
    pub never_worse: bool,
}

/// The views Tip-Adapter-F trains the keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainViews {
    /// One unaugmented (eval-recipe) view of each shot, the same every epoch.
    Plain,
    /// The official run: RandomResizedCrop(0.5–1) + flip, fresh every epoch.
    Augmented,
}

impl TrainViews {
    pub fn name(self) -> &'static str {
        match self {
            TrainViews::Plain => "plain",
            TrainViews::Augmented => "augmented",
        }
    }
}

/// `--views`: one kind of training views, or both with the better kept on validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewsChoice {
    #[default]
    Auto,
    Only(TrainViews),
}

impl ViewsChoice {
    /// In tie-breaking order: the simpler first.
    fn candidates(self) -> Vec<TrainViews> {
        match self {
            ViewsChoice::Auto => vec![TrainViews::Plain, TrainViews::Augmented],
            ViewsChoice::Only(v) => vec![v],
        }
    }
}

impl std::str::FromStr for ViewsChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(ViewsChoice::Auto),
            "plain" => Ok(ViewsChoice::Only(TrainViews::Plain)),
            "augmented" | "official" => Ok(ViewsChoice::Only(TrainViews::Augmented)),
            _ => Err(format!(
                "unknown training views '{s}' (auto, plain, or augmented = official)"
            )),
        }
    }
}

/// One training run's result on the validation split (a row of `finetune --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ViewsScore {
    pub views: &'static str,
    /// 1-based.
    pub best_epoch: usize,
    pub val_top1_best_epoch: f64,
    pub alpha: f32,
    pub beta: f32,
    /// Validation top-1 (percent) of the keys as stored, at `alpha`, `beta`.
    pub val_top1: f64,
    pub chosen: bool,
}

struct Candidate {
    views: TrainViews,
    trained: Trained,
    tuned: Tuned,
    draft: PackDraft,
}

/// Seconds spent, in the report.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FinetuneSeconds {
    pub val_features: f64,
    pub train: f64,
    pub train_encode: f64,
    pub search: f64,
}

/// What `tipedge finetune` did (its `--json` record, `"type": "finetune"`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename = "finetune")]
pub struct FinetuneReport {
    pub pack: PathBuf,
    /// The chosen run's epochs.
    pub epochs: Vec<EpochReport>,
    /// 1-based.
    pub best_epoch: usize,
    pub val_top1_best_epoch: f64,
    pub val_top1_before_search: f64,
    pub alpha: f32,
    pub beta: f32,
    /// Validation top-1 of the fine-tuned keys as stored, at `alpha`, `beta`.
    pub val_top1: f64,
    /// The training views of the chosen run, and every run's score.
    pub views: &'static str,
    pub candidates: Vec<ViewsScore>,
    /// Validation top-1 of the input pack as it is (its keys, α, β).
    pub input_val_top1: f64,
    /// Training did not beat the input on validation, so the input pack was written unchanged
    /// (its own temperature kept; `calibration` is `null`).
    pub kept_input: bool,
    /// The temperature fitted for the stored keys at the chosen α/β; `null` when not asked.
    pub calibration: Option<Calibration>,
    pub train_alpha: f32,
    pub train_beta: f32,
    pub key_dtype: &'static str,
    /// Largest change of a key value over the training.
    pub max_key_change: f32,
    /// Shots trained on: the drawn images and the stored shots.
    pub n_shots: usize,
    /// Of which stored in the pack (enrolled on a device).
    pub stored_shots: usize,
    pub n_val: usize,
    /// Unreadable shots.
    pub skipped: Vec<String>,
    /// Unreadable validation images.
    pub val_skipped: Vec<String>,
    pub seconds: FinetuneSeconds,
}

/// `tipedge finetune` (see the module documentation). `on_epoch` sees each epoch's numbers as
/// soon as they are known.
pub fn finetune_pack(
    encoder: &ImageEncoder,
    request: &FinetuneRequest<'_>,
    progress: &mut dyn Progress,
    mut on_epoch: impl FnMut(TrainViews, &EpochReport),
) -> Result<FinetuneReport> {
    let t0 = Instant::now();
    let (alpha, beta) = (request.train_alpha, request.train_beta);
    if !(alpha.is_finite() && beta.is_finite()) {
        return Err(Error::Invalid(
            "the training α and β must be finite numbers".into(),
        ));
    }
    if request.config.epochs == 0 {
        return Err(Error::Invalid("fine-tuning needs at least 1 epoch".into()));
    }
    if !(request.config.lr.is_finite() && request.config.lr > 0.0) {
        return Err(Error::Invalid(
            "the learning rate must be a positive number".into(),
        ));
    }
    let pack = Pack::open(request.pack, &encoder.expect())?;
    if pack.head() == Head::Gda {
        return Err(Error::pack(
            request.pack,
            "the pack scores with its GDA layer alone, so its cache keys are not used and there \
             is nothing to fine-tune (build it with --head tip or both)",
        ));
    }
    let dim = pack.dim();
    let classes = pack.class_names().to_vec();
    let prov = pack.provenance().clone();

    // The pack's shots, drawn again the way `cache build` drew them, and the shots it stores
    // (enrolled on a device): together, one per key of each class.
    let seed = request.seed.unwrap_or(prov.seed);
    let offsets = pack.class_offsets();
    let stored_shots = pack.stored_shots();
    let mut drawn = vec![0usize; classes.len()];
    let mut stored_per_class = vec![0usize; classes.len()];
    for &c in stored_shots.map_or(&[][..], |s| s.labels) {
        stored_per_class[c as usize] += 1;
    }
    let (shot_paths, shot_targets, shots_root) = match request.shots {
        Some(root) => {
            let mut shots = LabelledSet::read(root)?;
            // By default, K as `cache build` drew it (enrolment leaves the provenance alone).
            let k = request.shots_per_class.unwrap_or(prov.shots as usize);
            if shots.classes.iter().any(|c| c.images.len() > k) {
                shots = shots.sample_k_shot(k, seed)?;
            }
            let class_of = class_map(&shots, root, &classes)?;
            for (c, &i) in shots.classes.iter().zip(&class_of) {
                drawn[i as usize] = c.images.len();
            }
            let items = shots.items();
            let paths: Vec<PathBuf> = items.iter().map(|(p, _)| p.clone()).collect();
            let targets: Vec<u32> = items.iter().map(|(_, c)| class_of[*c]).collect();
            (paths, targets, root.to_path_buf())
        }
        None => (Vec::new(), Vec::new(), request.pack.to_path_buf()),
    };
    for (c, name) in classes.iter().enumerate() {
        let in_pack = (offsets[c + 1] - offsets[c]) as usize;
        if in_pack != drawn[c] + stored_per_class[c] {
            let hint = if request.shots.is_some() {
                "pass the --shots folder, --shots-per-class and --seed the pack was built with"
            } else {
                "pass the --shots folder the pack was built from"
            };
            return Err(Error::dataset(
                &shots_root,
                format!(
                    "the pack has {in_pack} keys for class '{name}' but {} shots are drawn here \
                     and {} are stored in the pack; {hint}",
                    drawn[c], stored_per_class[c]
                ),
            ));
        }
    }

    let val = encode_labelled(
        encoder,
        request.val,
        &classes,
        request.store,
        request.limits,
        "val",
        progress,
    )?;
    let t_val = t0.elapsed().as_secs_f64();

    let init = pack.key_data().to_f32(dim);
    let train_params = AdapterParams {
        alpha,
        beta,
        logit_scale: pack.params().logit_scale,
    };
    let cfg = FinetuneConfig {
        seed,
        ..request.config
    };
    let dtype = request.key_dtype.unwrap_or(pack.key_dtype());
    // What the device runs today: the input pack as stored, at its own α/β.
    let input_model = pack.model();
    let input_val_top1 = accuracy_at_params(&input_model, &val.features, &val.labels)?;

    let candidates = request.views.candidates();
    let total: usize = candidates
        .iter()
        .map(|v| match v {
            TrainViews::Augmented => cfg.epochs * shot_paths.len(),
            TrainViews::Plain => shot_paths.len(),
        })
        .sum();
    progress.start("finetune", total);
    let mut done = 0;
    let mut embedder = Embedder::new(encoder, request.limits)?;
    let mut skipped: Vec<String> = Vec::new();
    let mut t_encode = 0.0;
    let t_train = Instant::now();
    let mut t_search = 0.0;
    let mut scores = Vec::with_capacity(candidates.len());
    let mut best: Option<(f64, Candidate)> = None;
    for (ci, &views) in candidates.iter().enumerate() {
        let mut model = TipAdapterF::new(
            init.clone(),
            pack.labels().to_vec(),
            pack.text_classifier().map(<[f32]>::to_vec),
            dim,
            classes.len(),
            train_params,
        )?
        .with_gda(pack.gda().map(OwnedGda::from_term))?;
        // Plain views are the same every epoch: encoded once.
        let mut plain: Option<(Vec<f32>, Vec<u32>)> = None;
        let trained = train(
            &mut model,
            &cfg,
            |epoch| -> Result<(Vec<f32>, Vec<u32>)> {
                if let Some(p) = &plain {
                    return Ok(p.clone());
                }
                let te = Instant::now();
                embedder.set_augmentation(match views {
                    TrainViews::Augmented => Some(AugmentPass {
                        augmentation: Augmentation::default(),
                        seed: derive_seed(seed, &[0xF17E]),
                        epoch: epoch as u64,
                    }),
                    TrainViews::Plain => None,
                });
                let mut feats = Vec::with_capacity(shot_paths.len() * dim);
                let mut targets = Vec::with_capacity(shot_paths.len());
                embedder.embed_all(&shot_paths, |e| {
                    done += 1;
                    progress.set(done);
                    match e.result {
                        Ok(f) => {
                            feats.extend_from_slice(f);
                            targets.push(shot_targets[e.index]);
                        }
                        Err(err) if epoch == 0 && ci == 0 => skipped.push(err.to_string()),
                        Err(_) => {}
                    }
                });
                t_encode += te.elapsed().as_secs_f64();
                if targets.is_empty() && !shot_paths.is_empty() {
                    return Err(Error::dataset(&shots_root, "no shot could be encoded"));
                }
                // Stored shots have no image to augment: their features, every epoch.
                if let Some(s) = stored_shots {
                    feats.extend_from_slice(s.features);
                    targets.extend_from_slice(s.labels);
                }
                if views == TrainViews::Plain {
                    plain = Some((feats.clone(), targets.clone()));
                }
                Ok((feats, targets))
            },
            |m| accuracy_at_params(&m.model()?, &val.features, &val.labels),
            |e| on_epoch(views, e),
        )?;

        // α/β again, with the best epoch's keys; then scored as a device would store them.
        let t_s = Instant::now();
        let best_keys = Keys::new(dim, KeyData::F32(&trained.keys), offsets)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let m = TipAdapter::new(best_keys, pack.text_classifier(), train_params)?
            .with_head(pack.head(), pack.gda())?;
        let tuned = tune_model(&m, &val.features, &val.labels, request.grid, progress)?;
        let mut draft = PackDraft::from_pack(&pack);
        draft.set_keys_f32(&trained.keys, dtype)?;
        draft.params = pack.params().with_alpha_beta(tuned.alpha, tuned.beta);
        let stored = draft.model();
        let val_top1 = accuracy_at_params(&stored, &val.features, &val.labels)?;
        t_search += t_s.elapsed().as_secs_f64();
        scores.push(ViewsScore {
            views: views.name(),
            best_epoch: trained.best_epoch + 1,
            val_top1_best_epoch: trained.best_val_accuracy,
            alpha: tuned.alpha,
            beta: tuned.beta,
            val_top1,
            chosen: false,
        });
        // Ties keep the earlier (simpler) candidate.
        if best.as_ref().is_none_or(|b| val_top1 > b.0) {
            best = Some((
                val_top1,
                Candidate {
                    views,
                    trained,
                    tuned,
                    draft,
                },
            ));
        }
    }
    progress.finish();
    for s in &skipped {
        progress.note(&format!("skipped shot: {s}"));
    }
    let t_train = t_train.elapsed().as_secs_f64() - t_search;
    let (val_top1, chosen) = best.expect("at least one candidate");
    for s in &mut scores {
        s.chosen = s.views == chosen.views.name();
    }
    let Candidate {
        views,
        trained,
        tuned,
        mut draft,
    } = chosen;

    // Never worse than the input on validation: if training did not beat it, the input is what
    // is written (ties keep the input).
    let kept_input = request.never_worse && val_top1 <= input_val_top1;
    let calibration = if kept_input {
        write_pack(request.out, &pack.contents())?;
        None
    } else {
        // The temperature of the model a device will run: the keys as stored, not the f32 ones.
        let stored = draft.model();
        let calibration = request
            .calibrate
            .then(|| calibrate(&stored, &val.features, &val.labels, progress))
            .transpose()?;
        draft.temperature = calibration.as_ref().and_then(|c| c.temperature);
        draft.provenance.tool_version = tool_version();
        draft.provenance.created_unix = request.created_unix;
        draft.write(request.out)?;
        calibration
    };
    let max_key_change = trained
        .keys
        .iter()
        .zip(&init)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    Ok(FinetuneReport {
        pack: request.out.to_path_buf(),
        epochs: trained.epochs,
        best_epoch: trained.best_epoch + 1,
        val_top1_best_epoch: trained.best_val_accuracy,
        val_top1_before_search: tuned.before,
        alpha: tuned.alpha,
        beta: tuned.beta,
        val_top1,
        views: views.name(),
        candidates: scores,
        input_val_top1,
        kept_input,
        calibration,
        train_alpha: alpha,
        train_beta: beta,
        key_dtype: dtype.name(),
        max_key_change,
        n_shots: shot_paths.len() + stored_shots.map_or(0, |s| s.len()),
        stored_shots: stored_shots.map_or(0, |s| s.len()),
        n_val: val.labels.len(),
        skipped,
        val_skipped: val.skipped.iter().map(|s| s.reason.clone()).collect(),
        seconds: FinetuneSeconds {
            val_features: t_val,
            train: t_train,
            train_encode: t_encode,
            search: t_search,
        },
    })
}
