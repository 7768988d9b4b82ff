//! `tipedge flash`, `rollback`, `status`: a device's A/B pack slots.

use std::path::PathBuf;

use clap::Args;
use tipedge::device::{FlashReport, StateDir, DEFAULT_STATE_DIR};
use tipedge::encoder::ModelPaths;

use super::common::{now_unix, print_json};
use super::EXIT_OK;

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
                "{mark} slot {}  {} classes ({}), {} {} keys of dim {}, α {} β {}, T {}, created {}{}",
                slot.slot.name(),
                p.classes.len(),
                p.classes.join(", "),
                p.keys,
                p.key_dtype,
                p.dim,
                p.alpha,
                p.beta,
                p.temperature.map_or("none".into(), |t| format!("{t:.3e}")),
                p.created_unix,
                slot.flashed.as_ref().map_or(String::new(), |f| format!(
                    "; flashed {} from {}",
                    f.flashed_unix,
                    f.source.display()
                )),
            ),
            (None, Some(problem)) => println!("{mark} slot {}  NOT USABLE: {problem}", slot.slot.name()),
            (None, None) => println!("{mark} slot {}  empty", slot.slot.name()),
        }
    }
    Ok(EXIT_OK)
}
