//! Full verification of a pack's bytes, in the order FORMAT.md lists: header, section table,
//! checksums, then the values. Each refusal is a `"<section>: <reason>"` string; the caller puts
//! the file name in front. Nothing here indexes out of bounds or panics for any input: every
//! offset and length is checked (in u64, overflow-checked) against the buffer before it is used.
//!
//! The writer runs the same function on what it is about to write, so the two cannot disagree.

use super::format::{
    self, align_up, header_crc, RawEntry, RawHeader, SectionId, ENCODER_NAME_LEN, ENDIAN_MARKER,
    ENTRY_LEN, FIRST_VERSION, HEADER_LEN, HEAD_VERSION, MAGIC, MAX_DIM, MAX_SECTIONS,
    PROMPT_VERSION, SHOTS_VERSION, TEMPERATURE_VERSION, TOOL_VERSION_LEN, VERSION,
};
use super::{EncoderId, Expect, Header, Provenance};
use crate::adapter::Head;
use crate::kernel::{KeyData, KeyDtype};
use half::f16;
use std::collections::HashMap;
use std::ops::Range;

/// Where the verified sections lie in the buffer, by [`SectionId::index`].
pub(crate) type SectionRanges = [Option<Range<usize>>; SectionId::ALL.len()];

/// What verification learnt: the decoded header, the sections, and the class names and stored
/// shots' sources (the only parts copied out of the file: they are small and wanted as
/// `String`s).
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub header: Header,
    pub sections: SectionRanges,
    pub class_names: Vec<String>,
    pub shot_sources: Vec<String>,
    /// The choice record (version 4), if present.
    pub choice: Option<String>,
}

/// Checks everything; on success every section in `sections` may be cast in place.
///
/// `b` must start at an address aligned to 4 bytes (mmap and [`format::AlignedBytes`] are).
pub(crate) fn verify(b: &[u8], expect: &Expect) -> Result<Layout, String> {
    let (raw, entries) = read_table(b)?;
    let computed = header_crc(b, entries.len());
    if computed != raw.header_crc {
        return Err(format!(
            "header: crc32c of header and section table mismatch (stored 0x{:08x}, computed 0x{computed:08x})",
            raw.header_crc
        ));
    }
    let header = decode_header(&raw, true)?;
    let n = b.len() as u64;
    if n < header.file_len {
        return Err(format!(
            "truncated: header says {} bytes, file has {n}",
            header.file_len
        ));
    }
    if n > header.file_len {
        return Err(format!(
            "header: header says {} bytes, file has {n} (data after the end)",
            header.file_len
        ));
    }
    check_expect(&header, expect)?;
    let sections = check_table(b, &header, &entries)?;
    for e in &entries {
        // check_table made every entry a known, in-bounds section.
        let Some(id) = SectionId::from_code(e.id) else {
            continue;
        };
        if let Some(r) = &sections[id.index()] {
            let computed = crc32c::crc32c(&b[r.clone()]);
            if computed != e.crc {
                return Err(format!(
                    "section '{id}': crc32c mismatch (stored 0x{:08x}, computed 0x{computed:08x})",
                    e.crc
                ));
            }
        }
    }
    let (class_names, shot_sources, choice) = check_values(b, &header, &sections)?;
    Ok(Layout {
        header,
        sections,
        class_names,
        shot_sources,
        choice,
    })
}

