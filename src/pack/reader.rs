//! Opening a pack: map the file, verify all of it, then lend slices of the mapping.

use super::format::{AlignedBytes, SectionId, HEADER_LEN};
use super::verify::{self, cast, Layout};
use super::{EncoderId, Expect, Header, PackContents, Provenance, StoredShots};
use crate::adapter::{AdapterParams, GdaTerm, Head, TipAdapter};
use crate::kernel::{KeyData, KeyDtype, Keys};
use crate::{Error, Result};
use memmap2::Mmap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The bytes of a pack: the file's mapping, or an aligned copy for [`Pack::from_bytes`] and for
/// files too short to be a pack.
pub(crate) enum Storage {
    Mapped(Mmap),
    Owned(AlignedBytes),
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(a) => a.as_slice(),
        }
    }
}

fn refuse_big_endian(path: &Path) -> Result<()> {
    if cfg!(target_endian = "big") {
        return Err(Error::pack(
            path,
            "this machine is big-endian; adapter packs are little-endian and this build does not byte-swap them",
        ));
    }
    Ok(())
}

/// Maps `path` read-only (or reads it, if it is shorter than a header).
pub(crate) fn load(path: &Path) -> Result<Storage> {
    refuse_big_endian(path)?;
    let mut file = File::open(path).map_err(|e| Error::pack(path, format!("cannot open: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| Error::pack(path, format!("cannot stat: {e}")))?
        .len();
    if len < HEADER_LEN as u64 {
        // Not worth a mapping (and an empty file cannot be mapped); verification refuses it.
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|e| Error::pack(path, format!("cannot read: {e}")))?;
        return Ok(Storage::Owned(AlignedBytes::from_slice(&buf)));
    }
    if usize::try_from(len).is_err() {
        return Err(Error::pack(
            path,
            format!("{len} bytes do not fit this machine's address space"),
        ));
    }
    // SAFETY: the mapping is read-only and private to this process's view of the file. Mapped
    // memory changing under us would be undefined behaviour, so packs are only ever replaced by
    // rename (`write_pack`), which leaves the mapped inode untouched; a pack must not be edited
    // in place while a process has it open.
    let map =
        unsafe { Mmap::map(&file) }.map_err(|e| Error::pack(path, format!("cannot map: {e}")))?;
    Ok(Storage::Mapped(map))
}

/// An open, fully verified adapter pack. Keys, scales, class offsets, labels and W are slices of
/// the file's mapping.
pub struct Pack {
    path: PathBuf,
    storage: Storage,
    layout: Layout,
}

impl std::fmt::Debug for Pack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pack")
            .field("path", &self.path)
            .field("header", &self.layout.header)
            .finish()
    }
}

impl Pack {
    /// Maps and verifies the pack at `path` (everything FORMAT.md lists under "Verification"),
    /// and refuses one that does not meet `expect`. The error is one line naming the file, the
    /// section and the reason.
    pub fn open(path: impl AsRef<Path>, expect: &Expect) -> Result<Pack> {
        let path = path.as_ref();
        Pack::verified(path.to_path_buf(), load(path)?, expect)
    }

    /// The same verification on bytes in memory (copied once into an aligned buffer); messages
    /// name the file `<memory>`. For tests and the fuzzer.
    pub fn from_bytes(bytes: &[u8], expect: &Expect) -> Result<Pack> {
        let path = PathBuf::from("<memory>");
        refuse_big_endian(&path)?;
        Pack::verified(
            path,
            Storage::Owned(AlignedBytes::from_slice(bytes)),
            expect,
        )
    }

