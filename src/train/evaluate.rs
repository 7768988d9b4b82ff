//! `tipedge eval`: a pack (and its fine-tuned version) scored on a labelled test split, the
//! methods side by side — zero-shot (CLIP only), CoOp, cache-only, Tip-Adapter (on the
//! templates' W and on CoOp's), Tip-Adapter-F — and
//! how far the headline method's probabilities can be trusted (NLL, Brier, ECE before and after
//! the pack's temperature; the reject option's accuracy / coverage).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::ser::SerializeMap;

use crate::adapter::{Head, TipAdapter};
use crate::encoder::{ImageEncoder, ModelPaths, RunOptions};
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::pack::Pack;
use crate::preprocess::DecodeLimits;
use crate::progress::Progress;
use crate::train::calibration::{
    calibration_metrics, coverage_curve, CalibrationMetrics, CoveragePoint, COVERAGE_THRESHOLDS,
};
use crate::train::features::encode_labelled;
use crate::train::metrics::{paired, Metrics, Paired};
use crate::train::search::{Grid, GridAccuracy};
use crate::train::tune::search;
use crate::zeroshot::{text_classifier, Prompts};

/// What `tipedge eval` asks for.
#[derive(Debug, Clone)]
pub struct EvalRequest<'a> {
    /// The training-free pack (cache build, then tune).
    pub pack: &'a Path,
    /// The Tip-Adapter-F pack, if any.
    pub finetuned: Option<&'a Path>,
    /// Test split: a folder per class, or a split file.
    pub test: &'a Path,
    /// Also score every point of this grid on the test split (the plot's surface).
    pub surface: Option<&'a Grid>,
    pub store: Option<&'a Path>,
    pub limits: DecodeLimits,
    /// The other W to compare the pack's with (CLIP only): for a pack whose W came from a
    /// CoOp context, these prompt templates (rows `zero_shot` and `tip_adapter`); for a pack
    /// made from templates, a CoOp context (rows `coop` and `tip_adapter+coop`); `None`, or
    /// templates for a template pack, adds nothing.
    pub compare: Option<Compare<'a>>,
}

/// Where the other W of [`EvalRequest::compare`] comes from.
#[derive(Debug, Clone)]
pub struct Compare<'a> {
    pub model: &'a ModelPaths,
    pub prompts: &'a Prompts,
    pub run: RunOptions,
}

/// Where a W came from, for the methods' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WSource {
    Templates,
    Coop,
}

impl WSource {
    fn zero_shot(self) -> &'static str {
        match self {
            WSource::Templates => "zero_shot",
            WSource::Coop => "coop",
        }
    }
    fn tip_adapter(self) -> &'static str {
        match self {
            WSource::Templates => "tip_adapter",
            WSource::Coop => "tip_adapter+coop",
        }
    }
}

/// One method's name and metrics.
#[derive(Debug, Clone)]
pub struct Method {
    pub name: &'static str,
    pub metrics: Metrics,
}

/// The methods in the order they were scored, serialised as a JSON object by name.
#[derive(Debug, Clone)]
pub struct Methods(pub Vec<Method>);

impl serde::Serialize for Methods {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for m in &self.0 {
            map.serialize_entry(m.name, &m.metrics)?;
        }
        map.end()
    }
}

/// The headline method against another on the same test images.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub method: &'static str,
    pub against: &'static str,
    #[serde(flatten)]
    pub paired: Paired,
}

/// Seconds spent, in the report.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EvalSeconds {
    pub encode: f64,
    pub score: f64,
}

/// How far the headline method's probabilities are to be trusted on the test split.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalCalibration {
    /// The headline pack's temperature; `null` when it has none (probabilities are then
    /// `softmax(logits)`).
    pub temperature: Option<f32>,
    /// NLL, Brier score, ECE and reliability bins of `softmax(logits)` (T = 1).
    pub uncalibrated: CalibrationMetrics,
    /// The same of `softmax(logits / T)`, when the pack has a temperature.
    pub calibrated: Option<CalibrationMetrics>,
    /// The reject option with the probabilities `classify` prints (the pack's T, or 1):
    /// coverage and accuracy of the accepted images at each `--min-prob` of
    /// [`COVERAGE_THRESHOLDS`].
    pub coverage: Vec<CoveragePoint>,
}

impl EvalCalibration {
    /// The probabilities `classify` prints: calibrated when the pack has a temperature.
    pub fn in_use(&self) -> &CalibrationMetrics {
        self.calibrated.as_ref().unwrap_or(&self.uncalibrated)
    }

