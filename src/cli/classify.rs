//! `tipedge classify` and `tipedge demo`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tipedge::adapter::{top_k, Cache, TipAdapter, MAX_TOP_K};
use tipedge::dataset::{expand_inputs, LabelledSet};
use tipedge::encoder::{ImageEncoder, ModelPaths, TextEncoder};
use tipedge::pack::Pack;
use tipedge::pipeline::{build_cache, Embedder, KeyRecipe, Skipped, Timings};
use tipedge::sidecar::Family;
use tipedge::text::Tokenizer;
use tipedge::zeroshot::{build_classifier, Templates};

use super::common::{expect_for, load_image_encoder, progress, repo_path, RuntimeArgs};
use super::{EXIT_OK, EXIT_SOME_FAILED};

/// Classify images with a few-shot cache (Tip-Adapter) and, for CLIP, zero-shot text prompts.
///
/// With --shots, the cache is built from the shot images (one sub-folder per class). With a CLIP
/// model the class names (folder names, `_` read as a space) are also turned into a zero-shot
/// text classifier from --templates, and both terms are added:
///
///   logits = 100·f·Wᵀ + α·exp(−β(1 − f·Kᵀ))·L
///
/// With an image-only backbone (e.g. EfficientNet-Lite0) only the cache term applies.
/// Without --shots a CLIP model classifies zero-shot among --classes.
///
/// When a query image sits in a folder named like a class, it counts towards the accuracy
/// printed at the end. Unreadable images are reported and skipped; the exit code is then 1.
#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// Model folder (image.onnx [+ text.onnx] with JSON sidecars) or an image.onnx file.
    #[arg(long, short)]
    model: PathBuf,
    /// Few-shot set: a folder with one sub-folder of example images per class (the cache is
    /// built in memory; `tipedge cache build` writes it to a pack file once instead).
    #[arg(long, conflicts_with = "pack")]
    shots: Option<PathBuf>,
    /// Adapter pack built by `tipedge cache build` (keys, classes, W, α, β); memory-mapped and
    /// verified before use. It must have been built with the same image encoder.
    #[arg(long)]
    pack: Option<PathBuf>,
    /// Class names for zero-shot CLIP without --shots (comma-separated).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Images, or folders walked recursively for .jpg/.png/.bmp/.webp/.tif files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// Classify the bundled textile-inspection example (3 classes, few shots each) with the bundled
/// EfficientNet-Lite0 graph, printing each image's result and the accuracy.
#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// Prompt templates for CLIP's text classifier: tip (Tip-Adapter's 7), clip (CLIP's 80),
    /// photo ("a photo of a {}."), or a file with one template per line containing {}.
    #[arg(long, default_value = "tip")]
    templates: String,
    /// Weight α of the cache term [default: the pack's, else 1.17].
    #[arg(long)]
    alpha: Option<f32>,
    /// Sharpness β of the cache affinities exp(−β(1 − cos)) [default: the pack's, else 1].
    #[arg(long)]
    beta: Option<f32>,
    /// How many of the best classes to show per image (at most 16).
    #[arg(short = 'k', long, default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(1..=MAX_TOP_K as i64))]
    top_k: u8,
    /// One JSON object per image on stdout (path, top-k labels and scores, timings, error);
    /// no progress bars; the summary goes to stderr.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn demo(args: DemoArgs) -> anyhow::Result<i32> {
    let model = repo_path("models/fixtures/efficientnet-lite0");
    let shots = repo_path("examples/textile/shots");
    let query = repo_path("examples/textile/query");
    for p in [&model, &shots, &query] {
        anyhow::ensure!(
            p.exists(),
            "{}: not found; run the demo from a tipedge checkout, or use `tipedge classify`",
            p.display()
        );
    }
    if !args.common.json {
        eprintln!(
            "demo: EfficientNet-Lite0 (ImageNet weights) + Tip-Adapter cache from {}, classifying {}",
            shots.display(),
            query.display()
        );
    }
    classify(&model, Source::Shots(&shots), &args.common, &[query])
}

pub fn run(args: ClassifyArgs) -> anyhow::Result<i32> {
    let source = match (&args.shots, &args.pack) {
        (Some(dir), _) => Source::Shots(dir),
        (None, Some(pack)) => Source::Pack(pack),
        (None, None) => Source::ZeroShot(&args.classes),
    };
    classify(&args.model, source, &args.common, &args.inputs)
}