/// Magic, version, endianness, header length, section count, and the table within the buffer:
/// what must hold before anything else can be read. Also what `inspect` needs.
pub(crate) fn read_table(b: &[u8]) -> Result<(RawHeader, Vec<RawEntry>), String> {
    let m = b.len().min(MAGIC.len());
    if b[..m] != MAGIC[..m] {
        return Err(format!(
            "header: not an adapter pack (starts with \"{}\", expected \"{}\")",
            b[..m].escape_ascii(),
            MAGIC.escape_ascii()
        ));
    }
    if b.len() < HEADER_LEN {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            b.len()
        ));
    }
    let raw = RawHeader::decode(b);
    if !(FIRST_VERSION..=VERSION).contains(&raw.version) {
        return Err(format!(
            "header: format version {} is not supported (this build reads versions {FIRST_VERSION} to {VERSION})",
            raw.version
        ));
    }
    if raw.endian != ENDIAN_MARKER {
        return Err(if raw.endian == ENDIAN_MARKER.swap_bytes() {
            "header: written big-endian; adapter packs are little-endian".to_string()
        } else {
            format!(
                "header: endianness marker is 0x{:08x}, expected 0x{ENDIAN_MARKER:08x}",
                raw.endian
            )
        });
    }
    if raw.header_len as usize != HEADER_LEN {
        return Err(format!(
            "header: header length is {}, version {} has {HEADER_LEN}",
            raw.header_len, raw.version
        ));
    }
    let count = raw.section_count as usize;
    if count == 0 || count > MAX_SECTIONS {
        return Err(format!(
            "header: {count} sections in the section table (1 to {MAX_SECTIONS} allowed)"
        ));
    }
    let table_end = HEADER_LEN + count * ENTRY_LEN;
    if b.len() < table_end {
        return Err(format!(
            "truncated: {} bytes, the header and section table need {table_end}",
            b.len()
        ));
    }
    let entries = (0..count).map(|i| RawEntry::decode(b, i)).collect();
    Ok((raw, entries))
}

/// The header's fields with their meaning. `strict` also refuses what is merely odd (non-finite
/// α, non-zero reserved bytes, an empty class list); `inspect` decodes leniently.
pub(crate) fn decode_header(raw: &RawHeader, strict: bool) -> Result<Header, String> {
    let key_dtype = format::dtype_from_code(raw.key_dtype).ok_or_else(|| {
        format!(
            "header: unknown key dtype code {} (1 = f32, 2 = fp16, 3 = int8)",
            raw.key_dtype
        )
    })?;
    let name = padded_str(&raw.encoder_name, "encoder name", strict)?;
    let tool_version = padded_str(&raw.tool_version, "tool version", strict)?;
    if strict {
        if raw.dim == 0 {
            return Err("header: feature dim is 0".into());
        }
        if raw.dim as usize > MAX_DIM {
            return Err(format!(
                "header: feature dim {} exceeds the limit {MAX_DIM}",
                raw.dim
            ));
        }
        if raw.n_classes == 0 {
            return Err("header: the pack has 0 classes".into());
        }
        for (what, v) in [
            ("logit scale", raw.logit_scale),
            ("alpha", raw.alpha),
            ("beta", raw.beta),
        ] {
            if !v.is_finite() {
                return Err(format!("header: {what} is {v} (must be finite)"));
            }
        }
        if (raw.version < TEMPERATURE_VERSION && raw.temperature_bits != 0)
            || (raw.version < SHOTS_VERSION && raw.stored_shots != 0)
            || (raw.version < HEAD_VERSION && (raw.head != 0 || raw.gda_alpha_bits != 0))
            || !raw.reserved1_zero
        {
            return Err("header: reserved bytes are not zero".into());
        }
        // Version 2 always has a temperature; in version 3 it is optional (0 = none).
        if raw.version == TEMPERATURE_VERSION || raw.temperature_bits != 0 {
            let t = f32::from_bits(raw.temperature_bits);
            if !(t.is_finite() && t > 0.0) {
                return Err(format!(
                    "header: temperature is {t} (must be a finite positive number)"
                ));
            }
        }
        if raw.version == SHOTS_VERSION && raw.stored_shots == 0 {
            return Err("header: version 3 without stored shots (write version 1 or 2)".into());
        }
        if raw.version >= HEAD_VERSION {
            let head = format::head_from_code(raw.head).ok_or_else(|| {
                format!(
                    "header: unknown head code {} (1 = tip, 2 = gda, 3 = both)",
                    raw.head
                )
            })?;
            let a = f32::from_bits(raw.gda_alpha_bits);
            if !a.is_finite() {
                return Err(format!("header: GDA alpha is {a} (must be finite)"));
            }
            if !head.uses_gda() && raw.gda_alpha_bits != 0 {
                return Err(format!(
                    "header: GDA alpha is {a}, but head '{head}' has no GDA layer (must be 0)"
                ));
            }
        }
    }
    let head = if raw.version >= HEAD_VERSION {
        format::head_from_code(raw.head).unwrap_or_default()
    } else {
        Head::Tip
    };
    Ok(Header {
        version: raw.version,
        file_len: raw.file_len,
        dim: raw.dim as usize,
        n_keys: raw.n_keys as usize,
        n_classes: raw.n_classes as usize,
        key_dtype,
        logit_scale: raw.logit_scale,
        alpha: raw.alpha,
        beta: raw.beta,
        temperature: (raw.version >= TEMPERATURE_VERSION && raw.temperature_bits != 0)
            .then(|| f32::from_bits(raw.temperature_bits)),
        stored_shots: if raw.version >= SHOTS_VERSION {
            raw.stored_shots as usize
        } else {
            0
        },
        head,
        gda_alpha: if raw.version >= HEAD_VERSION {
            f32::from_bits(raw.gda_alpha_bits)
        } else {
            0.0
        },
        encoder: EncoderId {
            name,
            sha256: raw.encoder_sha256,
        },
        provenance: Provenance {
            shots: raw.shots,
            augment_epochs: raw.augment_epochs,
            seed: raw.seed,
            tool_version,
            created_unix: raw.created_unix,
        },
    })
}