    fn measure(logits: &[f32], labels: &[u32], n_classes: usize, t: Option<f32>) -> Result<Self> {
        let context = |e: Error| Error::Invalid(format!("calibration: {e}"));
        let metrics = |t| calibration_metrics(logits, labels, n_classes, t).map_err(context);
        Ok(EvalCalibration {
            temperature: t,
            uncalibrated: metrics(1.0)?,
            calibrated: t.map(metrics).transpose()?,
            coverage: coverage_curve(
                logits,
                labels,
                n_classes,
                t.unwrap_or(1.0),
                &COVERAGE_THRESHOLDS,
            )
            .map_err(context)?,
        })
    }
}

/// The accuracy over an α/β grid on the test split, and the point the pack uses.
#[derive(Debug, Clone)]
pub struct Surface {
    pub accuracy: GridAccuracy,
    /// (α, β) of the pack shown (the fine-tuned one if given).
    pub chosen: (f32, f32),
}

/// What `tipedge eval` measured (its `--json` record, `"type": "eval"`). The headline numbers
/// are those of the last method: Tip-Adapter-F if given, else Tip-Adapter.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename = "eval")]
pub struct EvalReport {
    pub method: &'static str,
    pub top1: f64,
    pub top5: f64,
    pub per_class: Vec<crate::train::metrics::ClassAccuracy>,
    pub confusion: Vec<Vec<u32>>,
    pub n_images: usize,
    /// How much one test image moves a top-1 accuracy, in points (`100 / n_images`).
    pub points_per_image: f64,
    pub classes: Vec<String>,
    /// Every method's metrics, each top-1 with its 95 % interval.
    pub methods: Methods,
    /// The headline method against each other one, image by image (McNemar).
    pub comparisons: Vec<Comparison>,
    /// Calibration and the reject option of the headline method.
    pub calibration: EvalCalibration,
    pub alpha: f32,
    pub beta: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetuned_alpha: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetuned_beta: Option<f32>,
    pub skipped: Vec<String>,
    pub features_from_store: usize,
    pub seconds: EvalSeconds,
    /// Where the CLI drew the plot, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plot: Option<PathBuf>,
    /// The test accuracy over the requested grid (for the plot; not in the JSON).
    #[serde(skip)]
    pub surface: Option<Surface>,
}

impl EvalReport {
    /// The metrics of the headline method.
    pub fn headline(&self) -> &Metrics {
        &self
            .methods
            .0
            .last()
            .expect("eval scores at least two methods")
            .metrics
    }
}

/// Logits of `model` for every feature (`n × dim`); the zero-shot term alone when
/// `zero_shot_only`.
fn logits_of(model: &TipAdapter<'_>, features: &[f32], zero_shot_only: bool) -> Result<Vec<f32>> {
    model.logits_all(&Kernel::detect(), features, zero_shot_only)
}

/// The W [`EvalRequest::compare`] asks for, for the pack's classes, and where it came from.
fn other_classifier(
    encoder: &ImageEncoder,
    pack: &Pack,
    own: WSource,
    compare: &Compare<'_>,
    progress: &mut dyn Progress,
) -> Result<Option<(WSource, Vec<f32>)>> {
    let source = match (own, compare.prompts) {
        (WSource::Templates, Prompts::Templates(_)) => return Ok(None),
        (WSource::Coop, Prompts::Coop(c)) => {
            return Err(Error::Invalid(format!(
                "{}: the pack's W already comes from a CoOp context; compare it with templates \
                 (--templates), not with {}",
                pack.path().display(),
                c.path.display()
            )))
        }
        (WSource::Templates, Prompts::Coop(_)) => WSource::Coop,
        (WSource::Coop, Prompts::Templates(_)) => WSource::Templates,
    };
    let w = text_classifier(
        encoder,
        compare.model,
        pack.class_names(),
        compare.prompts,
        &compare.run,
        progress,
    )?;
    Ok(w.map(|w| (source, w)))
}

