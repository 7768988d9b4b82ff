//! Writing a pack: encode deterministically, verify what was encoded with the reader's own
//! checks, then install it atomically.

use super::format::{
    self, align_up, at, header_crc, AlignedBytes, RawEntry, SectionId, ENDIAN_MARKER, ENTRY_LEN,
    FIRST_VERSION, HEADER_LEN, HEAD_VERSION, MAGIC, PROMPT_VERSION, SHOTS_VERSION,
    TEMPERATURE_VERSION,
};
use super::verify::{self, data_start};
use super::{Expect, Pack, PackContents};
use crate::kernel::KeyData;
use crate::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The bytes of the pack `c` describes. Same inputs, same bytes (the creation time is an input).
/// Refuses contents the reader would refuse.
pub fn encode(c: &PackContents<'_>) -> Result<Vec<u8>> {
    encode_aligned(c)
        .map(|a| a.as_slice().to_vec())
        .map_err(|r| Error::Invalid(format!("refusing to write an adapter pack: {r}")))
}

/// Writes `c` to `path` atomically: a temporary file in the same directory, fsync, rename over
/// `path`, fsync of the directory. On failure an existing file at `path` is untouched and the
/// temporary file is removed.
pub fn write_pack(path: impl AsRef<Path>, c: &PackContents<'_>) -> Result<()> {
    let path = path.as_ref();
    let bytes =
        encode_aligned(c).map_err(|r| Error::pack(path, format!("refusing to write: {r}")))?;
    write_atomically(path, bytes.as_slice())
}