/// A NUL-padded UTF-8 field.
fn padded_str(field: &[u8], what: &str, strict: bool) -> Result<String, String> {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    if !strict {
        return Ok(String::from_utf8_lossy(&field[..end]).into_owned());
    }
    if field[end..].iter().any(|&c| c != 0) {
        return Err(format!("header: {what} is not NUL-padded"));
    }
    let s = std::str::from_utf8(&field[..end])
        .map_err(|e| format!("header: {what} is not valid UTF-8 ({e})"))?;
    if s.chars().any(char::is_control) {
        return Err(format!("header: {what} contains a control character"));
    }
    Ok(s.to_string())
}

fn check_expect(h: &Header, expect: &Expect) -> Result<(), String> {
    if let Some(dim) = expect.dim {
        if dim != h.dim {
            return Err(format!(
                "built for feature dim {}, this model's features have dim {dim}",
                h.dim
            ));
        }
    }
    if let Some(enc) = &expect.encoder {
        if enc.sha256 != h.encoder.sha256 {
            return Err(format!(
                "built for encoder {}, this model is {enc}",
                h.encoder
            ));
        }
    }
    Ok(())
}

/// Bytes section `id` must have, from the header's counts (`None`: any length).
fn expected_len(id: SectionId, h: &Header) -> Result<Option<u64>, String> {
    let (n_keys, dim, nc) = (h.n_keys as u64, h.dim as u64, h.n_classes as u64);
    let v = match id {
        SectionId::Keys => n_keys
            .checked_mul(dim)
            .and_then(|x| x.checked_mul(format::value_bytes(h.key_dtype))),
        SectionId::KeyScales | SectionId::Labels => Some(n_keys * 4),
        SectionId::ClassOffsets => Some((nc + 1) * 4),
        SectionId::TextClassifier => nc.checked_mul(dim).and_then(|x| x.checked_mul(4)),
        SectionId::ShotFeatures => (h.stored_shots as u64)
            .checked_mul(dim)
            .and_then(|x| x.checked_mul(4)),
        SectionId::ShotLabels => Some(h.stored_shots as u64 * 4),
        SectionId::GdaWeights => nc.checked_mul(dim).and_then(|x| x.checked_mul(4)),
        SectionId::GdaBias => Some(nc * 4),
        SectionId::ClassNames
        | SectionId::ShotSources
        | SectionId::Choice
        | SectionId::PromptContext => return Ok(None),
    };
    v.map(Some).ok_or_else(|| {
        format!(
            "header: {} keys × {} classes × dim {} overflow the size of a file",
            h.n_keys, h.n_classes, h.dim
        )
    })
}

fn what_it_holds(id: SectionId, h: &Header) -> String {
    match id {
        SectionId::Keys => format!("{} {} keys of dim {}", h.n_keys, h.key_dtype, h.dim),
        SectionId::KeyScales => format!("{} f32 scales", h.n_keys),
        SectionId::Labels => format!("{} u32 labels", h.n_keys),
        SectionId::ClassOffsets => format!("{} u32 class offsets", h.n_classes + 1),
        SectionId::TextClassifier => format!("{} × {} f32 weights", h.n_classes, h.dim),
        SectionId::ClassNames => "class names".into(),
        SectionId::ShotFeatures => format!("{} × {} f32 shot features", h.stored_shots, h.dim),
        SectionId::ShotLabels => format!("{} u32 shot labels", h.stored_shots),
        SectionId::ShotSources => "shot sources".into(),
        SectionId::GdaWeights => format!("{} × {} f32 GDA weights", h.n_classes, h.dim),
        SectionId::GdaBias => format!("{} f32 GDA biases", h.n_classes),
        SectionId::Choice => "the choice record".into(),
        SectionId::PromptContext => "the prompt context".into(),
    }
}

