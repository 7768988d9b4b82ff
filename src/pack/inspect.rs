//! What a pack holds, for `tipedge inspect`: reported as far as the header can be read, with
//! the status of every checksum rather than the first failure.

use super::format::{header_crc, AlignedBytes, SectionId};
use super::reader::load;
use super::verify::{decode_header, read_table, verify};
use super::{Expect, Header};
use crate::{Error, Result};
use std::fmt;
use std::path::Path;

/// Whether stored and computed crc32c agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumStatus {
    Ok,
    Mismatch {
        stored: u32,
        computed: u32,
    },
    /// The section's bytes lie (partly) outside the file, so nothing could be computed.
    OutOfBounds,
}

impl fmt::Display for ChecksumStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChecksumStatus::Ok => f.write_str("ok"),
            ChecksumStatus::Mismatch { stored, computed } => {
                write!(
                    f,
                    "MISMATCH (stored 0x{stored:08x}, computed 0x{computed:08x})"
                )
            }
            ChecksumStatus::OutOfBounds => f.write_str("OUT OF BOUNDS"),
        }
    }
}

/// One section table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    /// `None` for an id this version does not know.
    pub id: Option<SectionId>,
    pub code: u32,
    pub offset: u64,
    pub length: u64,
    pub checksum: ChecksumStatus,
}

impl SectionInfo {
    pub fn name(&self) -> String {
        match self.id {
            Some(id) => id.name().to_string(),
            None => format!("unknown({})", self.code),
        }
    }
}

/// One class: its name if the names section could be read, and how many keys it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassInfo {
    pub name: Option<String>,
    pub keys: usize,
}

/// The report of [`inspect`].
#[derive(Clone, Debug)]
pub struct Inspection {
    /// Bytes of the file (the header's own figure is `header.file_len`).
    pub file_len: u64,
    pub header: Header,
    /// Checksum over header and section table. When it fails the header fields are shown as
    /// stored but cannot be trusted.
    pub header_checksum: ChecksumStatus,
    /// In table order.
    pub sections: Vec<SectionInfo>,
    /// Empty when the class offsets section is missing, out of bounds or of the wrong size.
    pub classes: Vec<ClassInfo>,
    /// `None` when the pack passes full verification ([`super::Pack::open`] with no
    /// expectations); otherwise the one-line refusal `open` would give.
    pub problem: Option<String>,
    /// The choice record (version 4: how the recipe and head were chosen on validation, JSON),
    /// when the pack passes verification and has one.
    pub choice: Option<String>,
    /// The CoOp prompt context (version 5: a context file's bytes), when the pack passes
    /// verification and has one.
    pub prompt_context: Option<Vec<u8>>,
}

/// Reports on the pack at `path`. Fails only when the header cannot be read at all (not a pack,
/// unsupported version, truncated before the end of the section table, unknown key dtype).
pub fn inspect(path: impl AsRef<Path>) -> Result<Inspection> {
    let path = path.as_ref();
    let storage = load(path)?;
    inspect_in(path, storage.bytes())
}

/// [`inspect`] on bytes in memory; messages name the file `<memory>`.
pub fn inspect_bytes(bytes: &[u8]) -> Result<Inspection> {
    inspect_in(
        Path::new("<memory>"),
        AlignedBytes::from_slice(bytes).as_slice(),
    )
}

