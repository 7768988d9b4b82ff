//! `tipedge classify` and `tipedge demo`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use tipedge::adapter::{Head, DEFAULT_ALPHA, DEFAULT_BETA, MAX_TOP_K};
use tipedge::classifier::Classifier;
use tipedge::dataset::{expand_inputs, LabelledSet};
use tipedge::encoder::ModelPaths;
use tipedge::files::{class_of_path, classify_files};
use tipedge::kernel::KeyDtype;
use tipedge::record::{ErrorRecord, Summary};
use tipedge::session::{Session, SessionOptions};
use tipedge::train::build::{
    build_chosen_on_val, build_from_shots, build_zero_shot, BuildOptions, Built, ValSearch,
};
use tipedge::train::keys::{KeyRecipe, DEFAULT_AUGMENT_EPOCHS};
use tipedge::train::recipes::{RecipeName, Selection};
use tipedge::train::search::Grid;
use tipedge::zeroshot::Prompts;

use super::common::{load_image_encoder, print_json, progress, repo_path, Bars, RuntimeArgs};
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
    /// With --shots: choose the key recipe, the head and their parameters on this validation
    /// split (folder per class), as `tipedge cache build --val` does, instead of plain keys
    /// at α 1.17, β 1.
    #[arg(long, requires = "shots")]
    val: Option<PathBuf>,
    /// Class names for zero-shot CLIP without --shots (comma-separated).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Images, or folders walked recursively for .jpg/.png/.bmp/.webp/.tif files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// Classify the bundled textile-inspection example (3 classes, 16 shots each) with the bundled
/// EfficientNet-Lite0 graph, printing each image's result and the accuracy. The key recipe, the
/// head (Tip-Adapter cache, GDA layer, or both) and their parameters are chosen on the bundled
/// validation split first, as `tipedge cache build --val` does; the 48 query images are never
/// used for a choice.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Plain keys at α 1.17, β 1 (the cache alone), without the choice on validation.
    #[arg(long)]
    no_val: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// Prompt templates for CLIP's text classifier: tip (Tip-Adapter's 7), clip (CLIP's 80),
    /// photo ("a photo of a {}."), or a file with one template per line containing {}.
    #[arg(long, default_value = "tip")]
    templates: String,
    /// W from a learned CoOp context (a context file from models/coop_train.py or
    /// coop_import.py) through the prompt tower text_embed.onnx, instead of --templates
    /// (with shots or --classes; a pack has its W already).
    #[arg(long, value_name = "CTX", conflicts_with = "templates")]
    coop: Option<PathBuf>,
    /// Weight α of the cache term [default: the pack's, else 1.17].
    #[arg(long)]
    alpha: Option<f32>,
    /// Sharpness β of the cache affinities exp(−β(1 − cos)) [default: the pack's, else 1].
    #[arg(long)]
    beta: Option<f32>,
    /// The reject option: an image whose best class has a probability below P (0 < P < 1) is
    /// reported as unknown ("unknown": true in --json) instead of being called the nearest
    /// class. Probabilities are the pack's calibrated ones when `tipedge tune` fitted a
    /// temperature (see `tipedge inspect`); choose P from `tipedge eval`'s accuracy/coverage
    /// table on a validation split.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    min_prob: Option<f32>,
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
    let val = repo_path("examples/textile/val");
    for p in [&model, &shots, &query, &val] {
        anyhow::ensure!(
            p.exists(),
            "{}: not found; run the demo from a tipedge checkout, or use `tipedge classify`",
            p.display()
        );
    }
    let val = (!args.no_val).then_some(val.as_path());
    if !args.common.json {
        eprintln!(
            "demo: EfficientNet-Lite0 (ImageNet weights) + few-shot head from {}{}, classifying {}",
            shots.display(),
            val.map_or(String::new(), |v| format!(
                " (recipe and head chosen on {})",
                v.display()
            )),
            query.display()
        );
    }
    classify(&model, Source::Shots(&shots, val), &args.common, &[query])
}

pub fn run(args: ClassifyArgs) -> anyhow::Result<i32> {
    let source = match (&args.shots, &args.pack) {
        (Some(dir), _) => Source::Shots(dir, args.val.as_deref()),
        (None, Some(pack)) => Source::Pack(pack),
        (None, None) => Source::ZeroShot(&args.classes),
    };
    if let (Source::Pack(pack), Some(ctx)) = (&source, &args.common.coop) {
        anyhow::bail!(
            "--coop {}: a pack's W is fixed when it is built; build it with cache build --coop \
             (--pack {})",
            ctx.display(),
            pack.display()
        );
    }
    classify(&args.model, source, &args.common, &args.inputs)
}