/// Section table: known ids, each once, 64-aligned, within the data area, not overlapping,
/// lengths as the header implies, zero padding between; the right set of sections present.
fn check_table(b: &[u8], h: &Header, entries: &[RawEntry]) -> Result<SectionRanges, String> {
    let table_end = (HEADER_LEN + entries.len() * ENTRY_LEN) as u64;
    let file_len = b.len() as u64;
    let mut found: SectionRanges = Default::default();
    for (i, e) in entries.iter().enumerate() {
        let id = SectionId::from_code(e.id)
            .ok_or_else(|| format!("section table: entry {i} has unknown section id {}", e.id))?;
        if found[id.index()].is_some() {
            return Err(format!("section table: section '{id}' appears twice"));
        }
        if e.reserved != 0 {
            return Err(format!(
                "section '{id}': reserved bytes of its table entry are not zero"
            ));
        }
        if !e.offset.is_multiple_of(format::ALIGN as u64) {
            return Err(format!(
                "section '{id}': offset {} is not a multiple of {}",
                e.offset,
                format::ALIGN
            ));
        }
        let end = e.offset.saturating_add(e.length);
        if e.offset < table_end || end > file_len {
            return Err(format!(
                "section '{id}': bytes {}..{end} lie outside the data area {table_end}..{file_len}",
                e.offset
            ));
        }
        if let Some(want) = expected_len(id, h)? {
            if e.length != want {
                return Err(format!(
                    "section '{id}': {} bytes, but {} take {want}",
                    e.length,
                    what_it_holds(id, h)
                ));
            }
        }
        // Both bounds are ≤ b.len(), so they fit in usize.
        found[id.index()] = Some(e.offset as usize..end as usize);
    }
    for id in SectionId::ALL {
        let present = found[id.index()].is_some();
        match id {
            SectionId::TextClassifier => {}
            SectionId::ShotFeatures | SectionId::ShotLabels | SectionId::ShotSources
                if present != (h.stored_shots > 0) =>
            {
                return Err(format!(
                    "section '{id}': {}, but the header says {} stored shots",
                    if present { "present" } else { "missing" },
                    h.stored_shots
                ));
            }
            SectionId::ShotFeatures | SectionId::ShotLabels | SectionId::ShotSources => {}
            SectionId::GdaWeights | SectionId::GdaBias if present != h.head.uses_gda() => {
                return Err(format!(
                    "section '{id}': {}, but the pack's head is '{}'{}",
                    if present { "present" } else { "missing" },
                    h.head,
                    if h.version < HEAD_VERSION {
                        format!(" (version {} has no GDA layer)", h.version)
                    } else {
                        String::new()
                    }
                ));
            }
            SectionId::GdaWeights | SectionId::GdaBias => {}
            SectionId::Choice if present && h.version < HEAD_VERSION => {
                return Err(format!(
                    "section '{id}': present, but version {} has no choice record",
                    h.version
                ));
            }
            SectionId::Choice => {}
            SectionId::PromptContext if present && h.version < PROMPT_VERSION => {
                return Err(format!(
                    "section '{id}': present, but version {} has no prompt context",
                    h.version
                ));
            }
            SectionId::PromptContext
                if present && found[SectionId::TextClassifier.index()].is_none() =>
            {
                return Err(format!(
                    "section '{id}': present, but the pack has no text classifier W"
                ));
            }
            SectionId::PromptContext => {}
            SectionId::KeyScales if h.key_dtype != KeyDtype::I8 && present => {
                return Err(format!(
                    "section '{id}': present, but the keys are {} (only int8 keys have scales)",
                    h.key_dtype
                ));
            }
            SectionId::KeyScales if h.key_dtype != KeyDtype::I8 => {}
            _ if !present => return Err(format!("section '{id}': missing")),
            _ => {}
        }
    }
    if h.version >= PROMPT_VERSION && found[SectionId::PromptContext.index()].is_none() {
        return Err(format!(
            "header: version {} without a prompt context (write an earlier version)",
            h.version
        ));
    }
    if h.version == HEAD_VERSION && !h.head.uses_gda() && found[SectionId::Choice.index()].is_none()
    {
        return Err(
            "header: version 4 without a GDA layer or a choice record (write an earlier version)"
                .into(),
        );
    }
    // Overlap and padding: walk the non-empty sections in file order. Empty sections occupy no
    // bytes and cannot overlap anything.
    let mut order: Vec<(SectionId, Range<usize>)> = SectionId::ALL
        .iter()
        .filter_map(|&id| found[id.index()].clone().map(|r| (id, r)))
        .filter(|(_, r)| !r.is_empty())
        .collect();
    order.sort_by_key(|(_, r)| r.start);
    let mut cursor = table_end as usize;
    let mut prev = "the section table".to_string();
    for (id, r) in &order {
        if r.start < cursor {
            return Err(format!(
                "section '{id}': bytes {}..{} overlap {prev}",
                r.start, r.end
            ));
        }
        if b[cursor..r.start].iter().any(|&c| c != 0) {
            return Err(format!("section '{id}': the padding before it is not zero"));
        }
        cursor = r.end;
        prev = format!("section '{id}'");
    }
    if b[cursor..].iter().any(|&c| c != 0) {
        return Err(format!(
            "section table: the {} bytes after the last section are not zero",
            b.len() - cursor
        ));
    }
    Ok(found)
}

