//! The adapter pack: one file holding a Tip-Adapter cache (class-sorted keys, their labels, the
//! class names, optionally the text classifier W) with α, β, the logit scale, the fingerprint of
//! the image encoder that made the keys, and how they were made. The byte layout is specified in
//! `src/pack/FORMAT.md`.
//!
//! - [`write_pack`] writes one atomically (temp file, fsync, rename, fsync of the directory) and
//!   refuses contents the reader would refuse.
//! - [`Pack::open`] memory-maps one and verifies all of it before handing anything out: every
//!   checksum, every bound, every count, the values themselves, and the caller's [`Expect`]ations
//!   (feature dim, encoder fingerprint). Keys, scales, labels, offsets and W are then borrowed
//!   slices of the mapping, never copied.
//! - [`inspect`] reports what a pack holds and which checksums fail, without stopping at the
//!   first.
//!
//! Every refusal is one line: `"<file>: <section>: <reason>"`. This module knows nothing about
//! tract (see DESIGN.md); it compiles with `--no-default-features`.

mod draft;
mod format;
mod inspect;
mod reader;
mod verify;
mod writer;

pub use draft::{AddedShots, OwnedGda, PackDraft};
pub use format::{
    SectionId, ALIGN, ENCODER_NAME_LEN, FIRST_VERSION, HEADER_LEN, HEAD_VERSION, MAGIC, MAX_DIM,
    SHOTS_VERSION, TEMPERATURE_VERSION, TOOL_VERSION_LEN, VERSION,
};
pub use inspect::{inspect, inspect_bytes, ChecksumStatus, ClassInfo, Inspection, SectionInfo};
pub use reader::Pack;
pub use writer::{encode, write_pack, write_with_alpha_beta};
#[cfg(feature = "runtime")]
pub(crate) use writer::{write_atomically, write_atomically_as};

use crate::adapter::{AdapterParams, GdaTerm, Head};
use crate::kernel::{self, KeyData, KeyDtype};
use crate::{Error, Result};
use half::f16;
use std::fmt;

/// Which image encoder produced the keys: the sha256 of its graph (from the model sidecar) and a
/// short name for messages. Only the sha256 is compared.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EncoderId {
    /// At most [`ENCODER_NAME_LEN`] bytes of UTF-8, no control characters.
    pub name: String,
    pub sha256: [u8; 32],
}

impl EncoderId {
    /// The first 12 hex digits of the fingerprint, enough to tell encoders apart in a message.
    pub fn short_sha256(&self) -> String {
        let mut s = hex(&self.sha256[..6]);
        s.push('…');
        s
    }
    /// All 64 hex digits.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

impl fmt::Display for EncoderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' (sha256 {})", self.name, self.short_sha256())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the cache was built, kept for the record (`tipedge inspect`); never checked against
/// anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    /// Shots (labelled images) per class.
    pub shots: u32,
    /// Augmentation epochs averaged into each key.
    pub augment_epochs: u32,
    /// Seed of the augmentation.
    pub seed: u64,
    /// Version of the tool that wrote the pack; at most [`TOOL_VERSION_LEN`] bytes of UTF-8.
    pub tool_version: String,
    /// Creation time, Unix seconds. An input, so that output is reproducible.
    pub created_unix: i64,
}

/// What the caller's model requires of a pack; `None` means "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// The image encoder's embedding dimension.
    pub dim: Option<usize>,
    /// The image encoder; a pack made with another graph (other sha256) is refused.
    pub encoder: Option<EncoderId>,
}

impl Expect {
    /// No expectations: any well-formed pack opens.
    pub fn any() -> Expect {
        Expect::default()
    }
    /// A pack for this model: this feature dim and this encoder graph.
    pub fn model(dim: usize, encoder: EncoderId) -> Expect {
        Expect {
            dim: Some(dim),
            encoder: Some(encoder),
        }
    }
}

/// The header of a pack, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub version: u32,
    /// Total bytes of the file as the header records it.
    pub file_len: u64,
    /// Feature dimension C.
    pub dim: usize,
    /// Number of keys (shots × classes for a plain cache).
    pub n_keys: usize,
    pub n_classes: usize,
    pub key_dtype: KeyDtype,
    pub logit_scale: f32,
    /// Tip-Adapter's residual ratio α.
    pub alpha: f32,
    /// Tip-Adapter's sharpness β.
    pub beta: f32,
    /// The temperature T of calibrated probabilities, `softmax(logits / T)`, fitted on a
    /// validation split (version 2); `None` in a version 1 pack: probabilities are
    /// `softmax(logits)`.
    pub temperature: Option<f32>,
    /// Shots stored with the pack (version 3): their features, classes and sources.
    pub stored_shots: usize,
    /// The terms the pack scores with (version 4; [`Head::Tip`] before).
    pub head: Head,
    /// α of the GDA term (version 4; 0 without a GDA layer).
    pub gda_alpha: f32,
    pub encoder: EncoderId,
    pub provenance: Provenance,
}

impl Header {
    /// α, β and the logit scale the pack was written with: the one place they are read.
    pub fn params(&self) -> AdapterParams {
        AdapterParams {
            alpha: self.alpha,
            beta: self.beta,
            logit_scale: self.logit_scale,
        }
    }
}

