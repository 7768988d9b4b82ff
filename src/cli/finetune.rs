//! `tipedge finetune`: Tip-Adapter-F.

use std::path::PathBuf;

use clap::Args;
use tipedge::adapter::{DEFAULT_ALPHA, DEFAULT_BETA};
use tipedge::encoder::ModelPaths;
use tipedge::kernel::KeyDtype;
use tipedge::train::finetune::FinetuneConfig;
use tipedge::train::finetune_pack::{finetune_pack, FinetuneRequest, ViewsChoice};

use super::common::{
    load_image_encoder, now_unix, print_json, Bars, CalibrationArgs, FeatureStoreArgs, GridArgs,
    RuntimeArgs,
};
use super::{EXIT_OK, EXIT_SOME_FAILED};

/// Tip-Adapter-F: fine-tune the pack's cache keys on the shots, pick the best epoch on a
/// validation split, search α/β again, fit the temperature of calibrated probabilities for the
/// keys as stored (see `tipedge tune --help`), and write a new pack.
///
/// As the official run_tip_adapter_F: the keys are trainable and the values (labels) frozen;
/// the loss is the cross-entropy of the Tip-Adapter logits (logit scale 100) at the initial
/// α/β (--alpha/--beta, Tip-Adapter's ImageNet init 1.17/1); AdamW (lr 1e-3, eps 1e-4, weight decay 0.01) with cosine annealing stepped every
/// iteration; batches of 256 shuffled shots; 20 epochs, each on freshly augmented views of
/// the shots (RandomResizedCrop 0.5–1 + flip). Keys are not renormalised. The gradient is
/// closed-form (no autodiff framework).
///
/// Beyond the official run: by default (--views auto) the keys are also trained on plain,
/// unaugmented views of the shots (a crop that keeps half an inspection image can cut a small
/// defect out), and the run with the better validation top-1 is kept (ties: plain). And the
/// result is never worse on validation than the input: if neither run beats the input pack as
/// it is, the input is written to --out unchanged and the report says so (--write-trained writes
/// the trained keys anyway). --views augmented reproduces the official run alone.
///
/// The shots must be the ones the pack was built from: by default the same K and seed as the
/// pack records (see `tipedge inspect`). Shots enrolled on a device (`tipedge enrol`, the
/// stream's control socket) are stored in the pack and train with the others, as their stored
/// features (their images stayed on the device); a pack made only of enrolled shots needs no
/// --shots. The initial keys are the pack's (int8 keys are dequantised; build with --keys f32 to
/// start from exact features).
///
/// Example:
///   tipedge finetune --model models/fixtures/efficientnet-lite0 --pack textile.pack \
///       --shots examples/textile/shots --val examples/textile/val --out textile-f.pack
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct FinetuneArgs {
    /// Model folder (image.onnx [+ text.onnx] with JSON sidecars) or an image.onnx file: the
    /// encoder the pack was built with.
    #[arg(long, short)]
    model: PathBuf,
    /// The pack to start from (built by `tipedge cache build`, preferably tuned).
    #[arg(long)]
    pack: PathBuf,
    /// The few-shot folder the pack was built from [default: none: only the shots stored in the
    /// pack].
    #[arg(long)]
    shots: Option<PathBuf>,
    /// Validation split (folder per class, or a split file): picks the epoch and α/β.
    #[arg(long)]
    val: PathBuf,
    /// Where to write the fine-tuned pack.
    #[arg(long, short)]
    out: PathBuf,
    /// Shots per class [default: as recorded in the pack].
    #[arg(long, short = 'k')]
    shots_per_class: Option<u32>,
    /// Seed of the shot draw [default: as recorded in the pack]; also seeds the augmentations
    /// and the batch order.
    #[arg(long)]
    seed: Option<u64>,
    /// Training epochs.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// AdamW learning rate (cosine-annealed to 0 over the run).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// α used in the training loss (the official init_alpha; the search afterwards picks the
    /// α the new pack uses).
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    alpha: f32,
    /// β used in the training loss (the official init_beta).
    #[arg(long, default_value_t = DEFAULT_BETA)]
    beta: f32,
    /// Training views: auto (train on plain and on augmented views, keep the better on
    /// validation), plain, or augmented (= official: fresh RandomResizedCrop 0.5–1 + flip every
    /// epoch).
    #[arg(long, default_value = "auto")]
    views: ViewsChoice,
    /// Write the fine-tuned keys even when they do not beat the input pack on validation
    /// [default: the input pack is written unchanged then].
    #[arg(long)]
    write_trained: bool,
    /// Storage of the fine-tuned keys: int8, fp16 or f32 [default: the pack's].
    #[arg(long)]
    keys: Option<KeyDtype>,
    #[command(flatten)]
    grid: GridArgs,
    #[command(flatten)]
    calibration: CalibrationArgs,
    /// Print one JSON object (per-epoch loss and validation accuracy, chosen epoch, α/β,
    /// timings) instead of text; no progress bars.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    store: FeatureStoreArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: FinetuneArgs) -> anyhow::Result<i32> {
    let grid = args.grid.grid()?;
    let paths = ModelPaths::resolve(&args.model)?;
    let encoder = load_image_encoder(&paths.image, &args.runtime.run_options())?;
    let store = args.store.dir();
    let request = FinetuneRequest {
        pack: &args.pack,
        shots: args.shots.as_deref(),
        val: &args.val,
        out: &args.out,
        shots_per_class: args.shots_per_class.map(|k| k as usize),
        seed: args.seed,
        config: FinetuneConfig {
            epochs: args.epochs,
            batch: args.batch_size as usize,
            lr: args.lr,
            ..FinetuneConfig::default()
        },
        train_alpha: args.alpha,
        train_beta: args.beta,
        key_dtype: args.keys,
        grid: &grid,
        store: store.as_deref(),
        limits: args.runtime.limits(),
        calibrate: !args.calibration.no_calibration,
        created_unix: now_unix(),
        views: args.views,
        never_worse: !args.write_trained,
    };
    let mut bars = Bars::new(args.json);
    let printer = bars.clone();
    let r = finetune_pack(&encoder, &request, &mut bars, |views, e| {
        if !args.json {
            printer.println(&format!(
                "{:>9} epoch {:>3}: loss {:.4}, lr {:.2e}, val top-1 {:.2}%",
                views.name(),
                e.epoch + 1,
                e.loss,
                e.lr,
                e.val_accuracy,
            ));
        }
    })?;
    if args.json {
        print_json(&r);
    } else {
        for c in &r.candidates {
            eprintln!(
                "{:>9} views: best epoch {}, then α = {:.4}, β = {:.4}: val top-1 {:.2}% (keys as \
                 stored){}",
                c.views,
                c.best_epoch,
                c.alpha,
                c.beta,
                c.val_top1,
                if c.chosen { "  <- chosen" } else { "" },
            );
        }
        if r.kept_input {
            eprintln!(
                "{}: training did not beat the input pack on validation ({:.2}% against its \
                 {:.2}%): the input pack is written unchanged (--write-trained writes the \
                 trained keys anyway)",
                r.pack.display(),
                r.val_top1,
                r.input_val_top1,
            );
        } else {
            eprintln!(
                "{}: {} views, best epoch {} of {}; α = {:.4}, β = {:.4}: val top-1 {:.2}% \
                 (the input pack: {:.2}%); keys moved by at most {:.4}; {} keys; training \
                 {:.1} s ({:.1} s encoding shots)",
                r.pack.display(),
                r.views,
                r.best_epoch,
                args.epochs,
                r.alpha,
                r.beta,
                r.val_top1,
                r.input_val_top1,
                r.max_key_change,
                r.key_dtype,
                r.seconds.train,
                r.seconds.train_encode,
            );
        }
    }
    Ok(if r.skipped.is_empty() && r.val_skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}