fn section<'b>(b: &'b [u8], s: &SectionRanges, id: SectionId) -> Option<&'b [u8]> {
    s[id.index()].clone().map(|r| &b[r])
}

/// A section as a slice of `T`, in place. Fails only if the buffer is misaligned, which the
/// callers rule out; still an error rather than a panic.
pub(crate) fn cast<T: bytemuck::Pod>(bytes: &[u8], id: SectionId) -> Result<&[T], String> {
    bytemuck::try_cast_slice(bytes)
        .map_err(|e| format!("section '{id}': cannot be read in place ({e:?})"))
}

/// The keys of a verified layout, borrowed from `b`.
pub(crate) fn key_data<'b>(
    b: &'b [u8],
    h: &Header,
    s: &SectionRanges,
) -> Result<KeyData<'b>, String> {
    let keys = section(b, s, SectionId::Keys).unwrap_or(&[]);
    Ok(match h.key_dtype {
        KeyDtype::F32 => KeyData::F32(cast::<f32>(keys, SectionId::Keys)?),
        KeyDtype::F16 => KeyData::F16(cast::<f16>(keys, SectionId::Keys)?),
        KeyDtype::I8 => KeyData::I8 {
            values: cast::<i8>(keys, SectionId::Keys)?,
            scales: cast::<f32>(
                section(b, s, SectionId::KeyScales).unwrap_or(&[]),
                SectionId::KeyScales,
            )?,
        },
    })
}

/// The values: finite keys, W and scales, scales ≥ 0, int8 in −127..=127, class offsets a
/// partition of the keys, labels agreeing with it, exactly `n_classes` good class names; stored
/// shots with finite features, classes the pack has (no more shots of a class than its keys)
/// and one source each.
type Strings = (Vec<String>, Vec<String>, Option<String>);

