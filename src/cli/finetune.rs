//! `tipedge finetune`: Tip-Adapter-F.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tipedge::adapter::{DEFAULT_ALPHA, DEFAULT_BETA};
use tipedge::dataset::LabelledSet;
use tipedge::encoder::ModelPaths;
use tipedge::kernel::{Kernel, KeyData, KeyDtype, Keys};
use tipedge::pack::{write_pack, OwnedKeys, Pack, Provenance};
use tipedge::pipeline::Embedder;
use tipedge::preprocess::augment::{AugmentPass, Augmentation};
use tipedge::rng::derive_seed;
use tipedge::train::finetune::{train, FinetuneConfig, TipAdapterF};
use tipedge::train::search::{grid_accuracy, Grid, Model};

use super::common::{
    encode_labelled, expect_for, load_image_encoder, now_unix, progress, tool_version,
    FeatureStoreArgs, RuntimeArgs,
};
use super::tune::{search_pack, GridArgs};
use super::{EXIT_OK, EXIT_SOME_FAILED};

/// Tip-Adapter-F: fine-tune the pack's cache keys on the shots, pick the best epoch on a
/// validation split, search α/β again, and write a new pack.
///
/// As the official run_tip_adapter_F: the keys are trainable and the values (labels) frozen;
/// the loss is the cross-entropy of the Tip-Adapter logits (logit scale 100) at the initial
/// α/β (--alpha/--beta, Tip-Adapter's ImageNet init 1.17/1); AdamW (lr 1e-3, eps 1e-4, weight decay 0.01) with cosine annealing stepped every
/// iteration; batches of 256 shuffled shots; 20 epochs, each on freshly augmented views of
/// the shots (RandomResizedCrop 0.5–1 + flip). Keys are not renormalised. The gradient is
/// closed-form (no autodiff framework).
///
/// The shots must be the ones the pack was built from: by default the same K and seed as the
/// pack records (see `tipedge inspect`). The initial keys are the pack's (int8 keys are
/// dequantised; build with --keys f32 to start from exact features).
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
    /// The few-shot folder the pack was built from.
    #[arg(long)]
    shots: PathBuf,
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
    /// Storage of the fine-tuned keys: int8, fp16 or f32 [default: the pack's].
    #[arg(long)]
    keys: Option<KeyDtype>,
    #[command(flatten)]
    grid: GridArgs,
    /// Print one JSON object (per-epoch loss and validation accuracy, chosen epoch, α/β,
    /// timings) instead of text; no progress bars.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: FeatureStoreArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: FinetuneArgs) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    let grid = args.grid.grid()?;
    anyhow::ensure!(args.epochs >= 1, "--epochs must be at least 1");
    anyhow::ensure!(
        args.lr.is_finite() && args.lr > 0.0,
        "--lr must be a positive number"
    );
    let paths = ModelPaths::resolve(&args.model)?;
    let encoder = load_image_encoder(&paths.image, &args.runtime.run_options())?;
    let pack = Pack::open(&args.pack, &expect_for(&encoder)?)?;
    let dim = pack.dim();
    let classes = pack.class_names().to_vec();
    let prov = pack.provenance().clone();

    // The pack's shots, drawn again the way `cache build` drew them.
    let k = args.shots_per_class.unwrap_or(prov.shots) as usize;
    let seed = args.seed.unwrap_or(prov.seed);
    let mut shots = LabelledSet::read(&args.shots)?;
    if shots.classes.iter().any(|c| c.images.len() > k) {
        shots = shots.sample_k_shot(k, seed)?;
    }
    let mut class_of = Vec::with_capacity(shots.classes.len());
    for c in &shots.classes {
        let i = classes.iter().position(|n| *n == c.name).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: class '{}' is not one of the pack's classes ({})",
                args.shots.join(&c.folder).display(),
                c.name,
                classes.join(", ")
            )
        })?;
        class_of.push(i as u32);
    }
    let offsets = pack.class_offsets().to_vec();
    for (c, &i) in shots.classes.iter().zip(&class_of) {
        let in_pack = (offsets[i as usize + 1] - offsets[i as usize]) as usize;
        anyhow::ensure!(
            in_pack == c.images.len(),
            "{}: the pack has {in_pack} keys for class '{}' but {} shots are drawn here; pass the \
             --shots folder, --shots-per-class and --seed the pack was built with",
            args.shots.join(&c.folder).display(),
            c.name,
            c.images.len()
        );
    }
    let items = shots.items();
    let shot_paths: Vec<PathBuf> = items.iter().map(|(p, _)| p.clone()).collect();
    let shot_targets: Vec<u32> = items.iter().map(|(_, c)| class_of[*c]).collect();

    let val = encode_labelled(
        &encoder,
        &args.val,
        &classes,
        &args.store,
        &args.runtime,
        "val",
        args.json,
    )?;
    let t_val = t0.elapsed().as_secs_f64();

    let (alpha, beta) = (args.alpha, args.beta);
    anyhow::ensure!(
        alpha.is_finite() && beta.is_finite(),
        "--alpha and --beta must be finite numbers"
    );
    let init = pack.key_data().to_f32(dim);
    let mut model = TipAdapterF::new(
        init.clone(),
        pack.labels().to_vec(),
        pack.text_classifier().map(<[f32]>::to_vec),
        dim,
        classes.len(),
        (alpha, beta, pack.logit_scale()),
    );
    let cfg = FinetuneConfig {
        epochs: args.epochs,
        batch: args.batch_size as usize,
        lr: args.lr,
        seed,
        ..FinetuneConfig::default()
    };
    let kernel = Kernel::detect();
    let bar = progress(args.epochs * shot_paths.len(), "finetune", args.json);
    let mut embedder = Embedder::new(&encoder, args.runtime.limits());
    let mut skipped: Vec<String> = Vec::new();
    let mut t_encode = 0.0;
    let t_train = Instant::now();
    let trained = train(
        &mut model,
        &cfg,
        |epoch| -> anyhow::Result<(Vec<f32>, Vec<u32>)> {
            let te = Instant::now();
            embedder.set_augmentation(Some(AugmentPass {
                augmentation: Augmentation::default(),
                seed: derive_seed(seed, &[0xF17E]),
                epoch: epoch as u64,
            }));
            let mut feats = Vec::with_capacity(shot_paths.len() * dim);
            let mut targets = Vec::with_capacity(shot_paths.len());
            embedder.embed_all(&shot_paths, |e| {
                bar.inc(1);
                match e.result {
                    Ok(f) => {
                        feats.extend_from_slice(f);
                        targets.push(shot_targets[e.index]);
                    }
                    Err(err) if epoch == 0 => skipped.push(err.to_string()),
                    Err(_) => {}
                }
            });
            t_encode += te.elapsed().as_secs_f64();
            anyhow::ensure!(
                !targets.is_empty(),
                "{}: no shot could be encoded",
                args.shots.display()
            );
            Ok((feats, targets))
        },
        |keys| {
            let keys = Keys::new(dim, KeyData::F32(keys), &offsets)?;
            let m = Model {
                keys,
                classifier: pack.text_classifier(),
                logit_scale: pack.logit_scale(),
            };
            Ok(grid_accuracy(
                &kernel,
                &m,
                &val.features,
                &val.labels,
                &Grid::single(alpha, beta),
                |_| {},
            )?
            .accuracy(0, 0))
        },
        |r| {
            if !args.json {
                bar.suspend(|| {
                    eprintln!(
                        "epoch {:>3}: loss {:.4}, lr {:.2e}, val top-1 {:.2}%",
                        r.epoch + 1,
                        r.loss,
                        r.lr,
                        r.val_accuracy,
                    )
                });
            }
        },
    )?;
    bar.finish_and_clear();
    for s in &skipped {
        eprintln!("skipped shot: {s}");
    }
    let t_train = t_train.elapsed().as_secs_f64();

    // α/β again, with the best epoch's keys.
    let t_s = Instant::now();
    let best_keys = Keys::new(dim, KeyData::F32(&trained.keys), &offsets)?;
    let before_search = search_pack(
        &pack,
        Some(best_keys),
        &val.features,
        &val.labels,
        &Grid::single(alpha, beta),
        true,
    )?
    .accuracy(0, 0);
    let acc = search_pack(
        &pack,
        Some(best_keys),
        &val.features,
        &val.labels,
        &grid,
        args.json,
    )?;
    let (new_alpha, new_beta, val_top1) = acc.best();
    let t_search = t_s.elapsed().as_secs_f64();

    let dtype = args.keys.unwrap_or(pack.key_dtype());
    let keys = OwnedKeys::from_f32(dtype, dim, &trained.keys)?;
    let provenance = Provenance {
        tool_version: tool_version(),
        created_unix: now_unix(),
        ..prov
    };
    let mut contents = pack.contents();
    contents.key_data = keys.as_key_data();
    contents.alpha = new_alpha;
    contents.beta = new_beta;
    contents.provenance = &provenance;
    write_pack(&args.out, &contents)?;
    let moved = trained
        .keys
        .iter()
        .zip(&init)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "pack": args.out,
                "epochs": trained.epochs,
                "best_epoch": trained.best_epoch + 1,
                "val_top1_best_epoch": trained.best_val_accuracy,
                "val_top1_before_search": before_search,
                "alpha": new_alpha,
                "beta": new_beta,
                "val_top1": val_top1,
                "train_alpha": alpha,
                "train_beta": beta,
                "key_dtype": dtype.name(),
                "max_key_change": moved,
                "n_shots": shot_paths.len(),
                "n_val": val.labels.len(),
                "skipped": skipped,
                "seconds": {"val_features": t_val, "train": t_train, "train_encode": t_encode, "search": t_search},
            })
        );
    } else {
        eprintln!(
            "{}: best epoch {} of {} (val top-1 {:.2}% at α = {alpha}, β = {beta}); after the α/β search \
             α = {new_alpha:.4}, β = {new_beta:.4}: val top-1 {val_top1:.2}%; keys moved by at most {moved:.4}; \
             {} keys; training {t_train:.1} s ({t_encode:.1} s encoding augmented shots)",
            args.out.display(),
            trained.best_epoch + 1,
            args.epochs,
            trained.best_val_accuracy,
            dtype,
        );
    }
    Ok(if skipped.is_empty() && val.skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}
