//! `tipedge cache build`: few-shot folder → adapter pack file.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tipedge::adapter::{Head, DEFAULT_ALPHA, DEFAULT_BETA};
use tipedge::encoder::ModelPaths;
use tipedge::kernel::KeyDtype;
use tipedge::train::build::{build_pack, BuildOptions, BuildRequest, ValSearch};
use tipedge::train::keys::DEFAULT_AUGMENT_EPOCHS;
use tipedge::train::recipes::{RecipeName, Selection};
use tipedge::zeroshot::Prompts;

use super::common::{
    load_image_encoder, now_unix, print_json, Bars, CalibrationArgs, FeatureStoreArgs, GridArgs,
    RuntimeArgs,
};
use super::{EXIT_OK, EXIT_SOME_FAILED};

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Build an adapter pack from a few-shot folder, as Tip-Adapter builds its cache: draw K
    /// shots per class (seeded; all images without --shots-per-class), encode
    /// --augment-epochs random views of each (RandomResizedCrop scale 0.5–1 + horizontal flip),
    /// average the raw features per shot and L2-normalise them into keys, sort the keys by
    /// class, store them as int8 (one scale per key), fp16 or f32, with the class names, α, β,
    /// the encoder's fingerprint, the provenance (K, epochs, seed) and, for CLIP, the zero-shot
    /// classifier W. Same inputs and seed give a byte-identical pack (apart from its creation
    /// time, which --created fixes).
    ///
    /// With --val, the key recipe and α/β are chosen on that validation split: the cache is built
    /// with each candidate recipe — plain (one unaugmented view), flip (flips only), crop-0.8
    /// (RandomResizedCrop 0.8–1 + flip), official (0.5–1 + flip), each with --augment-epochs
    /// passes — α/β searched for each, and one kept (below); the temperature is fitted there
    /// too. --json lists every candidate's validation top-1. --recipe names one recipe instead.
    ///
    /// With --val the head is chosen too (--head auto): the Tip-Adapter cache (tip), a GDA
    /// layer fitted on the same views (gda: Wang et al., ICLR 2024; one class × dim layer,
    /// cheaper per frame than the cache), or both added; each recipe is scored with each head
    /// and one pair kept: by default (--select one-se) the simplest within one standard error of
    /// the best validation top-1 — a difference the validation split cannot tell from noise
    /// counts as a tie — simpler meaning recipe first (plain, flip, crop-0.8, official), then
    /// head (tip, gda, both); --select best keeps the strictly best. The pack records every
    /// candidate's validation score (`tipedge inspect` shows it).
    ///
    /// Then: `tipedge tune` picks α/β on a validation split (done already with --val),
    /// `tipedge finetune` trains the keys (Tip-Adapter-F), `tipedge eval` scores a test split.
    ///
    /// The pack is written to a temporary file beside --out and renamed over it only when
    /// complete, so a device never sees a half-written pack. Use it with
    /// `tipedge classify --pack FILE`; look inside with `tipedge inspect FILE`.
    ///
    /// Examples (the second, with a validation split, is the recommended one):
    ///   tipedge cache build --model models/fixtures/efficientnet-lite0 \
    ///       --shots examples/textile/shots --shots-per-class 4 --seed 1 --out textile.pack
    ///   tipedge cache build --model models/fixtures/efficientnet-lite0 \
    ///       --shots examples/textile/shots --val examples/textile/val --out textile.pack
    #[command(verbatim_doc_comment)]
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Model folder (image.onnx [+ text.onnx] with JSON sidecars) or an image.onnx file.
    #[arg(long, short)]
    model: PathBuf,
    /// Few-shot set: a folder with one sub-folder of example images per class
    /// (folder name = class name, `_` read as a space).
    #[arg(long)]
    shots: PathBuf,
    /// Where to write the pack.
    #[arg(long, short)]
    out: PathBuf,
    /// Shots per class, drawn at random with --seed (a class with fewer images is an error)
    /// [default: every image of every class].
    #[arg(long, short = 'k', value_parser = clap::value_parser!(u32).range(1..))]
    shots_per_class: Option<u32>,
    /// Augmented passes over the shots whose features are averaged into each key
    /// (Tip-Adapter's augment_epoch); 0 = one plain, unaugmented view per shot.
    #[arg(long, default_value_t = DEFAULT_AUGMENT_EPOCHS)]
    augment_epochs: u32,
    /// Validation split (folder per class, or a split file): choose the key recipe and α/β on
    /// it (see above). Use a split apart from the shots and from the test images.
    #[arg(long)]
    val: Option<PathBuf>,
    /// Key recipe: auto (with --val: the best on validation), plain, flip, crop-0.8, or
    /// official (Tip-Adapter's) [default: auto with --val, else official].
    #[arg(long)]
    recipe: Option<String>,
    /// Head: auto (with --val: the best on validation), tip (the cache), gda (the GDA layer
    /// alone), or both [default: auto with --val, else tip]. gda and both need --val: the GDA
    /// term's α is chosen there.
    #[arg(long)]
    head: Option<String>,
    /// With --val, how the recipe and head are picked: one-se (the simplest within one standard
    /// error of the best validation top-1) or best (the strictly best; exact ties to the
    /// simpler).
    #[arg(long, default_value = "one-se")]
    select: Selection,
    /// Seed of the shot draw and of the augmentations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Creation time stored in the pack, in Unix seconds [default: now].
    #[arg(long)]
    created: Option<i64>,
    /// How the keys are stored: int8 (4× smaller than f32, scored fastest; logit error well
    /// under 1%), fp16, or f32.
    #[arg(long, default_value = "int8")]
    keys: KeyDtype,
    /// Prompt templates for CLIP's text classifier: tip, clip, photo, or a file (see classify).
    #[arg(long, default_value = "tip")]
    templates: String,
    /// W from a learned CoOp context (a context file from models/coop_train.py or
    /// coop_import.py) through the prompt tower text_embed.onnx, instead of --templates.
    #[arg(long, value_name = "CTX", conflicts_with = "templates")]
    coop: Option<PathBuf>,
    /// α stored in the pack (weight of the cache term).
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    alpha: f32,
    /// β stored in the pack (sharpness of the affinities).
    #[arg(long, default_value_t = DEFAULT_BETA)]
    beta: f32,
    /// Print one JSON object describing the pack instead of text; no progress bars.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    grid: GridArgs,
    #[command(flatten)]
    calibration: CalibrationArgs,
    #[command(flatten)]
    store: FeatureStoreArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(cmd: CacheCommand) -> anyhow::Result<i32> {
    match cmd {
        CacheCommand::Build(args) => build(args),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.alpha.is_finite() && args.beta.is_finite(),
        "--alpha and --beta must be finite numbers"
    );
    let recipes: Vec<RecipeName> = match args.recipe.as_deref() {
        None | Some("auto") if args.val.is_some() => RecipeName::ALL.to_vec(),
        None => vec![RecipeName::Official],
        Some("auto") => anyhow::bail!("--recipe auto chooses on a validation split: add --val"),
        Some(name) => vec![name.parse().map_err(|e: String| anyhow::anyhow!(e))?],
    };
    let heads: Vec<Head> = match args.head.as_deref() {
        None | Some("auto") if args.val.is_some() => Head::ALL.to_vec(),
        None | Some("tip") => vec![Head::Tip],
        Some("auto") => anyhow::bail!("--head auto chooses on a validation split: add --val"),
        Some(name) => {
            let head: Head = name.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            anyhow::ensure!(
                args.val.is_some(),
                "--head {head} needs --val: the GDA term's α is chosen on a validation split"
            );
            vec![head]
        }
    };
    let paths = ModelPaths::resolve(&args.model)?;
    let encoder = load_image_encoder(&paths.image, &args.runtime.run_options())?;
    let grid = args.grid.grid()?;
    let store = args.store.dir();
    let seed = args.seed;
    let request = BuildRequest {
        model: &paths,
        shots: &args.shots,
        shots_per_class: args.shots_per_class.map(|k| k as usize),
        options: BuildOptions {
            // Without --val, the one recipe asked for (official unless named); with --val each
            // candidate is built with these passes and seed.
            recipe: if args.val.is_some() {
                RecipeName::Official.recipe(args.augment_epochs, seed)
            } else {
                recipes[0].recipe(args.augment_epochs, seed)
            },
            prompts: Prompts::resolve(&args.templates, args.coop.as_deref())?,
            key_dtype: args.keys,
            alpha: args.alpha,
            beta: args.beta,
            created_unix: args.created.unwrap_or_else(now_unix),
            limits: args.runtime.limits(),
            run: args.runtime.run_options(),
        },
        val: args.val.as_deref().map(|split| ValSearch {
            split,
            store: store.as_deref(),
            grid: &grid,
            recipes,
            heads,
            select: args.select,
            calibrate: !args.calibration.no_calibration,
        }),
        out: &args.out,
    };
    let mut bars = Bars::new(args.json);
    let r = build_pack(&encoder, &request, &mut bars)?;
    for s in &r.skipped {
        eprintln!("skipped shot: {s}");
    }
    if args.json {
        print_json(&r);
    } else {
        for c in &r.recipes {
            let score = match (c.val_top1, &c.note) {
                (Some(t), _) => format!(
                    "val top-1 {t:.1}% at α {} β {}{}",
                    c.alpha,
                    c.beta,
                    c.gda_alpha.map_or(String::new(), |a| format!(" GDA α {a}"))
                ),
                (None, note) => format!("not fitted: {}", note.as_deref().unwrap_or("")),
            };
            eprintln!(
                "recipe {:<9} head {:<4} ({} passes{}): {score}{}",
                c.recipe,
                c.head,
                c.augment_epochs,
                c.crop_scale
                    .map_or(String::new(), |(a, b)| format!(", crop {a:.1}–{b:.1}")),
                if c.chosen { "  ← kept" } else { "" }
            );
        }
        eprintln!(
            "{}: {} classes, {} {} keys of dim {}{}, {} bytes, in {:.1} s",
            r.pack.display(),
            r.classes.len(),
            r.keys,
            r.key_dtype,
            r.dim,
            if r.text_classifier {
                ", with zero-shot W"
            } else {
                ""
            },
            r.bytes,
            r.seconds
        );
    }
    Ok(if r.skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}

impl CacheCommand {
    pub fn json(&self) -> bool {
        match self {
            CacheCommand::Build(a) => a.json,
        }
    }
}