/// Writes a copy of `pack` to `path` with new α and β and the temperature fitted for them
/// (what `tune` installs; `None` writes a version 1 pack: a temperature belongs to the α/β it
/// was fitted with). `path` may be the pack's own file: the open mapping keeps reading the old
/// inode.
pub fn write_with_alpha_beta(
    pack: &Pack,
    path: impl AsRef<Path>,
    alpha: f32,
    beta: f32,
    temperature: Option<f32>,
) -> Result<()> {
    let mut c = pack.contents();
    c.alpha = alpha;
    c.beta = beta;
    c.temperature = temperature;
    write_pack(path, &c)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn put_f32(b: &mut [u8], at: usize, v: f32) {
    put_u32(b, at, v.to_bits());
}

/// Strings, each followed by a NUL (already there: the buffer is zeroed).
fn put_strings(s: &mut [u8], strings: &[String]) {
    let mut o = 0;
    for v in strings {
        s[o..o + v.len()].copy_from_slice(v.as_bytes());
        o += v.len() + 1;
    }
}

fn put_words<const N: usize, T: Copy>(out: &mut [u8], v: &[T], to_le: impl Fn(T) -> [u8; N]) {
    for (o, &x) in out.chunks_exact_mut(N).zip(v) {
        o.copy_from_slice(&to_le(x));
    }
}

/// Checks the lengths the encoding depends on, lays the sections out, writes them, and runs the
/// reader's verification on the result.
pub(crate) fn encode_aligned(c: &PackContents<'_>) -> Result<AlignedBytes, String> {
    let dim = c.dim;
    if dim == 0 {
        return Err("header: feature dim is 0".into());
    }
    if dim > super::MAX_DIM {
        return Err(format!(
            "header: feature dim {dim} exceeds the limit {}",
            super::MAX_DIM
        ));
    }
    let dim32 = dim as u32;
    let n_values = match c.key_data {
        KeyData::F32(v) => v.len(),
        KeyData::F16(v) => v.len(),
        KeyData::I8 { values, .. } => values.len(),
    };
    if !n_values.is_multiple_of(dim) {
        return Err(format!(
            "section 'keys': {n_values} values are not a whole number of keys of dim {dim}"
        ));
    }
    let n_keys = n_values / dim;
    let n_keys32 =
        u32::try_from(n_keys).map_err(|_| format!("section 'keys': {n_keys} keys exceed u32"))?;
    if let KeyData::I8 { scales, .. } = c.key_data {
        if scales.len() != n_keys {
            return Err(format!(
                "section 'key_scales': {} scales for {n_keys} keys",
                scales.len()
            ));
        }
    }
    let n_classes = c.class_names.len();
    let n_classes32 = u32::try_from(n_classes)
        .ok()
        .filter(|&n| n < u32::MAX)
        .ok_or_else(|| format!("section 'class_names': {n_classes} classes exceed u32"))?;
    if c.class_offsets.len() != n_classes + 1 {
        return Err(format!(
            "section 'class_offsets': {} offsets for {n_classes} classes (need {})",
            c.class_offsets.len(),
            n_classes + 1
        ));
    }
    if c.labels.len() != n_keys {
        return Err(format!(
            "section 'labels': {} labels for {n_keys} keys",
            c.labels.len()
        ));
    }
    if let Some(w) = c.text_classifier {
        if Some(w.len()) != n_classes.checked_mul(dim) {
            return Err(format!(
                "section 'text_classifier': {} values, but {n_classes} classes × dim {dim} need {}",
                w.len(),
                n_classes.saturating_mul(dim)
            ));
        }
    }
    if let Some(i) = c
        .class_names
        .iter()
        .position(|n| n.chars().any(char::is_control))
    {
        return Err(format!(
            "section 'class_names': name {i} contains a control character"
        ));
    }
    verify::check_string_fields(&c.encoder.name, &c.provenance.tool_version)?;
    if let Some(t) = c.temperature {
        if !(t.is_finite() && t > 0.0) {
            return Err(format!(
                "header: temperature is {t} (must be a finite positive number)"
            ));
        }
    }

    let shots = c.stored_shots.filter(|s| !s.is_empty());
    if let Some(sh) = shots {
        let m = sh.labels.len();
        if Some(sh.features.len()) != m.checked_mul(dim) || sh.sources.len() != m {
            return Err(format!(
                "section 'shot_features': {} values and {} sources for {m} shots of dim {dim}",
                sh.features.len(),
                sh.sources.len()
            ));
        }
        if u32::try_from(m).is_err() {
            return Err(format!("section 'shot_labels': {m} shots exceed u32"));
        }
        if let Some(i) = sh.sources.iter().position(|n| n.contains('\0')) {
            return Err(format!("section 'shot_sources': source {i} contains a NUL"));
        }
    }

    let gda = match (c.head.uses_gda(), c.gda) {
        (false, Some(_)) => {
            return Err(format!(
                "header: head '{}' has no GDA layer, but one was given",
                c.head
            ))
        }
        (true, None) => return Err(format!("header: head '{}' needs a GDA layer", c.head)),
        (_, g) => g,
    };
    if let Some(g) = gda {
        if Some(g.weights.len()) != n_classes.checked_mul(dim) || g.bias.len() != n_classes {
            return Err(format!(
                "section 'gda_weights': {} weights and {} biases, but {n_classes} classes × dim {dim} need {} and {n_classes}",
                g.weights.len(),
                g.bias.len(),
                n_classes.saturating_mul(dim)
            ));
        }
    }
    let choice = c.choice;

    // Layout: sections in id order, each at the next multiple of ALIGN.
    let names_len: usize = c.class_names.iter().map(|n| n.len() + 1).sum();
    let value_bytes = format::value_bytes(c.key_data.dtype()) as usize;
    let mut present: Vec<(SectionId, usize)> = vec![(SectionId::Keys, n_values * value_bytes)];
    if let KeyData::I8 { .. } = c.key_data {
        present.push((SectionId::KeyScales, n_keys * 4));
    }
    present.push((SectionId::ClassOffsets, (n_classes + 1) * 4));
    present.push((SectionId::Labels, n_keys * 4));
    present.push((SectionId::ClassNames, names_len));
    if let Some(w) = c.text_classifier {
        present.push((SectionId::TextClassifier, w.len() * 4));
    }
    if let Some(sh) = shots {
        present.push((SectionId::ShotFeatures, sh.features.len() * 4));
        present.push((SectionId::ShotLabels, sh.labels.len() * 4));
        let len = sh.sources.iter().map(|n| n.len() + 1).sum();
        present.push((SectionId::ShotSources, len));
    }
    if let Some(g) = gda {
        present.push((SectionId::GdaWeights, g.weights.len() * 4));
        present.push((SectionId::GdaBias, g.bias.len() * 4));
    }
    if let Some(text) = choice {
        present.push((SectionId::Choice, text.len()));
    }
    if let Some(bytes) = c.prompt_context {
        present.push((SectionId::PromptContext, bytes.len()));
    }
    let mut cursor = data_start(present.len());
    let mut placed = Vec::with_capacity(present.len());
    for &(id, len) in &present {
        let offset = align_up(cursor);
        cursor = offset
            .checked_add(len)
            .ok_or_else(|| "the pack would exceed the address space".to_string())?;
        placed.push((id, offset, len));
    }
    let file_len = cursor;

    let mut out = AlignedBytes::zeroed(file_len);
    let b = out.as_mut_slice();
    for &(id, offset, len) in &placed {
        let s = &mut b[offset..offset + len];
        match id {
            SectionId::Keys => match c.key_data {
                KeyData::F32(v) => put_words(s, v, f32::to_le_bytes),
                KeyData::F16(v) => put_words(s, v, |x| x.to_bits().to_le_bytes()),
                KeyData::I8 { values, .. } => put_words(s, values, i8::to_le_bytes),
            },
            SectionId::KeyScales => {
                if let KeyData::I8 { scales, .. } = c.key_data {
                    put_words(s, scales, f32::to_le_bytes)
                }
            }
            SectionId::ClassOffsets => put_words(s, c.class_offsets, u32::to_le_bytes),
            SectionId::Labels => put_words(s, c.labels, u32::to_le_bytes),
            SectionId::ClassNames => put_strings(s, c.class_names),
            SectionId::ShotFeatures => {
                if let Some(sh) = shots {
                    put_words(s, sh.features, f32::to_le_bytes)
                }
            }
            SectionId::ShotLabels => {
                if let Some(sh) = shots {
                    put_words(s, sh.labels, u32::to_le_bytes)
                }
            }
            SectionId::ShotSources => {
                if let Some(sh) = shots {
                    put_strings(s, sh.sources)
                }
            }
            SectionId::TextClassifier => {
                if let Some(w) = c.text_classifier {
                    put_words(s, w, f32::to_le_bytes)
                }
            }
            SectionId::GdaWeights => {
                if let Some(g) = gda {
                    put_words(s, g.weights, f32::to_le_bytes)
                }
            }
            SectionId::GdaBias => {
                if let Some(g) = gda {
                    put_words(s, g.bias, f32::to_le_bytes)
                }
            }
            SectionId::Choice => {
                if let Some(text) = choice {
                    s.copy_from_slice(text.as_bytes())
                }
            }
            SectionId::PromptContext => {
                if let Some(bytes) = c.prompt_context {
                    s.copy_from_slice(bytes)
                }
            }
        }
    }
    for (i, &(id, offset, len)) in placed.iter().enumerate() {
        let e = RawEntry {
            id: id.code(),
            crc: crc32c::crc32c(&b[offset..offset + len]),
            offset: offset as u64,
            length: len as u64,
            reserved: 0,
        };
        let o = HEADER_LEN + i * ENTRY_LEN;
        e.encode(&mut b[o..o + ENTRY_LEN]);
    }
    b[at::MAGIC..at::MAGIC + 8].copy_from_slice(&MAGIC);
    // The oldest version that holds the contents: a pack without a temperature, stored shots,
    // GDA layer, choice record or prompt context is version 1, as earlier builds wrote it.
    let version = if c.prompt_context.is_some() {
        PROMPT_VERSION
    } else if gda.is_some() || choice.is_some() {
        HEAD_VERSION
    } else if shots.is_some() {
        SHOTS_VERSION
    } else if c.temperature.is_some() {
        TEMPERATURE_VERSION
    } else {
        FIRST_VERSION
    };
    put_u32(b, at::VERSION, version);
    put_u32(b, at::ENDIAN, ENDIAN_MARKER);
    put_u32(b, at::HEADER_LEN, HEADER_LEN as u32);
    put_u32(b, at::SECTION_COUNT, placed.len() as u32);
    put_u64(b, at::FILE_LEN, file_len as u64);
    put_u32(b, at::DIM, dim32);
    put_u32(b, at::N_KEYS, n_keys32);
    put_u32(b, at::N_CLASSES, n_classes32);
    put_u32(b, at::KEY_DTYPE, format::dtype_code(c.key_data.dtype()));
    put_f32(b, at::LOGIT_SCALE, c.logit_scale);
    put_f32(b, at::ALPHA, c.alpha);
    put_f32(b, at::BETA, c.beta);
    put_f32(b, at::TEMPERATURE, c.temperature.unwrap_or(0.0));
    b[at::ENCODER_SHA256..at::ENCODER_SHA256 + 32].copy_from_slice(&c.encoder.sha256);
    let name = c.encoder.name.as_bytes();
    b[at::ENCODER_NAME..at::ENCODER_NAME + name.len()].copy_from_slice(name);
    put_u32(b, at::SHOTS, c.provenance.shots);
    put_u32(b, at::AUGMENT_EPOCHS, c.provenance.augment_epochs);
    put_u64(b, at::SEED, c.provenance.seed);
    put_u64(b, at::CREATED_UNIX, c.provenance.created_unix as u64);
    put_u32(b, at::STORED_SHOTS, shots.map_or(0, |s| s.len() as u32));
    if version >= HEAD_VERSION {
        put_u32(b, at::HEAD, format::head_code(c.head));
        put_f32(b, at::GDA_ALPHA, gda.map_or(0.0, |g| g.alpha));
    }
    let tool = c.provenance.tool_version.as_bytes();
    b[at::TOOL_VERSION..at::TOOL_VERSION + tool.len()].copy_from_slice(tool);
    let crc = header_crc(b, placed.len());
    put_u32(b, at::HEADER_CRC, crc);

    // The reader's checks on what we are about to write: labels sorted, offsets a partition,
    // finite values, names unique, ...
    verify::verify(out.as_slice(), &Expect::any())?;
    Ok(out)
}

/// Temp file in the target's directory, fsync, rename, fsync the directory; errors are pack
/// errors (see [`write_atomically_as`]).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_as(path, bytes, |p, r| Error::pack(p, r))
}

