//! `tipedge eval`: accuracy of a pack (and its fine-tuned version) on a labelled test split.

use std::path::PathBuf;

use clap::Args;
use tipedge::encoder::ModelPaths;
use tipedge::train::calibration::CalibrationMetrics;
use tipedge::train::evaluate::{evaluate, Compare, EvalReport, EvalRequest};
use tipedge::zeroshot::Prompts;

use super::common::{
    load_image_encoder, print_json, Bars, FeatureStoreArgs, GridArgs, RuntimeArgs,
};
use super::plot::draw_report;
use super::{EXIT_OK, EXIT_SOME_FAILED};

/// Score a labelled test split: top-1 / top-5, per-class accuracy and the confusion matrix,
/// with the methods side by side: zero-shot (CLIP only: 100·f·Wᵀ), cache-only (the cache
/// term alone), Tip-Adapter (the pack's α/β) and Tip-Adapter-F (--finetuned).
///
/// The headline numbers (top1, top5, per_class, confusion) are those of the last method
/// available: Tip-Adapter-F if given, else Tip-Adapter. --plot draws the confusion matrix and
/// the accuracy of every α/β of the search grid on this split, with the pack's α/β marked
/// (that point was chosen on the validation split; the surface shows how much it mattered),
/// the reliability diagram (accuracy against confidence in 15 bins, before and after the
/// pack's temperature) and the reject option's accuracy and coverage against --min-prob.
///
/// Calibration: the negative log-likelihood, the Brier score and the expected calibration
/// error (15 equal bins, as Guo et al. 2017) of softmax(logits) and of softmax(logits / T)
/// with the pack's temperature T (fitted by tune / finetune); then, for thresholds P from 0
/// to 0.999, the share of images whose top probability reaches P (coverage) and the accuracy
/// among them: pick classify's --min-prob from it on a validation split.
///
/// Example:
///   tipedge eval --model models/fixtures/efficientnet-lite0 --pack textile.pack \
///       --finetuned textile-f.pack --test examples/textile/query --plot eval.png
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct EvalArgs {
    /// Model folder (image.onnx [+ text.onnx] with JSON sidecars) or an image.onnx file.
    #[arg(long, short)]
    model: PathBuf,
    /// The training-free adapter pack (cache build, then tune).
    #[arg(long)]
    pack: PathBuf,
    /// The Tip-Adapter-F pack written by `tipedge finetune`.
    #[arg(long)]
    finetuned: Option<PathBuf>,
    /// Test split: a folder with one sub-folder per class, or a split file.
    #[arg(long)]
    test: PathBuf,
    /// Draw the confusion matrix, the α/β accuracy surface, the reliability diagram and the
    /// reject option's accuracy / coverage into this PNG.
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    /// For a pack built with --coop: the prompt templates whose zero-shot and Tip-Adapter rows
    /// it is compared with (tip, clip, photo, or a file).
    #[arg(long, default_value = "tip")]
    templates: String,
    /// For a pack built from templates: a CoOp context whose rows (coop, tip_adapter+coop, at
    /// the pack's α/β) are added.
    #[arg(long, value_name = "CTX", conflicts_with = "templates")]
    coop: Option<PathBuf>,
    #[command(flatten)]
    grid: GridArgs,
    /// Print one JSON object on stdout instead of the table; no progress bars.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    store: FeatureStoreArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: EvalArgs) -> anyhow::Result<i32> {
    let paths = ModelPaths::resolve(&args.model)?;
    let encoder = load_image_encoder(&paths.image, &args.runtime.run_options())?;
    let grid = args.grid.grid()?;
    let store = args.store.dir();
    let prompts = Prompts::resolve(&args.templates, args.coop.as_deref())?;
    let request = EvalRequest {
        pack: &args.pack,
        finetuned: args.finetuned.as_deref(),
        test: &args.test,
        surface: args.plot.is_some().then_some(&grid),
        store: store.as_deref(),
        limits: args.runtime.limits(),
        compare: Some(Compare {
            model: &paths,
            prompts: &prompts,
            run: args.runtime.run_options(),
        }),
    };
    let mut r = evaluate(&encoder, &request, &mut Bars::new(args.json))?;
    if let (Some(png), Some(surface)) = (&args.plot, &r.surface) {
        draw_report(
            png,
            &r.classes,
            r.headline(),
            r.method,
            surface,
            &r.calibration,
        )?;
        if !args.json {
            eprintln!("plot: {}", png.display());
        }
        r.plot = Some(png.clone());
    }

    if args.json {
        print_json(&r);
    } else {
        let headline = r.headline();
        println!(
            "{} test images, {} classes ({} features from the store)",
            headline.n_images,
            r.classes.len(),
            r.features_from_store
        );
        println!(
            "{:<17} {:>7} {:>17} {:>7}",
            "method", "top-1", "95% interval", "top-5"
        );
        for m in &r.methods.0 {
            let (lo, hi) = m.metrics.top1_ci95;
            println!(
                "{:<17} {:>6.2}% {:>7.1}–{:<5.1}%   {:>6.2}%",
                m.name, m.metrics.top1, lo, hi, m.metrics.top5
            );
        }
        println!(
            "(one test image is {:.2} points of top-1; the interval is Wilson's, for the \
             population these images were drawn from)",
            r.points_per_image
        );
        for c in &r.comparisons {
            println!(
                "{} against {}: right on {} images it gets wrong, wrong on {} it gets right \
                 (McNemar exact p = {:.3})",
                c.method, c.against, c.paired.better, c.paired.worse, c.paired.p_value
            );
        }
        print_calibration(&r);
        println!("\nper class ({}):", r.method);
        for c in &headline.per_class {
            println!(
                "  {:<24} {:>3}/{:<3} {:>6.2}%",
                c.class, c.correct, c.total, c.accuracy
            );
        }
        println!(
            "\nconfusion ({}; rows = true class, columns = predicted):",
            r.method
        );
        for (name, row) in r.classes.iter().zip(&headline.confusion) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:>5}")).collect();
            println!("  {name:<24}{}", cells.join(""));
        }
    }
    Ok(if r.skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}

/// The calibration table and the reject option's accuracy / coverage.
fn print_calibration(r: &EvalReport) {
    let c = &r.calibration;
    match c.temperature {
        Some(t) => println!(
            "\ncalibration ({}, temperature T = {t:.4e} from the pack):",
            r.method
        ),
        None => println!(
            "\ncalibration ({}; the pack has no temperature: `tipedge tune` fits one):",
            r.method
        ),
    }
    println!(
        "  {:<16} {:>8} {:>8} {:>8}",
        "probabilities", "NLL", "Brier", "ECE"
    );
    let row = |name: &str, m: &CalibrationMetrics| {
        println!(
            "  {name:<16} {:>8.4} {:>8.4} {:>8.4}",
            m.nll, m.brier, m.ece
        )
    };
    row("softmax(z)", &c.uncalibrated);
    if let Some(m) = &c.calibrated {
        row("softmax(z / T)", m);
    }
    println!(
        "\nreject option (--min-prob P: below P the answer is unknown; {} probabilities):",
        if c.calibrated.is_some() {
            "calibrated"
        } else {
            "uncalibrated"
        }
    );
    println!("  {:>6} {:>9} {:>9}", "P", "coverage", "accuracy");
    for p in &c.coverage {
        println!(
            "  {:>6.3} {:>8.1}% {:>8.1}%  ({} of {} accepted)",
            p.min_prob,
            100.0 * p.coverage,
            100.0 * p.accuracy,
            p.accepted,
            r.n_images
        );
    }
}