fn inspect_in(path: &Path, b: &[u8]) -> Result<Inspection> {
    let (raw, entries) = read_table(b).map_err(|r| Error::pack(path, r))?;
    let header = decode_header(&raw, false).map_err(|r| Error::pack(path, r))?;
    let computed = header_crc(b, entries.len());
    let header_checksum = if computed == raw.header_crc {
        ChecksumStatus::Ok
    } else {
        ChecksumStatus::Mismatch {
            stored: raw.header_crc,
            computed,
        }
    };
    let bytes_of = |offset: u64, length: u64| -> Option<&[u8]> {
        let end = offset.checked_add(length)?;
        if end > b.len() as u64 {
            return None;
        }
        Some(&b[offset as usize..end as usize])
    };
    let sections: Vec<SectionInfo> = entries
        .iter()
        .map(|e| SectionInfo {
            id: SectionId::from_code(e.id),
            code: e.id,
            offset: e.offset,
            length: e.length,
            checksum: match bytes_of(e.offset, e.length) {
                None => ChecksumStatus::OutOfBounds,
                Some(s) => match crc32c::crc32c(s) {
                    c if c == e.crc => ChecksumStatus::Ok,
                    computed => ChecksumStatus::Mismatch {
                        stored: e.crc,
                        computed,
                    },
                },
            },
        })
        .collect();
    let find = |id: SectionId| {
        sections
            .iter()
            .find(|s| s.id == Some(id))
            .and_then(|s| bytes_of(s.offset, s.length))
    };
    let names: Vec<String> = find(SectionId::ClassNames)
        .map(|s| {
            let body = s.strip_suffix(&[0]).unwrap_or(s);
            body.split(|&c| c == 0)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let classes = find(SectionId::ClassOffsets)
        .filter(|s| s.len() as u64 == (header.n_classes as u64 + 1) * 4)
        .map(|s| {
            let offsets: Vec<u32> = s
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect();
            offsets
                .windows(2)
                .enumerate()
                .map(|(c, w)| ClassInfo {
                    name: names.get(c).cloned(),
                    keys: w[1].saturating_sub(w[0]) as usize,
                })
                .collect()
        })
        .unwrap_or_default();
    let (problem, choice, prompt_context) = match verify(b, &Expect::any()) {
        Ok(layout) => {
            let prompt = layout.sections[SectionId::PromptContext.index()]
                .clone()
                .map(|r| b[r].to_vec());
            (None, layout.choice, prompt)
        }
        Err(r) => (Some(Error::pack(path, r).to_string()), None, None),
    };
    Ok(Inspection {
        file_len: b.len() as u64,
        header,
        header_checksum,
        sections,
        classes,
        problem,
        choice,
        prompt_context,
    })
}

/// The human form of `tipedge inspect`.
impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        let p = &h.provenance;
        writeln!(f, "format version   {}", h.version)?;
        writeln!(
            f,
            "file size        {} bytes (header says {})",
            self.file_len, h.file_len
        )?;
        writeln!(f, "header checksum  {}", self.header_checksum)?;
        writeln!(
            f,
            "encoder          {} sha256 {}",
            h.encoder.name,
            h.encoder.sha256_hex()
        )?;
        writeln!(
            f,
            "keys             {} × dim {} ({}), {} classes",
            h.n_keys, h.dim, h.key_dtype, h.n_classes
        )?;
        writeln!(
            f,
            "logit scale      {}   alpha {}   beta {}",
            h.logit_scale, h.alpha, h.beta
        )?;
        if h.head.uses_gda() {
            writeln!(f, "head             {} (GDA alpha {})", h.head, h.gda_alpha)?;
        } else {
            writeln!(f, "head             {}", h.head)?;
        }
        match h.temperature {
            Some(t) => writeln!(
                f,
                "calibration      temperature {t}: probabilities are softmax(logits / {t})"
            )?,
            None => writeln!(
                f,
                "calibration      none (no temperature fitted): probabilities are softmax(logits)"
            )?,
        }
        writeln!(
            f,
            "provenance       {} shots, {} augmentation epochs, seed {}, tool '{}', created {} (unix)",
            p.shots, p.augment_epochs, p.seed, p.tool_version, p.created_unix
        )?;
        if h.stored_shots > 0 {
            writeln!(
                f,
                "stored shots     {} (enrolled on a device: features, classes, sources)",
                h.stored_shots
            )?;
        }
        writeln!(f, "sections:")?;
        for s in &self.sections {
            writeln!(
                f,
                "  {:<16} offset {:>10}  {:>10} bytes  crc32c {}",
                s.name(),
                s.offset,
                s.length,
                s.checksum
            )?;
        }
        writeln!(f, "classes:")?;
        for (c, class) in self.classes.iter().enumerate() {
            writeln!(
                f,
                "  {c:>4} {:<24} {} keys",
                class.name.as_deref().unwrap_or("?"),
                class.keys
            )?;
        }
        match &self.problem {
            None => writeln!(f, "verdict          ok"),
            Some(p) => writeln!(f, "verdict          REFUSED: {p}"),
        }
    }
}
