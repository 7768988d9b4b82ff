//! `tipedge tune`: the α/β grid search on a validation split.

use std::path::PathBuf;

use clap::Args;
use tipedge::encoder::ModelPaths;
use tipedge::train::tune::{tune, TuneRequest};

use super::common::{
    load_image_encoder, print_json, Bars, CalibrationArgs, FeatureStoreArgs, GridArgs, RuntimeArgs,
};
use super::EXIT_OK;

/// Choose the pack's α (cache weight) and β (affinity sharpness) on a validation split with
/// the official Tip-Adapter grid, and write the pack with them.
///
/// The grid is β = 0.1 + i·(β_max − 0.1)/steps_β for i < steps_β (outer loop) and
/// α = 0.1 + j·(α_max − 0.1)/steps_α (inner loop); the first point with the strictly best
/// top-1 accuracy wins, as in the official search_hp. At that point it then fits the
/// temperature T of calibrated probabilities on the same split (one number minimising the
/// negative log-likelihood, solved exactly; --no-calibration skips it) and stores it in the
/// pack: classify reports softmax(logits / T), a probability that can be thresholded
/// (--min-prob). A split too small or with one class keeps T = 1 and says so.
///
/// Use a validation split, never the test split you report. Validation features are kept in
/// the feature store, so a second run (or finetune / eval on the same images) encodes nothing.
///
/// The new pack is written to a temporary file and renamed over --out (default: the pack
/// itself), so a device reading the pack never sees a half-written file.
///
/// Example:
///   tipedge tune --model models/fixtures/efficientnet-lite0 \
///       --pack textile.pack --val examples/textile/val
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct TuneArgs {
    /// Model folder (image.onnx [+ text.onnx] with JSON sidecars) or an image.onnx file: the
    /// encoder the pack was built with.
    #[arg(long, short)]
    model: PathBuf,
    /// The adapter pack to tune.
    #[arg(long)]
    pack: PathBuf,
    /// Validation split: a folder with one sub-folder per class, or a split file.
    #[arg(long)]
    val: PathBuf,
    /// Where to write the tuned pack [default: replace --pack].
    #[arg(long, short)]
    out: Option<PathBuf>,
    #[command(flatten)]
    grid: GridArgs,
    #[command(flatten)]
    calibration: CalibrationArgs,
    /// Print one JSON object (chosen α/β, accuracies, timings) instead of text; no progress bars.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    store: FeatureStoreArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: TuneArgs) -> anyhow::Result<i32> {
    let grid = args.grid.grid()?;
    let paths = ModelPaths::resolve(&args.model)?;
    let encoder = load_image_encoder(&paths.image, &args.runtime.run_options())?;
    let store = args.store.dir();
    let out = args.out.clone().unwrap_or_else(|| args.pack.clone());
    let request = TuneRequest {
        pack: &args.pack,
        val: &args.val,
        out: &out,
        grid: &grid,
        store: store.as_deref(),
        limits: args.runtime.limits(),
        calibrate: !args.calibration.no_calibration,
    };
    let r = tune(&encoder, &request, &mut Bars::new(args.json))?;
    if args.json {
        print_json(&r);
    } else {
        eprintln!(
            "{}: α = {:.4}, β = {:.4}: validation top-1 {:.2}% on {} images (was {:.2}% at α = {}, β = {}); \
             {}×{} grid searched in {:.2} s, features encoded in {:.1} s ({} from the store)",
            r.pack.display(),
            r.alpha,
            r.beta,
            r.val_top1,
            r.n_val,
            r.val_top1_before,
            r.alpha_before,
            r.beta_before,
            r.grid.betas,
            r.grid.alphas,
            r.seconds.search,
            r.seconds.encode,
            r.features_from_store
        );
    }
    Ok(EXIT_OK)
}
