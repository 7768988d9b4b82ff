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
use crate::dataset::{ClassFolder, LabelledSet};
use crate::encoder::{ImageEncoder, ModelPaths, RunOptions};
use crate::error::{Error, Result};
use crate::pack::{encode, PackDraft};
use crate::preprocess::DecodeLimits;
use crate::progress::Progress;
use crate::train::build::tool_version;
use crate::train::keys::{build_keys, KeyRecipe, ShotKeys};
use crate::zeroshot::{text_classifier, Templates};

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
    pub classes: Vec<String>,
    /// The slot the new pack went into, now active.
    pub active: Slot,
    pub previous: Option<Slot>,
    /// The new pack's label in predictions: slot and sha256 prefix.
    pub pack: String,
    pub sha256: String,
}

impl StateDir {
    /// Adds `keys` (`n × dim` f32 features, normalised here) to the class `class` of the active
    /// pack — or creates it when `new_class` is set (with `w_row` when the pack has a zero-shot
    /// W) — and flashes the result into the inactive slot. `source` says where the shots came
    /// from (kept in the slot's record); `now` is the time, Unix seconds.
    pub fn enrol(
        &self,
        class: &str,
        keys: &[f32],
        new_class: bool,
        w_row: Option<&[f32]>,
        source: &str,
        now: i64,
    ) -> Result<EnrolReport> {
        let _lock = self.lock()?;
        let (slot, pack) = self.active_pack()?;
        let mut draft = PackDraft::from_pack(&pack);
        let added = draft.add_shots(class, keys, new_class, w_row)?;
        draft.provenance.created_unix = now;
        draft.provenance.tool_version = tool_version();
        let bytes = encode(&draft.contents())?;
        let flash = self.flash_bytes_locked(&bytes, source, now)?;
        debug_assert_eq!(flash.previous, Some(slot));
        let o = draft.class_offsets();
        Ok(EnrolReport {
            state: self.root.clone(),
            class: class.to_string(),
            new_class: added.new_class,
            added: added.keys,
            class_keys: (o[added.class + 1] - o[added.class]) as usize,
            keys: draft.n_keys(),
            classes: draft.class_names().to_vec(),
            active: flash.active,
            previous: flash.previous,
            pack: format!("{}:{}", flash.active.name(), &flash.sha256[..12]),
            sha256: flash.sha256,
        })
    }
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
) -> Result<ShotKeys> {
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
    keys.map_err(|e| match e {
        // build_keys names the class folder; here the class is all there is.
        Error::Dataset { reason, .. } => Error::Invalid(format!(
            "enrol: none of the {} images of '{class}' could be read: {reason}",
            images.len()
        )),
        e => e,
    })
}

/// The new class's row of CLIP's zero-shot classifier W, from its name and `templates` with the
/// text tower beside the image graph; `None` for an image-only backbone.
pub fn class_w_row(
    encoder: &ImageEncoder,
    image_graph: &Path,
    class: &str,
    templates: &Templates,
    run: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<Option<Vec<f32>>> {
    let model = ModelPaths::resolve(image_graph)?;
    text_classifier(
        encoder,
        &model,
        &[class.to_string()],
        templates,
        run,
        progress,
    )
}