/// Where the classes and the cache come from.
enum Source<'a> {
    /// Shots, and a validation split to choose the recipe and head on.
    Shots(&'a Path, Option<&'a Path>),
    Pack(&'a Path),
    ZeroShot(&'a [String]),
}

fn classify(
    model: &Path,
    source: Source<'_>,
    common: &CommonArgs,
    inputs: &[PathBuf],
) -> anyhow::Result<i32> {
    let paths = ModelPaths::resolve(model)?;
    let run = common.runtime.run_options();
    let limits = common.runtime.limits();
    let encoder = Arc::new(load_image_encoder(&paths.image, &run)?);
    let files = expand_inputs(inputs)?;
    anyhow::ensure!(
        !files.is_empty(),
        "no image files found in the given inputs"
    );

    // The classifier: a pack (memory-mapped), or built here from shots or class names.
    let mut bars = Bars::new(common.json);
    let prompts = || Prompts::resolve(&common.templates, common.coop.as_deref());
    let from_built = |b: Built| (Classifier::from_draft(b.draft), b.class_folders, b.skipped);
    // A classifier built here from shots: plain f32 keys at the official α/β, unless a
    // validation split chooses.
    let shot_options = |prompts| BuildOptions {
        recipe: KeyRecipe::plain(),
        prompts,
        key_dtype: KeyDtype::F32,
        alpha: DEFAULT_ALPHA,
        beta: DEFAULT_BETA,
        created_unix: 0,
        limits,
        run: run.clone(),
    };
    let (classifier, class_folders, skipped) = match source {
        Source::Pack(file) => {
            let c = Classifier::open(file, &encoder.expect())?;
            let names = c.class_names().to_vec();
            (c, names, Vec::new())
        }
        Source::Shots(dir, Some(val)) => {
            let options = BuildOptions {
                recipe: RecipeName::Official.recipe(DEFAULT_AUGMENT_EPOCHS, 1),
                ..shot_options(prompts()?)
            };
            let grid = Grid::default_search();
            let search = ValSearch {
                split: val,
                store: None,
                grid: &grid,
                recipes: RecipeName::ALL.to_vec(),
                heads: Head::ALL.to_vec(),
                select: Selection::default(),
                calibrate: true,
            };
            let shots = LabelledSet::read(dir)?;
            let choice =
                build_chosen_on_val(&encoder, &paths, &shots, &options, &search, &mut bars)?;
            if !common.json {
                let top1 = choice.val_top1();
                eprintln!(
                    "chosen on {}: recipe {}, head {} (validation top-1 {:.1}%)",
                    val.display(),
                    choice.chosen.name(),
                    choice.head,
                    top1.unwrap_or(f64::NAN)
                );
            }
            from_built(choice.built)
        }
        Source::Shots(dir, None) => {
            let options = shot_options(prompts()?);
            let shots = LabelledSet::read(dir)?;
            from_built(build_from_shots(
                &encoder, &paths, &shots, &options, &mut bars,
            )?)
        }
        Source::ZeroShot(classes) => from_built(build_zero_shot(
            &encoder,
            &paths,
            classes,
            &prompts()?,
            &run,
            &mut bars,
        )?),
    };
    let params = classifier.params();
    let classifier = classifier.with_params(params.with_alpha_beta(
        common.alpha.unwrap_or(params.alpha),
        common.beta.unwrap_or(params.beta),
    ))?;
    let class_names = classifier.class_names().to_vec();
    let options = SessionOptions {
        top_k: usize::from(common.top_k),
        limits,
        min_prob: common.min_prob,
        tda: None,
    };
    let mut session = Session::new(encoder, Arc::new(classifier), options)?;

    let bar = progress(files.len(), "classify", common.json);
    let mut summary = Summary::default();
    let mut failed: Vec<String> = Vec::new();
    classify_files(&mut session, &files, |path, result| {
        bar.inc(1);
        let record = match result {
            Ok(r) => r,
            Err(e) => {
                if common.json {
                    print_json(&ErrorRecord::new(&e));
                }
                failed.push(e.to_string());
                return;
            }
        };
        let record = match class_of_path(path, &class_folders) {
            Some(t) => record.with_truth(t, &class_names[t]),
            None => record,
        };
        summary.add(&record);
        if common.json {
            print_json(&record);
        } else {
            let shown: Vec<String> = record
                .top
                .iter()
                .map(|l| format!("{} {:.3}", l.label, l.prob))
                .collect();
            let mark = match (record.correct, record.unknown) {
                (Some(true), false) => "  ok",
                (Some(false), false) => "  WRONG",
                // Rejected: whether the rejection saved a mistake or cost a right answer.
                (Some(true), true) => "  (top class right)",
                (Some(false), true) => "  (top class wrong)",
                (None, _) => "",
            };
            let unknown = if record.unknown {
                "unknown (below --min-prob): "
            } else {
                ""
            };
            bar.suspend(|| println!("{}\t{unknown}{}{}", path.display(), shown.join(" | "), mark));
        }
    });
    bar.finish_and_clear();

    // Summary on stderr: the per-image lines on stdout stay machine-readable.
    for s in &skipped {
        eprintln!("skipped shot: {}", s.reason);
    }
    for f in &failed {
        eprintln!("failed: {f}");
    }
    summary.failed = failed.len();
    let mut line = format!(
        "{} images classified, {} failed",
        summary.classified, summary.failed
    );
    if let Some(acc) = summary.accuracy() {
        line += &format!(
            "; accuracy {}/{} = {acc:.1}% (images in folders named after a class)",
            summary.correct, summary.known
        );
    }
    if let Some(p) = common.min_prob {
        line += &format!("; {} unknown (best probability below {p})", summary.unknown);
        if summary.known_accepted > 0 {
            line += &format!(
                ", accuracy of the rest {}/{} = {:.1}%",
                summary.correct_accepted,
                summary.known_accepted,
                100.0 * summary.correct_accepted as f64 / summary.known_accepted as f64
            );
        }
    }
    if summary.classified > 0 {
        let m = &summary.mean_ms;
        line += &format!(
            "; mean per image: decode {:.2} ms, preprocess {:.2} ms, encode {:.2} ms, score {:.3} ms",
            m.decode_ms, m.preprocess_ms, m.encode_ms, m.score_ms
        );
    }
    eprintln!("{line}");
    Ok(if failed.is_empty() && skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}

impl ClassifyArgs {
    pub fn json(&self) -> bool {
        self.common.json
    }
}

impl DemoArgs {
    pub fn json(&self) -> bool {
        self.common.json
    }
}