/// Everything a pack holds, borrowed from the caller: the input of [`write_pack`].
#[derive(Clone, Copy, Debug)]
pub struct PackContents<'a> {
    /// Feature dimension C.
    pub dim: usize,
    /// Keys, row-major `n_keys × dim`, sorted by class.
    pub key_data: KeyData<'a>,
    /// `n_classes + 1` entries: class `c` owns keys `class_offsets[c]..class_offsets[c+1]`.
    pub class_offsets: &'a [u32],
    /// One label per key, the class index; must agree with `class_offsets`.
    pub labels: &'a [u32],
    /// One per class: non-empty, unique, UTF-8 without control characters.
    pub class_names: &'a [String],
    /// The zero-shot classifier W, row-major `n_classes × dim`; `None` for image-only backbones.
    pub text_classifier: Option<&'a [f32]>,
    pub logit_scale: f32,
    pub alpha: f32,
    pub beta: f32,
    /// The temperature of calibrated probabilities; `Some` makes the pack version 2 (or 3).
    pub temperature: Option<f32>,
    /// Shots stored with the pack; `Some` (non-empty) makes the pack version 3.
    pub stored_shots: Option<StoredShots<'a>>,
    /// The terms the pack scores with; anything but [`Head::Tip`] makes the pack version 4.
    pub head: Head,
    /// The GDA layer (`n_classes × dim` weights, one bias per class, its α): given exactly when
    /// `head` uses it.
    pub gda: Option<GdaTerm<'a>>,
    /// How the recipe and the head were chosen on validation (JSON, `cache build --val`);
    /// `Some` makes the pack version 4. Kept for the record, never checked against anything.
    pub choice: Option<&'a str>,
    /// The CoOp prompt context W was made from (a `tipedge-coop/1` context file, verbatim), so
    /// that a class can be added on the device from its name; `Some` makes the pack version 5
    /// and needs W.
    pub prompt_context: Option<&'a [u8]>,
    pub encoder: &'a EncoderId,
    pub provenance: &'a Provenance,
}

/// Shots kept in a pack beside the keys they made (version 3): what a device enrolled, so that a
/// later `finetune` can train on them although their images never left the device. Each shot
/// made one key of its class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoredShots<'a> {
    /// Unit-norm f32 features, row-major `n × dim`.
    pub features: &'a [f32],
    /// The class of each.
    pub labels: &'a [u32],
    /// Where each came from (a file and its sha256, a stream frame and its time): UTF-8 without
    /// control characters.
    pub sources: &'a [String],
}

impl StoredShots<'_> {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Keys converted from f32 into the dtype they are stored in, ready for [`PackContents`].
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedKeys {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I8 { values: Vec<i8>, scales: Vec<f32> },
}

impl OwnedKeys {
    /// Converts row-major `n × dim` f32 keys: fp16 by rounding to nearest, int8 with one absmax
    /// scale per key ([`kernel::quantize_key_i8`]).
    pub fn from_f32(dtype: KeyDtype, dim: usize, keys: &[f32]) -> Result<OwnedKeys> {
        if dim == 0 || !keys.len().is_multiple_of(dim) {
            return Err(Error::Invalid(format!(
                "{} key values are not a whole number of keys of dimension {dim}",
                keys.len()
            )));
        }
        Ok(match dtype {
            KeyDtype::F32 => OwnedKeys::F32(keys.to_vec()),
            KeyDtype::F16 => OwnedKeys::F16(keys.iter().map(|&x| f16::from_f32(x)).collect()),
            KeyDtype::I8 => {
                let mut values = vec![0i8; keys.len()];
                let scales = keys
                    .chunks_exact(dim)
                    .zip(values.chunks_exact_mut(dim))
                    .map(|(k, v)| kernel::quantize_key_i8(k, v))
                    .collect();
                OwnedKeys::I8 { values, scales }
            }
        })
    }

    /// Inserts `other`'s keys (same dtype) before key `at`; `dim` values per key.
    pub(crate) fn insert(&mut self, at: usize, dim: usize, other: OwnedKeys) {
        match (self, other) {
            (OwnedKeys::F32(v), OwnedKeys::F32(o)) => drop(v.splice(at * dim..at * dim, o)),
            (OwnedKeys::F16(v), OwnedKeys::F16(o)) => drop(v.splice(at * dim..at * dim, o)),
            (
                OwnedKeys::I8 { values, scales },
                OwnedKeys::I8 {
                    values: ov,
                    scales: os,
                },
            ) => {
                values.splice(at * dim..at * dim, ov);
                scales.splice(at..at, os);
            }
            _ => unreachable!("keys of one dtype are inserted into keys of that dtype"),
        }
    }

    pub fn dtype(&self) -> KeyDtype {
        self.as_key_data().dtype()
    }

    pub fn as_key_data(&self) -> KeyData<'_> {
        match self {
            OwnedKeys::F32(v) => KeyData::F32(v),
            OwnedKeys::F16(v) => KeyData::F16(v),
            OwnedKeys::I8 { values, scales } => KeyData::I8 { values, scales },
        }
    }
}