/// `tipedge eval` (see the module documentation).
pub fn evaluate(
    encoder: &ImageEncoder,
    request: &EvalRequest<'_>,
    progress: &mut dyn Progress,
) -> Result<EvalReport> {
    let t0 = Instant::now();
    let expect = encoder.expect();
    let pack = Pack::open(request.pack, &expect)?;
    let finetuned = match request.finetuned {
        Some(p) => {
            let f = Pack::open(p, &expect)?;
            if f.class_names() != pack.class_names() {
                return Err(Error::pack(
                    p,
                    format!(
                        "its classes ({}) differ from {}'s ({})",
                        f.class_names().join(", "),
                        request.pack.display(),
                        pack.class_names().join(", ")
                    ),
                ));
            }
            Some(f)
        }
        None => None,
    };
    let classes = pack.class_names().to_vec();
    let test = encode_labelled(
        encoder,
        request.test,
        &classes,
        request.store,
        request.limits,
        "test",
        progress,
    )?;
    let t_encode = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();

    let tip = TipAdapter::new(pack.keys(), pack.text_classifier(), pack.params())?;
    let own = if pack.prompt_context().is_some() {
        WSource::Coop
    } else {
        WSource::Templates
    };
    let other_w = match (&request.compare, tip.classifier().is_some()) {
        (Some(c), true) => other_classifier(encoder, &pack, own, c, progress)?,
        _ => None,
    };
    let other = match &other_w {
        Some((source, w)) => Some((
            *source,
            TipAdapter::new(pack.keys(), Some(w), pack.params())?,
        )),
        None => None,
    };
    // (name, logits) of each method, the headline last; the other W's rows before the pack's.
    let mut scored: Vec<(&'static str, Vec<f32>)> = Vec::new();
    if let Some((source, t)) = &other {
        scored.push((source.zero_shot(), logits_of(t, &test.features, true)?));
    }
    if tip.classifier().is_some() {
        scored.push((own.zero_shot(), logits_of(&tip, &test.features, true)?));
    }
    let cache_only = tip
        .without_classifier()
        .with_params(pack.params().with_alpha_beta(1.0, pack.params().beta));
    scored.push(("cache_only", logits_of(&cache_only, &test.features, false)?));
    if let Some((source, t)) = &other {
        scored.push((source.tip_adapter(), logits_of(t, &test.features, false)?));
    }
    scored.push((own.tip_adapter(), logits_of(&tip, &test.features, false)?));
    // A pack with a GDA layer: the GDA head alone, then (head `both`) both; the pack's own head
    // stays the headline (last).
    if let Some(g) = pack.gda() {
        let gda = tip.with_head(Head::Gda, Some(g))?;
        scored.push(("gda", logits_of(&gda, &test.features, false)?));
        if pack.head() == Head::Both {
            scored.push((
                "tip_adapter+gda",
                logits_of(&pack.model(), &test.features, false)?,
            ));
        }
    }
    if let Some(f) = &finetuned {
        let name = if f.head() == Head::Both {
            "tip_adapter_f+gda"
        } else {
            "tip_adapter_f"
        };
        scored.push((name, logits_of(&f.model(), &test.features, false)?));
    }
    let methods = scored
        .iter()
        .map(|(name, logits)| {
            Ok(Method {
                name,
                metrics: Metrics::from_logits(logits, &test.labels, &classes)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (headline_name, headline_logits) = scored.last().expect("at least two methods");
    let comparisons = scored[..scored.len() - 1]
        .iter()
        .map(|(against, logits)| {
            Ok(Comparison {
                method: headline_name,
                against,
                paired: paired(headline_logits, logits, &test.labels, classes.len())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let shown = finetuned.as_ref().unwrap_or(&pack);
    let calibration = EvalCalibration::measure(
        headline_logits,
        &test.labels,
        classes.len(),
        shown.temperature(),
    )?;
    let t_score = t1.elapsed().as_secs_f64();

    let surface = match request.surface {
        Some(grid) => {
            let model = shown.model();
            let accuracy = search(
                &model,
                &test.features,
                &test.labels,
                grid,
                "search",
                progress,
            )?;
            let p = shown.params();
            Some(Surface {
                accuracy,
                chosen: (p.alpha, p.beta),
            })
        }
        None => None,
    };

    let last = methods
        .last()
        .expect("cache-only and Tip-Adapter are always scored");
    let (method, headline) = (last.name, last.metrics.clone());
    Ok(EvalReport {
        method,
        top1: headline.top1,
        top5: headline.top5,
        per_class: headline.per_class,
        confusion: headline.confusion,
        n_images: headline.n_images,
        points_per_image: 100.0 / headline.n_images.max(1) as f64,
        classes,
        methods: Methods(methods),
        comparisons,
        calibration,
        alpha: pack.params().alpha,
        beta: pack.params().beta,
        finetuned_alpha: finetuned.as_ref().map(|f| f.params().alpha),
        finetuned_beta: finetuned.as_ref().map(|f| f.params().beta),
        skipped: test.skipped.iter().map(|s| s.reason.clone()).collect(),
        features_from_store: test.from_store,
        seconds: EvalSeconds {
            encode: t_encode,
            score: t_score,
        },
        plot: None,
        surface,
    })
}