/// Where the classes and the cache come from.
enum Source<'a> {
    Shots(&'a Path),
    Pack(&'a Path),
    ZeroShot(&'a [String]),
}

/// Classes, cache and zero-shot classifier built from a few-shot folder (or class names alone
/// for zero-shot CLIP): what `classify --shots` scores with and `cache build` writes.
pub(super) struct Built {
    pub class_folders: Vec<String>,
    pub class_names: Vec<String>,
    pub cache: Cache,
    pub classifier: Option<Vec<f32>>,
    pub skipped: Vec<Skipped>,
}

/// Builds [`Built`] with `encoder`: the cache from `shots` (or an empty cache over `classes`),
/// and for CLIP the text classifier W from the class names and `templates`.
#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    encoder: &ImageEncoder,
    paths: &ModelPaths,
    shots: Option<&LabelledSet>,
    recipe: &KeyRecipe,
    classes: &[String],
    templates: &str,
    runtime: &RuntimeArgs,
    quiet: bool,
) -> anyhow::Result<Built> {
    let is_clip = encoder.family() == Family::Clip;
    let mut skipped: Vec<Skipped> = Vec::new();
    let (class_folders, class_names, cache) = match shots {
        Some(set) => {
            let passes = recipe.augment_epochs.max(1) as usize;
            let bar = progress(set.len() * passes, "cache", quiet);
            let (cache, bad) = build_cache(encoder, set, recipe, runtime.limits(), |n| {
                bar.set_position(n as u64)
            })?;
            bar.finish_and_clear();
            skipped.extend(bad);
            let folders = set.classes.iter().map(|c| c.folder.clone()).collect();
            (folders, set.class_names(), cache)
        }
        None => {
            anyhow::ensure!(
                is_clip,
                "{}: an image-only backbone needs --shots (it has no text tower for zero-shot)",
                paths.image.display()
            );
            anyhow::ensure!(
                !classes.is_empty(),
                "zero-shot needs --classes a,b,c (or --shots DIR, or --pack FILE)"
            );
            let cache = Cache::new(encoder.dim(), Vec::new(), Vec::new(), classes.len())?;
            (classes.to_vec(), classes.to_vec(), cache)
        }
    };
    let classifier = if is_clip {
        Some(text_classifier(
            encoder,
            paths,
            &class_names,
            templates,
            runtime,
            quiet,
        )?)
    } else {
        None
    };
    Ok(Built {
        class_folders,
        class_names,
        cache,
        classifier,
        skipped,
    })
}

/// CLIP's zero-shot classifier W from class names × prompt templates (the official
/// `clip_classifier`), with the text tower beside the image tower.
pub(super) fn text_classifier(
    encoder: &ImageEncoder,
    paths: &ModelPaths,
    class_names: &[String],
    templates: &str,
    runtime: &RuntimeArgs,
    quiet: bool,
) -> anyhow::Result<Vec<f32>> {
    let text_path = paths.text.as_ref().with_context(|| {
        format!(
            "{}: CLIP model without text.onnx beside it",
            paths.image.display()
        )
    })?;
    let text = TextEncoder::load(text_path, &runtime.run_options())?;
    anyhow::ensure!(
        text.dim() == encoder.dim(),
        "{}: text features have {} dims, image features {}",
        text_path.display(),
        text.dim(),
        encoder.dim()
    );
    let templates = Templates::resolve(templates)?;
    let bar = progress(class_names.len(), "prompts", quiet);
    let w = build_classifier(&text, &Tokenizer::new(), class_names, &templates, |n| {
        bar.set_position(n as u64)
    })?;
    bar.finish_and_clear();
    Ok(w)
}

fn classify(
    model: &Path,
    source: Source<'_>,
    common: &CommonArgs,
    inputs: &[PathBuf],
) -> anyhow::Result<i32> {
    let paths = ModelPaths::resolve(model)?;
    let limits = common.runtime.limits();
    let encoder = load_image_encoder(&paths.image, &common.runtime.run_options())?;
    let queries = expand_inputs(inputs)?;
    anyhow::ensure!(
        !queries.is_empty(),
        "no image files found in the given inputs"
    );

    // Classes, keys and W: from a pack (memory-mapped), or built here.
    let (cache, w, pack);
    let (class_folders, class_names, skipped, mut adapter) = match source {
        Source::Pack(file) => {
            pack = Pack::open(file, &expect_for(&encoder)?)?;
            let names = pack.class_names().to_vec();
            let mut adapter = TipAdapter::new(pack.keys(), pack.text_classifier())?;
            adapter.alpha = pack.alpha();
            adapter.beta = pack.beta();
            adapter.logit_scale = pack.logit_scale();
            (names.clone(), names, Vec::new(), adapter)
        }
        Source::Shots(_) | Source::ZeroShot(_) => {
            let (shots, classes) = match source {
                Source::Shots(dir) => (Some(LabelledSet::read(dir)?), &[][..]),
                Source::ZeroShot(c) => (None, c),
                Source::Pack(_) => unreachable!(),
            };
            let built = build(
                &encoder,
                &paths,
                shots.as_ref(),
                &KeyRecipe::plain(),
                classes,
                &common.templates,
                &common.runtime,
                common.json,
            )?;
            (cache, w) = (built.cache, built.classifier);
            let adapter = TipAdapter::new(cache.view(), w.as_deref())?;
            (
                built.class_folders,
                built.class_names,
                built.skipped,
                adapter,
            )
        }
    };
    if let Some(a) = common.alpha {
        adapter.alpha = a;
    }
    if let Some(b) = common.beta {
        adapter.beta = b;
    }

    // Classify.
    let k = usize::from(common.top_k);
    let bar = progress(queries.len(), "classify", common.json);
    let mut logits = vec![0f32; adapter.n_classes()];
    let mut failed: Vec<Skipped> = Vec::new();
    let (mut n_known, mut n_correct, mut n_ok) = (0usize, 0usize, 0usize);
    let mut total = Timings::default();
    Embedder::new(&encoder, limits).embed_all(&queries, |item| {
        bar.inc(1);
        let f = match item.result {
            Ok(f) => f,
            Err(e) => {
                if common.json {
                    println!("{}", serde_json::json!({ "path": item.path, "error": e.to_string() }));
                }
                failed.push(Skipped { path: item.path, reason: e.to_string() });
                return;
            }
        };
        if let Err(e) = adapter.logits(f, &mut logits) {
            failed.push(Skipped { path: item.path, reason: e.to_string() });
            return;
        }
        let top = top_k(&logits, k);
        let truth = truth_of(&item.path, &class_folders);
        let correct = truth.map(|t| top.first().is_some_and(|b| b.0 == t));
        n_ok += 1;
        if let Some(c) = correct {
            n_known += 1;
            n_correct += usize::from(c);
        }
        total.decode_ms += item.timings.decode_ms;
        total.preprocess_ms += item.timings.preprocess_ms;
        total.encode_ms += item.timings.encode_ms;
        if common.json {
            let top: Vec<_> = top
                .iter()
                .map(|&(c, logit, prob)| {
                    serde_json::json!({ "label": class_names[c], "class": c, "logit": logit, "prob": prob })
                })
                .collect();
            let mut obj = serde_json::json!({
                "path": item.path, "top": top, "timings_ms": item.timings,
            });
            if let Some(t) = truth {
                obj["truth"] = class_names[t].clone().into();
                obj["correct"] = correct.into();
            }
            println!("{obj}");
        } else {
            let shown: Vec<String> =
                top.iter().map(|&(c, _, p)| format!("{} {:.3}", class_names[c], p)).collect();
            let mark = match correct {
                Some(true) => "  ok",
                Some(false) => "  WRONG",
                None => "",
            };
            bar.suspend(|| println!("{}\t{}{}", item.path.display(), shown.join(" | "), mark));
        }
    });
    bar.finish_and_clear();

    // Summary on stderr: the per-image lines on stdout stay machine-readable.
    for s in skipped.iter() {
        eprintln!("skipped shot: {}", s.reason);
    }
    for s in failed.iter() {
        eprintln!("failed: {}", s.reason);
    }
    let mut line = format!("{} images classified, {} failed", n_ok, failed.len());
    if n_known > 0 {
        line += &format!(
            "; accuracy {}/{} = {:.1}% (images in folders named after a class)",
            n_correct,
            n_known,
            100.0 * n_correct as f64 / n_known as f64
        );
    }
    if n_ok > 0 {
        let n = n_ok as f64;
        line += &format!(
            "; mean per image: decode {:.2} ms, preprocess {:.2} ms, encode {:.2} ms",
            total.decode_ms / n,
            total.preprocess_ms / n,
            total.encode_ms / n
        );
    }
    eprintln!("{line}");
    Ok(if failed.is_empty() && skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}

/// The class whose folder name is the image's parent folder name, if any.
fn truth_of(path: &Path, class_folders: &[String]) -> Option<usize> {
    let parent = path.parent()?.file_name()?.to_str()?;
    class_folders
        .iter()
        .position(|c| c == parent || c.replace('_', " ") == parent.replace('_', " "))
}