fn check_values(b: &[u8], h: &Header, s: &SectionRanges) -> Result<Strings, String> {
    let dim = h.dim;
    match key_data(b, h, s)? {
        KeyData::F32(v) => first_bad(v.iter().map(|x| (x.is_finite(), *x)), dim, "keys")?,
        KeyData::F16(v) => first_bad(
            v.iter().map(|x| (x.is_finite(), f32::from(*x))),
            dim,
            "keys",
        )?,
        KeyData::I8 { values, scales } => {
            if let Some(i) = values.iter().position(|&x| x == i8::MIN) {
                return Err(format!(
                    "section 'keys': value {} of key {} is -128 (int8 keys lie in -127..=127)",
                    i % dim,
                    i / dim
                ));
            }
            if let Some(i) = scales.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
                return Err(format!(
                    "section 'key_scales': scale of key {i} is {} (must be finite and not negative)",
                    scales[i]
                ));
            }
        }
    }
    let offsets: &[u32] = cast(
        section(b, s, SectionId::ClassOffsets).unwrap_or(&[]),
        SectionId::ClassOffsets,
    )?;
    check_class_offsets(offsets, h.n_keys)?;
    let labels: &[u32] = cast(
        section(b, s, SectionId::Labels).unwrap_or(&[]),
        SectionId::Labels,
    )?;
    check_labels(labels, offsets, h.n_classes)?;
    let names = parse_class_names(
        section(b, s, SectionId::ClassNames).unwrap_or(&[]),
        h.n_classes,
    )?;
    if let Some(w) = section(b, s, SectionId::TextClassifier) {
        let w: &[f32] = cast(w, SectionId::TextClassifier)?;
        first_bad(
            w.iter().map(|x| (x.is_finite(), *x)),
            dim,
            "text_classifier",
        )?;
    }
    let mut sources = Vec::new();
    if h.stored_shots > 0 {
        let f: &[f32] = cast(
            section(b, s, SectionId::ShotFeatures).unwrap_or(&[]),
            SectionId::ShotFeatures,
        )?;
        first_bad(f.iter().map(|x| (x.is_finite(), *x)), dim, "shot_features")?;
        let l: &[u32] = cast(
            section(b, s, SectionId::ShotLabels).unwrap_or(&[]),
            SectionId::ShotLabels,
        )?;
        let mut per_class = vec![0u32; h.n_classes];
        for (i, &c) in l.iter().enumerate() {
            let Some(n) = per_class.get_mut(c as usize) else {
                return Err(format!(
                    "section 'shot_labels': shot {i} has label {c}, but the pack has {} classes",
                    h.n_classes
                ));
            };
            *n += 1;
            let keys = offsets[c as usize + 1] - offsets[c as usize];
            if *n > keys {
                return Err(format!(
                    "section 'shot_labels': more stored shots of class {c} than its {keys} keys"
                ));
            }
        }
        sources = parse_strings(
            section(b, s, SectionId::ShotSources).unwrap_or(&[]),
            h.stored_shots,
            "shot_sources",
            "source",
            "shots",
        )?;
    }
    if let Some(w) = section(b, s, SectionId::GdaWeights) {
        let w: &[f32] = cast(w, SectionId::GdaWeights)?;
        first_bad(w.iter().map(|x| (x.is_finite(), *x)), dim, "gda_weights")?;
    }
    if let Some(v) = section(b, s, SectionId::GdaBias) {
        let v: &[f32] = cast(v, SectionId::GdaBias)?;
        first_bad(v.iter().map(|x| (x.is_finite(), *x)), 1, "gda_bias")?;
    }
    let choice = match section(b, s, SectionId::Choice) {
        None => None,
        Some(c) => {
            let c = std::str::from_utf8(c)
                .map_err(|e| format!("section 'choice': not valid UTF-8 ({e})"))?;
            if c.is_empty() || c.chars().any(char::is_control) {
                return Err("section 'choice': empty or contains a control character".to_string());
            }
            Some(c.to_string())
        }
    };
    if let Some(c) = section(b, s, SectionId::PromptContext) {
        check_safetensors_frame(c).map_err(|why| format!("section 'prompt_context': {why}"))?;
    }
    Ok((names, sources, choice))
}

/// The framing of a safetensors file (a u64 header length, that many bytes of a UTF-8 JSON
/// object, then the data): what the pack layer checks of a prompt context. Its contents are
/// checked where it is used (`coop::Context::from_bytes`), which this layer does not depend on.
fn check_safetensors_frame(b: &[u8]) -> Result<(), String> {
    let n = b
        .get(..8)
        .map(|h| u64::from_le_bytes(h.try_into().expect("8 bytes")))
        .ok_or_else(|| format!("{} bytes, not a safetensors file", b.len()))?;
    let header = usize::try_from(n)
        .ok()
        .and_then(|n| b.get(8..8usize.checked_add(n)?))
        .ok_or_else(|| format!("header of {n} bytes in {} bytes", b.len()))?;
    let text =
        std::str::from_utf8(header).map_err(|e| format!("header is not valid UTF-8 ({e})"))?;
    if !text.starts_with('{') || !text.trim_end().ends_with('}') {
        return Err("header is not a JSON object".into());
    }
    Ok(())
}