    fn verified(path: PathBuf, storage: Storage, expect: &Expect) -> Result<Pack> {
        let layout = verify::verify(storage.bytes(), expect).map_err(|r| Error::pack(&path, r))?;
        Ok(Pack {
            path,
            storage,
            layout,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Whether the bytes are the file's mapping (not a copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }
    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
    pub fn header(&self) -> &Header {
        &self.layout.header
    }
    pub fn dim(&self) -> usize {
        self.layout.header.dim
    }
    pub fn n_keys(&self) -> usize {
        self.layout.header.n_keys
    }
    pub fn n_classes(&self) -> usize {
        self.layout.header.n_classes
    }
    pub fn key_dtype(&self) -> KeyDtype {
        self.layout.header.key_dtype
    }
    /// α, β and the logit scale stored in the pack.
    pub fn params(&self) -> AdapterParams {
        self.layout.header.params()
    }
    /// The temperature of calibrated probabilities, if the pack has one (version 2 or 3).
    pub fn temperature(&self) -> Option<f32> {
        self.layout.header.temperature
    }
    pub fn encoder(&self) -> &EncoderId {
        &self.layout.header.encoder
    }
    pub fn provenance(&self) -> &Provenance {
        &self.layout.header.provenance
    }

    fn section(&self, id: SectionId) -> &[u8] {
        match &self.layout.sections[id.index()] {
            Some(r) => &self.storage.bytes()[r.clone()],
            None => &[],
        }
    }

    /// The keys for the affinity kernel, borrowed from the mapping.
    pub fn keys(&self) -> Keys<'_> {
        Keys::new(self.dim(), self.key_data(), self.class_offsets())
            .expect("verified at open: keys, scales and class offsets are consistent")
    }
    pub fn key_data(&self) -> KeyData<'_> {
        verify::key_data(self.storage.bytes(), self.header(), &self.layout.sections)
            .expect("verified at open: the key sections cast in place")
    }
    /// `n_classes + 1` offsets: class `c` owns keys `class_offsets[c]..class_offsets[c+1]`.
    pub fn class_offsets(&self) -> &[u32] {
        cast(
            self.section(SectionId::ClassOffsets),
            SectionId::ClassOffsets,
        )
        .expect("verified at open: class offsets cast in place")
    }
    /// The class of each key (the values L of the cache, as indices).
    pub fn labels(&self) -> &[u32] {
        cast(self.section(SectionId::Labels), SectionId::Labels)
            .expect("verified at open: labels cast in place")
    }
    pub fn class_names(&self) -> &[String] {
        &self.layout.class_names
    }
    /// W, row-major `n_classes × dim`, if the pack has one.
    pub fn text_classifier(&self) -> Option<&[f32]> {
        self.layout.sections[SectionId::TextClassifier.index()]
            .as_ref()
            .map(|_| {
                cast(
                    self.section(SectionId::TextClassifier),
                    SectionId::TextClassifier,
                )
                .expect("verified at open: W casts in place")
            })
    }

    /// The shots stored with the pack (version 3), if any.
    pub fn stored_shots(&self) -> Option<StoredShots<'_>> {
        (self.layout.header.stored_shots > 0).then(|| StoredShots {
            features: cast(
                self.section(SectionId::ShotFeatures),
                SectionId::ShotFeatures,
            )
            .expect("verified at open: shot features cast in place"),
            labels: cast(self.section(SectionId::ShotLabels), SectionId::ShotLabels)
                .expect("verified at open: shot labels cast in place"),
            sources: &self.layout.shot_sources,
        })
    }

    /// The terms the pack scores with (version 4; `tip` before).
    pub fn head(&self) -> Head {
        self.layout.header.head
    }

    /// The GDA layer with its α, if the pack has one (version 4).
    pub fn gda(&self) -> Option<GdaTerm<'_>> {
        self.layout.header.head.uses_gda().then(|| GdaTerm {
            weights: cast(self.section(SectionId::GdaWeights), SectionId::GdaWeights)
                .expect("verified at open: GDA weights cast in place"),
            bias: cast(self.section(SectionId::GdaBias), SectionId::GdaBias)
                .expect("verified at open: GDA biases cast in place"),
            alpha: self.layout.header.gda_alpha,
        })
    }

    /// How the recipe and head were chosen on validation (JSON), if recorded (version 4).
    pub fn choice(&self) -> Option<&str> {
        self.layout.choice.as_deref()
    }

    /// The CoOp prompt context W was made from (a context file's bytes), if stored (version 5).
    pub fn prompt_context(&self) -> Option<&[u8]> {
        self.layout.sections[SectionId::PromptContext.index()]
            .is_some()
            .then(|| self.section(SectionId::PromptContext))
    }

    /// The model this pack scores with: keys, W, α/β and the head.
    pub fn model(&self) -> TipAdapter<'_> {
        TipAdapter::new(self.keys(), self.text_classifier(), self.params())
            .and_then(|m| m.with_head(self.head(), self.gda()))
            .expect("verified at open: W and the GDA layer have one row per class")
    }

    /// Everything in the pack, ready to write again (e.g. with new α and β).
    pub fn contents(&self) -> PackContents<'_> {
        let h = self.header();
        PackContents {
            dim: h.dim,
            key_data: self.key_data(),
            class_offsets: self.class_offsets(),
            labels: self.labels(),
            class_names: self.class_names(),
            text_classifier: self.text_classifier(),
            logit_scale: h.logit_scale,
            alpha: h.alpha,
            beta: h.beta,
            temperature: h.temperature,
            stored_shots: self.stored_shots(),
            head: h.head,
            gda: self.gda(),
            choice: self.choice(),
            prompt_context: self.prompt_context(),
            encoder: &h.encoder,
            provenance: &h.provenance,
        }
    }
}
