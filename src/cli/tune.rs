//! `tipedge tune`: the α/β grid search on a validation split.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tipedge::encoder::ModelPaths;
use tipedge::kernel::Kernel;
use tipedge::pack::{write_with_alpha_beta, Pack};
use tipedge::train::search::{grid_accuracy, Grid, GridAccuracy, Model};

use super::common::{
    encode_labelled, expect_for, load_image_encoder, progress, FeatureStoreArgs, RuntimeArgs,
};
use super::EXIT_OK;

/// Choose the pack's α (cache weight) and β (affinity sharpness) on a validation split with
/// the official Tip-Adapter grid, and write the pack with them.
///
/// The grid is β = 0.1 + i·(β_max − 0.1)/steps_β for i < steps_β (outer loop) and
/// α = 0.1 + j·(α_max − 0.1)/steps_α (inner loop); the first point with the strictly best
/// top-1 accuracy wins, as in the official search_hp. Use a validation split, never the test
/// split you report. Validation features are kept in the feature store, so a second run (or
/// finetune / eval on the same images) encodes nothing.
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
    /// Print one JSON object (chosen α/β, accuracies, timings) instead of text; no progress bars.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: FeatureStoreArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// The search grid's extent.
#[derive(Args, Debug, Clone)]
pub struct GridArgs {
    /// Largest β and largest α of the grid (Tip-Adapter's search_scale).
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [7.0, 3.0], value_name = "BETA_MAX,ALPHA_MAX")]
    pub search_scale: Vec<f64>,
    /// Number of β and of α values (Tip-Adapter's search_step).
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [200, 20], value_name = "BETA_STEPS,ALPHA_STEPS")]
    pub search_step: Vec<usize>,
}

impl GridArgs {
    pub fn grid(&self) -> anyhow::Result<Grid> {
        let (&[bmax, amax], &[bs, a_s]) = (&self.search_scale[..], &self.search_step[..]) else {
            anyhow::bail!("--search-scale and --search-step take two values each");
        };
        anyhow::ensure!(
            bmax.is_finite() && amax.is_finite() && bmax > 0.1 && amax > 0.1,
            "--search-scale values must be finite and above 0.1 (the grid starts at 0.1)"
        );
        anyhow::ensure!(
            bs >= 1 && a_s >= 1,
            "--search-step values must be at least 1"
        );
        Ok(Grid::official(bmax, amax, bs, a_s))
    }
}

/// Runs the grid for a pack's keys over encoded features, with a progress bar.
pub fn search_pack(
    pack: &Pack,
    keys_override: Option<tipedge::kernel::Keys<'_>>,
    features: &[f32],
    labels: &[u32],
    grid: &Grid,
    quiet: bool,
) -> anyhow::Result<GridAccuracy> {
    let model = Model {
        keys: keys_override.unwrap_or_else(|| pack.keys()),
        classifier: pack.text_classifier(),
        logit_scale: pack.logit_scale(),
    };
    let bar = progress(labels.len(), "search", quiet);
    let acc = grid_accuracy(&Kernel::detect(), &model, features, labels, grid, |n| {
        bar.set_position(n as u64)
    })?;
    bar.finish_and_clear();
    Ok(acc)
}

pub fn run(args: TuneArgs) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    let grid = args.grid.grid()?;
    let paths = ModelPaths::resolve(&args.model)?;
    let encoder = load_image_encoder(&paths.image, &args.runtime.run_options())?;
    let pack = Pack::open(&args.pack, &expect_for(&encoder)?)?;
    let val = encode_labelled(
        &encoder,
        &args.val,
        pack.class_names(),
        &args.store,
        &args.runtime,
        "val",
        args.json,
    )?;
    let t_encode = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let before = search_pack(
        &pack,
        None,
        &val.features,
        &val.labels,
        &Grid::single(pack.alpha(), pack.beta()),
        true,
    )?
    .accuracy(0, 0);
    let acc = search_pack(&pack, None, &val.features, &val.labels, &grid, args.json)?;
    let (alpha, beta, best) = acc.best();
    let t_search = t1.elapsed().as_secs_f64();
    let out = args.out.clone().unwrap_or_else(|| args.pack.clone());
    write_with_alpha_beta(&pack, &out, alpha, beta)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "pack": out,
                "alpha": alpha,
                "beta": beta,
                "val_top1": best,
                "val_top1_before": before,
                "alpha_before": pack.alpha(),
                "beta_before": pack.beta(),
                "n_val": val.labels.len(),
                "grid": {"betas": grid.betas.len(), "alphas": grid.alphas.len()},
                "features_from_store": val.from_store,
                "skipped": val.skipped.iter().map(|s| &s.reason).collect::<Vec<_>>(),
                "seconds": {"encode": t_encode, "search": t_search},
            })
        );
    } else {
        eprintln!(
            "{}: α = {alpha:.4}, β = {beta:.4}: validation top-1 {best:.2}% on {} images (was {before:.2}% at α = {}, β = {}); \
             {}×{} grid searched in {t_search:.2} s, features encoded in {t_encode:.1} s ({} from the store)",
            out.display(),
            val.labels.len(),
            pack.alpha(),
            pack.beta(),
            grid.betas.len(),
            grid.alphas.len(),
            val.from_store
        );
    }
    Ok(EXIT_OK)
}