/// `n` NUL-terminated UTF-8 strings without control characters (empty ones allowed), one per
/// `per` (messages: "3 names for 4 classes").
fn parse_strings(
    b: &[u8],
    n: usize,
    section: &str,
    what: &str,
    per: &str,
) -> Result<Vec<String>, String> {
    let Some((&0, body)) = b.split_last() else {
        return Err(format!("section '{section}': does not end with a NUL byte"));
    };
    let mut out = Vec::with_capacity(n.min(b.len()));
    for (i, raw) in body.split(|&c| c == 0).enumerate() {
        if i >= n {
            return Err(format!(
                "section '{section}': more than {n} {what}s for {n} {per}"
            ));
        }
        let v = std::str::from_utf8(raw)
            .map_err(|e| format!("section '{section}': {what} {i} is not valid UTF-8 ({e})"))?;
        if v.chars().any(char::is_control) {
            return Err(format!(
                "section '{section}': {what} {i} contains a control character"
            ));
        }
        out.push(v.to_string());
    }
    if out.len() != n {
        return Err(format!(
            "section '{section}': {} {what}s for {n} {per}",
            out.len()
        ));
    }
    Ok(out)
}

/// The first non-finite value of a row-major matrix, as an error naming row and column.
fn first_bad(
    values: impl Iterator<Item = (bool, f32)>,
    dim: usize,
    section: &str,
) -> Result<(), String> {
    match values.enumerate().find(|(_, (ok, _))| !ok) {
        None => Ok(()),
        Some((i, (_, v))) => Err(format!(
            "section '{section}': value {} of {} {} is {v} (must be finite)",
            i % dim,
            match section {
                "keys" => "key",
                "shot_features" => "shot",
                "gda_bias" => "the bias of class",
                _ => "the row of class",
            },
            i / dim
        )),
    }
}

fn check_class_offsets(offsets: &[u32], n_keys: usize) -> Result<(), String> {
    let first = offsets.first().copied().unwrap_or(0);
    if first != 0 {
        return Err(format!(
            "section 'class_offsets': class 0 starts at key {first}, not 0"
        ));
    }
    if let Some(c) = offsets.windows(2).position(|w| w[1] < w[0]) {
        return Err(format!(
            "section 'class_offsets': class {} starts at key {}, before class {c} at key {} (classes overlap)",
            c + 1,
            offsets[c + 1],
            offsets[c]
        ));
    }
    let last = offsets.last().copied().unwrap_or(0) as usize;
    if last != n_keys {
        return Err(format!(
            "section 'class_offsets': the last class ends at key {last}, but there are {n_keys} keys"
        ));
    }
    Ok(())
}

/// `offsets` is already a partition of `labels.len()` keys.
fn check_labels(labels: &[u32], offsets: &[u32], n_classes: usize) -> Result<(), String> {
    if let Some(i) = labels.iter().position(|&l| l as usize >= n_classes) {
        return Err(format!(
            "section 'labels': key {i} has label {}, but the pack has {n_classes} classes",
            labels[i]
        ));
    }
    for (c, w) in offsets.windows(2).enumerate() {
        let range = w[0] as usize..w[1] as usize;
        if let Some(j) = labels[range.clone()].iter().position(|&l| l as usize != c) {
            let i = range.start + j;
            return Err(format!(
                "section 'labels': key {i} has label {} but lies in class {c}'s range (keys must be sorted by class)",
                labels[i]
            ));
        }
    }
    Ok(())
}

/// `n_classes` names, each terminated by a NUL: non-empty UTF-8 without control characters,
/// no two alike.
fn parse_class_names(b: &[u8], n_classes: usize) -> Result<Vec<String>, String> {
    let names = parse_strings(b, n_classes, "class_names", "name", "classes")?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(format!("section 'class_names': name {i} is empty"));
        }
        if let Some(j) = seen.insert(name, i) {
            return Err(format!(
                "section 'class_names': '{name}' names both class {j} and class {i}"
            ));
        }
    }
    Ok(names)
}

/// Checks the header's string fields fit before the writer encodes them.
pub(crate) fn check_string_fields(name: &str, tool_version: &str) -> Result<(), String> {
    for (what, s, cap) in [
        ("encoder name", name, ENCODER_NAME_LEN),
        ("tool version", tool_version, TOOL_VERSION_LEN),
    ] {
        if s.len() > cap {
            return Err(format!(
                "header: {what} '{s}' is {} bytes, at most {cap} fit",
                s.len()
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(format!("header: {what} contains a control character"));
        }
    }
    Ok(())
}

/// Offset of the first section for a table of `count` entries.
pub(crate) fn data_start(count: usize) -> usize {
    align_up(HEADER_LEN + count * ENTRY_LEN)
}
