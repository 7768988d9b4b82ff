//! `tipedge eval`: accuracy of a pack (and its fine-tuned version) on a labelled test split.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tipedge::adapter::TipAdapter;
use tipedge::encoder::ModelPaths;
use tipedge::kernel::MAX_BATCH;
use tipedge::pack::Pack;
use tipedge::train::metrics::Metrics;

use super::common::{
    encode_labelled, expect_for, load_image_encoder, FeatureStoreArgs, RuntimeArgs,
};
use super::plot::{draw_report, Surface};
use super::tune::{search_pack, GridArgs};
use super::{EXIT_OK, EXIT_SOME_FAILED};

/// Score a labelled test split: top-1 / top-5, per-class accuracy and the confusion matrix,
/// with the methods side by side: zero-shot (CLIP only: 100·f·Wᵀ), cache-only (the cache
/// term alone), Tip-Adapter (the pack's α/β) and Tip-Adapter-F (--finetuned).
///
/// The headline numbers (top1, top5, per_class, confusion) are those of the last method
/// available: Tip-Adapter-F if given, else Tip-Adapter. --plot draws the confusion matrix and
/// the accuracy of every α/β of the search grid on this split, with the pack's α/β marked
/// (that point was chosen on the validation split; the surface shows how much it mattered).
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
    /// Draw the confusion matrix and the α/β accuracy surface into this PNG.
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    grid: GridArgs,
    /// Print one JSON object on stdout instead of the table; no progress bars.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: FeatureStoreArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// One method's logits over all features.
fn logits_of(
    adapter: &mut TipAdapter<'_>,
    features: &[f32],
    n_classes: usize,
    zero_shot_only: bool,
) -> anyhow::Result<Vec<f32>> {
    let dim = adapter.dim();
    let n = features.len() / dim;
    let mut out = vec![0f32; n * n_classes];
    for (q, o) in features
        .chunks(MAX_BATCH * dim)
        .zip(out.chunks_mut(MAX_BATCH * n_classes))
    {
        if zero_shot_only {
            for (f, o) in q.chunks_exact(dim).zip(o.chunks_exact_mut(n_classes)) {
                adapter.zero_shot_logits(f, o);
            }
        } else {
            adapter.logits_batch(q, o)?;
        }
    }
    Ok(out)
}

pub fn run(args: EvalArgs) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    let paths = ModelPaths::resolve(&args.model)?;
    let encoder = load_image_encoder(&paths.image, &args.runtime.run_options())?;
    let expect = expect_for(&encoder)?;
    let pack = Pack::open(&args.pack, &expect)?;
    let finetuned = match &args.finetuned {
        Some(p) => {
            let f = Pack::open(p, &expect)?;
            anyhow::ensure!(
                f.class_names() == pack.class_names(),
                "{}: its classes ({}) differ from {}'s ({})",
                p.display(),
                f.class_names().join(", "),
                args.pack.display(),
                pack.class_names().join(", ")
            );
            Some(f)
        }
        None => None,
    };
    let classes = pack.class_names().to_vec();
    let nc = classes.len();
    let test = encode_labelled(
        &encoder,
        &args.test,
        &classes,
        &args.store,
        &args.runtime,
        "test",
        args.json,
    )?;
    let t_encode = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();

    let mut methods: Vec<(&str, Metrics)> = Vec::new();
    let metrics = |logits: &[f32]| Metrics::from_logits(logits, &test.labels, &classes);
    let w = pack.text_classifier();
    if w.is_some() {
        let mut a = TipAdapter::new(pack.keys(), w)?;
        a.logit_scale = pack.logit_scale();
        methods.push((
            "zero_shot",
            metrics(&logits_of(&mut a, &test.features, nc, true)?),
        ));
    }
    {
        let mut a = TipAdapter::new(pack.keys(), None)?;
        (a.alpha, a.beta) = (1.0, pack.beta());
        methods.push((
            "cache_only",
            metrics(&logits_of(&mut a, &test.features, nc, false)?),
        ));
    }
    {
        let mut a = TipAdapter::new(pack.keys(), w)?;
        (a.alpha, a.beta, a.logit_scale) = (pack.alpha(), pack.beta(), pack.logit_scale());
        methods.push((
            "tip_adapter",
            metrics(&logits_of(&mut a, &test.features, nc, false)?),
        ));
    }
    if let Some(f) = &finetuned {
        let mut a = TipAdapter::new(f.keys(), f.text_classifier())?;
        (a.alpha, a.beta, a.logit_scale) = (f.alpha(), f.beta(), f.logit_scale());
        methods.push((
            "tip_adapter_f",
            metrics(&logits_of(&mut a, &test.features, nc, false)?),
        ));
    }
    let (primary, headline) = methods.last().cloned().expect("at least two methods");
    let t_score = t1.elapsed().as_secs_f64();

    if let Some(png) = &args.plot {
        let shown = finetuned.as_ref().unwrap_or(&pack);
        let grid = args.grid.grid()?;
        let acc = search_pack(shown, None, &test.features, &test.labels, &grid, args.json)?;
        let surface = Surface {
            accuracy: &acc,
            chosen: (shown.alpha(), shown.beta()),
        };
        draw_report(png, &classes, &headline, primary, &surface)?;
        if !args.json {
            eprintln!("plot: {}", png.display());
        }
    }

    if args.json {
        let mut obj = serde_json::json!({
            "method": primary,
            "top1": headline.top1,
            "top5": headline.top5,
            "per_class": headline.per_class,
            "confusion": headline.confusion,
            "n_images": headline.n_images,
            "classes": classes,
            "methods": methods.iter().map(|(n, m)| (n.to_string(), serde_json::to_value(m).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
            "alpha": pack.alpha(),
            "beta": pack.beta(),
            "skipped": test.skipped.iter().map(|s| &s.reason).collect::<Vec<_>>(),
            "features_from_store": test.from_store,
            "seconds": {"encode": t_encode, "score": t_score},
        });
        if let Some(f) = &finetuned {
            obj["finetuned_alpha"] = f.alpha().into();
            obj["finetuned_beta"] = f.beta().into();
        }
        if let Some(p) = &args.plot {
            obj["plot"] = serde_json::json!(p);
        }
        println!("{obj}");
    } else {
        println!(
            "{} test images, {} classes ({} features from the store)",
            headline.n_images, nc, test.from_store
        );
        println!("{:<15} {:>7} {:>7}", "method", "top-1", "top-5");
        for (name, m) in &methods {
            println!("{name:<15} {:>6.2}% {:>6.2}%", m.top1, m.top5);
        }
        println!("\nper class ({primary}):");
        for c in &headline.per_class {
            println!(
                "  {:<24} {:>3}/{:<3} {:>6.2}%",
                c.class, c.correct, c.total, c.accuracy
            );
        }
        println!("\nconfusion ({primary}; rows = true class, columns = predicted):");
        for (name, row) in classes.iter().zip(&headline.confusion) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:>5}")).collect();
            println!("  {name:<24}{}", cells.join(""));
        }
    }
    Ok(if test.skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}
