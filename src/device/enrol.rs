//! Enrolment on the device: new shots of a class — or a new class — added to the active pack and
//! flashed through the same A/B path as any pack ([`StateDir::flash_bytes`]), so an interrupted
//! enrolment changes nothing: the new pack is complete and verified in the inactive slot before
//! `active` moves.
//!
//! Shots come from image files ([`shot_keys`], the augmented passes of `cache build`) or from a
//! running stream's frames (the control socket, [`super::control`]): each frame's unit-norm
//! feature is one key. A new class of a CLIP pack gets its row of the zero-shot classifier W from
//! its name and the prompt templates ([`class_w_row`]). α, β and the temperature stay as they
//! were: they were chosen for the pack before, and `tune` re-fits them on a validation split.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Slot, StateDir};
use crate::coop::Context;
use crate::dataset::{ClassFolder, LabelledSet};
use crate::encoder::{ImageEncoder, ModelPaths, RunOptions};
use crate::error::{Error, Result};
use crate::pack::Pack;
use crate::pack::{encode, PackDraft};
use crate::preprocess::DecodeLimits;
use crate::progress::Progress;
use crate::sidecar::sha256_hex;
use crate::train::build::tool_version;
use crate::train::keys::{build_keys, KeyRecipe, ShotKeys};
use crate::zeroshot::{text_classifier, CoopPrompts, Prompts, Templates};

/// What an enrolment did (`"type": "enrol"`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "enrol")]
pub struct EnrolReport {
    pub state: PathBuf,
    pub class: String,
    /// The class did not exist before.
    pub new_class: bool,
    /// Keys added.
    pub added: usize,
    /// The class's keys now.
    pub class_keys: usize,
    /// All keys of the new pack.
    pub keys: usize,
    /// Shots stored with the new pack (all enrolments so far).
    pub stored_shots: usize,
    pub classes: Vec<String>,
    /// The slot the new pack went into, now active.
    pub active: Slot,
    pub previous: Option<Slot>,
    /// The new pack's label in predictions: slot and sha256 prefix.
    pub pack: String,
    pub sha256: String,
}

/// What to enrol: the input of [`StateDir::enrol`].
#[derive(Debug, Clone, Copy)]
pub struct Enrolment<'a> {
    pub class: &'a str,
    /// `n × dim` f32 features (normalised on the way in), one key each.
    pub features: &'a [f32],
    /// Where each shot came from, stored with it in the pack.
    pub sources: &'a [String],
    /// Create the class if the pack does not have it.
    pub new_class: bool,
    /// The new class's row of the zero-shot W, when the pack has one.
    pub w_row: Option<&'a [f32]>,
    /// One line for the slot's record: what was enrolled.
    pub summary: &'a str,
}

impl StateDir {
    /// Adds the shots of `e` to the active pack — to an existing class, or a new one when
    /// `e.new_class` is set — stores them with it (features, class, source), and flashes the
    /// result into the inactive slot. `now` is the time, Unix seconds.
    pub fn enrol(&self, e: &Enrolment<'_>, now: i64) -> Result<EnrolReport> {
        let _lock = self.lock()?;
        let (slot, pack) = self.active_pack()?;
        let mut draft = PackDraft::from_pack(&pack);
        let added = draft.add_shots(e.class, e.features, e.sources, e.new_class, e.w_row)?;
        draft.provenance.created_unix = now;
        draft.provenance.tool_version = tool_version();
        let bytes = encode(&draft.contents())?;
        let flash = self.flash_bytes_locked(&bytes, e.summary, now)?;
        debug_assert_eq!(flash.previous, Some(slot));
        let o = draft.class_offsets();
        Ok(EnrolReport {
            state: self.root.clone(),
            class: e.class.to_string(),
            new_class: added.new_class,
            added: added.keys,
            class_keys: (o[added.class + 1] - o[added.class]) as usize,
            keys: draft.n_keys(),
            stored_shots: draft.stored_shots().map_or(0, |s| s.len()),
            classes: draft.class_names().to_vec(),
            active: flash.active,
            previous: flash.previous,
            pack: format!("{}:{}", flash.active.name(), &flash.sha256[..12]),
            sha256: flash.sha256,
        })
    }
}

/// Shot keys of image files and where each came from.
#[derive(Debug, Clone)]
pub struct ImageShots {
    pub keys: ShotKeys,
    /// One per key: the file and the first 16 hex digits of its sha256.
    pub sources: Vec<String>,
}

/// The keys of `images` as shots of one class, made the way `cache build` makes them
/// ([`build_keys`]: `recipe.augment_epochs` augmented passes averaged, or one plain view).
/// Unreadable images are skipped and listed; none readable is an error.
pub fn shot_keys(
    encoder: &ImageEncoder,
    class: &str,
    images: &[PathBuf],
    recipe: &KeyRecipe,
    limits: DecodeLimits,
    progress: &mut dyn Progress,
) -> Result<ImageShots> {
    if images.is_empty() {
        return Err(Error::Invalid(format!(
            "enrol: no images for class '{class}'"
        )));
    }
    let set = LabelledSet {
        root: PathBuf::new(),
        classes: vec![ClassFolder {
            folder: class.to_string(),
            name: class.to_string(),
            images: images.to_vec(),
        }],
    };
    let passes = recipe.augment_epochs.max(1) as usize;
    progress.start("enrol", images.len() * passes);
    let keys = build_keys(encoder, &set, recipe, limits, |n| progress.set(n));
    progress.finish();
    let keys = keys.map_err(|e| match e {
        // build_keys names the class folder; here the class is all there is.
        Error::Dataset { reason, .. } => Error::Invalid(format!(
            "enrol: none of the {} images of '{class}' could be read: {reason}",
            images.len()
        )),
        e => e,
    })?;
    let sources = images
        .iter()
        .filter(|p| !keys.skipped.iter().any(|s| &s.path == *p))
        .map(|p| {
            let sha = std::fs::read(p).map_or_else(|_| "?".into(), |b| sha256_hex(&b));
            format!("{} sha256 {}", p.display(), &sha[..16.min(sha.len())])
        })
        .collect();
    Ok(ImageShots { keys, sources })
}

/// What a new class of `pack` gets its W row from: the pack's CoOp context when it stores one
/// (so that the new row is made as the others were), else `templates`. A class-specific context
/// has no context for a new class: refused.
pub fn new_class_prompts(pack: &Pack, templates: Templates) -> Result<Prompts> {
    let Some(bytes) = pack.prompt_context() else {
        return Ok(Prompts::Templates(templates));
    };
    let refuse = |why: String| Error::Invalid(format!("{}: {why}", pack.path().display()));
    let context =
        Context::from_bytes(bytes).map_err(|why| refuse(format!("prompt context: {why}")))?;
    if context.class_specific {
        return Err(refuse(
            "the pack's CoOp context is class-specific (CSC), so it has no context for a new \
             class; rebuild the pack with the new class (cache build --coop with a context \
             trained on it)"
                .into(),
        ));
    }
    Ok(Prompts::Coop(CoopPrompts {
        context,
        path: pack.path().to_path_buf(),
        bytes: bytes.to_vec(),
    }))
}

/// The new class's row of CLIP's classifier W, from its name and `prompts` with the
/// text tower beside the image graph; `None` for an image-only backbone.
pub fn class_w_row(
    encoder: &ImageEncoder,
    image_graph: &Path,
    class: &str,
    prompts: &Prompts,
    run: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<Option<Vec<f32>>> {
    let model = ModelPaths::resolve(image_graph)?;
    text_classifier(
        encoder,
        &model,
        &[class.to_string()],
        prompts,
        run,
        progress,
    )
}
