//! `tipedge flash`, `rollback`, `status`: a device's A/B pack slots.

use std::path::PathBuf;

use clap::Args;
use tipedge::device::{FlashReport, StateDir, DEFAULT_STATE_DIR};
use tipedge::encoder::ModelPaths;

use tipedge::dataset::expand_inputs;
use tipedge::device::enrol::{class_w_row, new_class_prompts, shot_keys, Enrolment};
use tipedge::preprocess::augment::Augmentation;
use tipedge::train::keys::KeyRecipe;
use tipedge::zeroshot::Templates;

use super::common::{load_image_encoder, now_unix, print_json, Bars, RuntimeArgs};
use super::{EXIT_OK, EXIT_SOME_FAILED};

/// The device's state directory.
#[derive(Args, Debug, Clone)]
pub struct StateArgs {
    /// State directory: slots/a.pack, slots/b.pack, the `active` link, model.json.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state: PathBuf,
}

/// Install a pack on the device, as safely as a firmware update.
///
/// The pack is verified completely (format, every checksum, and the encoder fingerprint and
/// dimension of the installed model), copied into the inactive slot (temporary file, fsync,
/// rename, fsync), verified again as read back, and only then made active by one atomic rename of
/// the `active` link. Power loss or kill -9 at any moment leaves the old or the new pack active,
/// never a partial one. A running `tipedge stream --state DIR` picks it up between two frames.
///
/// The first flash into a new state directory names the model with --model; later flashes check
/// packs against it.
///
/// Examples:
///   tipedge flash --state /var/lib/tipedge --model models/fixtures/efficientnet-lite0 line1.pack
///   tipedge flash line1-v2.pack && tipedge status
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct FlashArgs {
    /// The adapter pack to install.
    pack: PathBuf,
    /// The model the device runs (folder or image.onnx): sets up a new state directory, or must
    /// be the one it was set up with.
    #[arg(long, short)]
    model: Option<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Make the other slot active again (after verifying its pack).
#[derive(Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The device's packs: which slot is active, each slot's pack (verified now), when and from what
/// it was flashed.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Add shots of a class — or a new class — to the device's active pack, flashed as a new pack.
///
/// The images are encoded as `cache build` encodes shots (the active pack's augmentation passes
/// and seed unless given), appended to the class's keys in the pack's key dtype, and the new pack
/// goes through the same A/B path as `tipedge flash`: an interrupted enrolment changes nothing,
/// and a running `tipedge stream --state DIR` swaps the new pack in between two frames. A class
/// the pack does not have needs --new (a typo does not create a class); with a CLIP model its
/// zero-shot W row comes from the name and --templates. α, β and the temperature are kept: run
/// `tipedge tune` on a validation split to re-fit them. `tipedge rollback` undoes an enrolment.
///
/// A running stream can also be taught from its frames, without stopping the camera: see
/// `tipedge stream --control`.
///
/// Examples:
///   tipedge enrol --class hole new-holes/*.jpg
///   tipedge enrol --state /var/lib/tipedge --class "oil stain" --new stains/
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct EnrolArgs {
    /// Images (files or folders of images) to add as shots.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// The class they show.
    #[arg(long, short)]
    class: String,
    /// Create the class if the pack does not have it.
    #[arg(long)]
    new: bool,
    /// Augmented passes averaged into each key [default: the active pack's, as recorded in it].
    #[arg(long)]
    augment_epochs: Option<u32>,
    /// Seed of the augmentations [default: the active pack's].
    #[arg(long)]
    seed: Option<u64>,
    /// Prompt templates of a new class's W row (CLIP): tip, clip, photo, or a file.
    #[arg(long, default_value = "tip")]
    templates: String,
    #[command(flatten)]
    state: StateArgs,
    /// Print one JSON object; no progress bars.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn enrol(args: EnrolArgs) -> anyhow::Result<i32> {
    let state = StateDir::open(&args.state.state)?;
    let (_, pack) = state.active_pack()?;
    let exists = pack.class_names().contains(&args.class);
    anyhow::ensure!(
        exists || args.new,
        "{}: class '{}' is not in the active pack (classes: {}); add --new to create it",
        state.root().display(),
        args.class,
        pack.class_names().join(", ")
    );
    let prov = pack.provenance().clone();
    // A new class of a pack with a zero-shot W (CLIP) needs its W row, made as the others were:
    // from the pack's CoOp context if it has one, else from --templates.
    let prompts = if !exists && pack.text_classifier().is_some() {
        Some(new_class_prompts(
            &pack,
            Templates::resolve(&args.templates)?,
        )?)
    } else {
        None
    };
    drop(pack);
    let images = expand_inputs(&args.images)?;
    let run = args.runtime.run_options();
    let encoder = load_image_encoder(&state.model().image, &run)?;
    let mut bars = Bars::new(args.json);
    let recipe = KeyRecipe {
        augment_epochs: args.augment_epochs.unwrap_or(prov.augment_epochs),
        augmentation: Augmentation::default(),
        seed: args.seed.unwrap_or(prov.seed),
    };
    let shots = shot_keys(
        &encoder,
        &args.class,
        &images,
        &recipe,
        args.runtime.limits(),
        &mut bars,
    )?;
    for s in &shots.keys.skipped {
        eprintln!("skipped shot: {}", s.reason);
    }
    let w_row = match &prompts {
        None => None,
        Some(prompts) => class_w_row(
            &encoder,
            &state.model().image,
            &args.class,
            prompts,
            &run,
            &mut bars,
        )?,
    };
    let summary = format!(
        "enrol '{}': {} images ({} augmented passes, seed {})",
        args.class,
        shots.keys.labels.len(),
        recipe.augment_epochs,
        recipe.seed
    );
    let r = state.enrol(
        &Enrolment {
            class: &args.class,
            features: &shots.keys.keys,
            sources: &shots.sources,
            new_class: args.new,
            w_row: w_row.as_deref(),
            summary: &summary,
        },
        now_unix(),
    )?;
    if args.json {
        print_json(&r);
    } else {
        eprintln!(
            "{}: enrolled {} shots as '{}'{} ({} keys in the class, {} in all); slot {} is \
             active (was {}), pack {}",
            r.state.display(),
            r.added,
            r.class,
            if r.new_class { ", a new class" } else { "" },
            r.class_keys,
            r.keys,
            r.active.name(),
            r.previous.map_or("none", |s| s.name()),
            r.pack
        );
    }
    Ok(if shots.keys.skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}

fn report(r: &FlashReport, json: bool, verb: &str) {
    if json {
        print_json(r);
    } else {
        eprintln!(
            "{}: {verb} slot {} is active (was {}): {} classes ({}), {} keys, sha256 {}",
            r.state.display(),
            r.active.name(),
            r.previous.map_or("none", |s| s.name()),
            r.classes.len(),
            r.classes.join(", "),
            r.keys,
            &r.sha256[..16]
        );
    }
}

pub fn flash(args: FlashArgs) -> anyhow::Result<i32> {
    let state = match &args.model {
        Some(m) => StateDir::init(&args.state.state, &ModelPaths::resolve(m)?.image)?,
        None => StateDir::open(&args.state.state)?,
    };
    let r = state.flash(&args.pack, now_unix())?;
    report(&r, args.json, "flashed;");
    Ok(EXIT_OK)
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<i32> {
    let r = StateDir::open(&args.state.state)?.rollback()?;
    report(&r, args.json, "rolled back;");
    Ok(EXIT_OK)
}

pub fn status(args: StatusArgs) -> anyhow::Result<i32> {
    let s = StateDir::open(&args.state.state)?.status()?;
    if args.json {
        print_json(&s);
        return Ok(EXIT_OK);
    }
    println!("state    {}", s.state.display());
    println!(
        "model    {} ({}, dim {}, sha256 {}…)",
        s.model.image.display(),
        s.model.encoder,
        s.model.dim,
        &s.model.sha256[..12]
    );
    println!(
        "active   {}",
        s.active.map_or("none (nothing flashed yet)", |a| a.name())
    );
    for slot in &s.slots {
        let mark = if slot.active { "*" } else { " " };
        match (&slot.pack, &slot.problem) {
            (Some(p), _) => println!(
                "{mark} slot {}  {} classes ({}), {} {} keys of dim {}{}, α {} β {}, T {}, created {}{}",
                slot.slot.name(),
                p.classes.len(),
                p.classes.join(", "),
                p.keys,
                p.key_dtype,
                p.dim,
                if p.stored_shots > 0 {
                    format!(" ({} enrolled)", p.stored_shots)
                } else {
                    String::new()
                },
                p.alpha,
                p.beta,
                p.temperature.map_or("none".into(), |t| format!("{t:.3e}")),
                p.created_unix,
                slot.flashed.as_ref().map_or(String::new(), |f| format!(
                    "; flashed {} from {}",
                    f.flashed_unix,
                    f.source
                )),
            ),
            (None, Some(problem)) => println!("{mark} slot {}  NOT USABLE: {problem}", slot.slot.name()),
            (None, None) => println!("{mark} slot {}  empty", slot.slot.name()),
        }
    }
    Ok(EXIT_OK)
}