/// [`write_atomically`], its errors made by `kind` (`Error::model` for a compiled graph).
pub(crate) fn write_atomically_as(
    path: &Path,
    bytes: &[u8],
    kind: impl Fn(&Path, String) -> Error,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(file_name) = path.file_name() else {
        return Err(kind(path, "not a file name".into()));
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| {
            kind(
                path,
                format!(
                    "cannot create a temporary file in {}: {e} (nothing was changed)",
                    dir.display()
                ),
            )
        })?;
    let installed = file
        .write_all(bytes)
        .map_err(|e| format!("writing {}: {e}", tmp.display()))
        .and_then(|()| {
            file.sync_all()
                .map_err(|e| format!("syncing {}: {e}", tmp.display()))
        })
        .and_then(|()| {
            drop(file);
            fs::rename(&tmp, path)
                .map_err(|e| format!("renaming {} into place: {e}", tmp.display()))
        });
    if let Err(reason) = installed {
        let _ = fs::remove_file(&tmp);
        return Err(kind(
            path,
            format!("{reason} (any previous file there is unchanged)"),
        ));
    }
    // The rename is durable only once the directory entry is on disk.
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
        kind(
            path,
            format!(
                "written, but syncing directory {} failed: {e}",
                dir.display()
            ),
        )
    })
}
