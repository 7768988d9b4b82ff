//! The byte layout, versions 1 to 5 (FORMAT.md is the specification): constants, field offsets, section ids,
//! and the decoding of the fixed header and the section table. Decoding here only reads; what a
//! value must satisfy is decided in `verify`.

use crate::adapter::Head;
use crate::kernel::KeyDtype;

/// First 8 bytes of every pack.
pub const MAGIC: [u8; 8] = *b"TIPEPACK";
/// The newest format version this build writes and reads: 2 adds the temperature of calibrated
/// probabilities, 3 the stored shots (features, classes and sources of shots enrolled on a
/// device), 4 the head (a GDA layer beside or instead of the cache) and the record of the
/// validation choice, 5 the CoOp prompt context W was made from. A writer uses the oldest
/// version that holds the contents: a pack without stored shots, temperature, GDA layer, choice
/// record or prompt context is version 1, byte for byte what earlier builds wrote and read.
pub const VERSION: u32 = 5;
/// The version that added the temperature.
pub const TEMPERATURE_VERSION: u32 = 2;
/// The version that added stored shots.
pub const SHOTS_VERSION: u32 = 3;
/// The version that added the head (GDA layer) and the choice record.
pub const HEAD_VERSION: u32 = 4;
/// The version that added the prompt context.
pub const PROMPT_VERSION: u32 = 5;
/// The oldest format version this build reads.
pub const FIRST_VERSION: u32 = 1;
/// Written as a little-endian u32: the bytes `4D 3C 2B 1A` on disk.
pub const ENDIAN_MARKER: u32 = 0x1A2B_3C4D;
/// Bytes of the fixed header; the section table follows it.
pub const HEADER_LEN: usize = 256;
/// Bytes of one section table entry.
pub const ENTRY_LEN: usize = 32;
/// Most section table entries a v1 reader looks at (v1 defines 6 sections).
pub const MAX_SECTIONS: usize = 16;
/// Every section starts at a multiple of this (cache line; lets the keys be cast in place).
pub const ALIGN: usize = 64;
/// Largest feature dimension a pack may declare. CLIP's widest towers are 1280; the bound keeps
/// a tiny file from declaring a dimension that makes callers allocate gigabytes of scratch.
pub const MAX_DIM: usize = 1 << 16;
/// Bytes reserved for the encoder name (UTF-8, NUL-padded).
pub const ENCODER_NAME_LEN: usize = 64;
/// Bytes reserved for the tool version (UTF-8, NUL-padded).
pub const TOOL_VERSION_LEN: usize = 32;

/// Byte offsets of the header fields.
pub(crate) mod at {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const ENDIAN: usize = 12;
    pub const HEADER_LEN: usize = 16;
    pub const SECTION_COUNT: usize = 20;
    pub const FILE_LEN: usize = 24;
    pub const DIM: usize = 32;
    pub const N_KEYS: usize = 36;
    pub const N_CLASSES: usize = 40;
    pub const KEY_DTYPE: usize = 44;
    pub const LOGIT_SCALE: usize = 48;
    pub const ALPHA: usize = 52;
    pub const BETA: usize = 56;
    /// Version 2: the temperature T (f32); reserved (zero) in version 1.
    pub const TEMPERATURE: usize = 60;
    pub const ENCODER_SHA256: usize = 64;
    pub const ENCODER_NAME: usize = 96;
    pub const SHOTS: usize = 160;
    pub const AUGMENT_EPOCHS: usize = 164;
    pub const SEED: usize = 168;
    pub const CREATED_UNIX: usize = 176;
    pub const TOOL_VERSION: usize = 184;
    /// Version 3: the number of stored shots (u32); reserved (zero) before.
    pub const STORED_SHOTS: usize = 216;
    /// Version 4: the head code (u32, 1 = tip, 2 = gda, 3 = both); reserved (zero) before.
    pub const HEAD: usize = 220;
    /// Version 4: the GDA term's α (f32; 0 when the head has no GDA layer); reserved before.
    pub const GDA_ALPHA: usize = 224;
    pub const RESERVED1: usize = 228;
    pub const HEADER_CRC: usize = 252;
}

/// The sections of a pack (7 to 9 from version 3, 10 to 12 from version 4, 13 from version 5). The discriminant is the id stored in the
/// section table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectionId {
    Keys = 1,
    KeyScales = 2,
    ClassOffsets = 3,
    Labels = 4,
    ClassNames = 5,
    TextClassifier = 6,
    ShotFeatures = 7,
    ShotLabels = 8,
    ShotSources = 9,
    GdaWeights = 10,
    GdaBias = 11,
    Choice = 12,
    PromptContext = 13,
}

impl SectionId {
    /// In id order, which is also the order the writer lays them out.
    pub const ALL: [SectionId; 13] = [
        SectionId::Keys,
        SectionId::KeyScales,
        SectionId::ClassOffsets,
        SectionId::Labels,
        SectionId::ClassNames,
        SectionId::TextClassifier,
        SectionId::ShotFeatures,
        SectionId::ShotLabels,
        SectionId::ShotSources,
        SectionId::GdaWeights,
        SectionId::GdaBias,
        SectionId::Choice,
        SectionId::PromptContext,
    ];

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<SectionId> {
        SectionId::ALL.iter().copied().find(|s| s.code() == code)
    }

    /// The name used in messages and in FORMAT.md.
    pub fn name(self) -> &'static str {
        match self {
            SectionId::Keys => "keys",
            SectionId::KeyScales => "key_scales",
            SectionId::ClassOffsets => "class_offsets",
            SectionId::Labels => "labels",
            SectionId::ClassNames => "class_names",
            SectionId::TextClassifier => "text_classifier",
            SectionId::ShotFeatures => "shot_features",
            SectionId::ShotLabels => "shot_labels",
            SectionId::ShotSources => "shot_sources",
            SectionId::GdaWeights => "gda_weights",
            SectionId::GdaBias => "gda_bias",
            SectionId::Choice => "choice",
            SectionId::PromptContext => "prompt_context",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize - 1
    }
}

impl std::fmt::Display for SectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub(crate) fn head_code(head: Head) -> u32 {
    match head {
        Head::Tip => 1,
        Head::Gda => 2,
        Head::Both => 3,
    }
}

pub(crate) fn head_from_code(code: u32) -> Option<Head> {
    match code {
        1 => Some(Head::Tip),
        2 => Some(Head::Gda),
        3 => Some(Head::Both),
        _ => None,
    }
}

pub(crate) fn dtype_code(dtype: KeyDtype) -> u32 {
    match dtype {
        KeyDtype::F32 => 1,
        KeyDtype::F16 => 2,
        KeyDtype::I8 => 3,
    }
}

pub(crate) fn dtype_from_code(code: u32) -> Option<KeyDtype> {
    match code {
        1 => Some(KeyDtype::F32),
        2 => Some(KeyDtype::F16),
        3 => Some(KeyDtype::I8),
        _ => None,
    }
}

/// Bytes of one key value of `dtype` in the `keys` section (int8 scales live in `key_scales`).
pub(crate) fn value_bytes(dtype: KeyDtype) -> u64 {
    match dtype {
        KeyDtype::F32 => 4,
        KeyDtype::F16 => 2,
        KeyDtype::I8 => 1,
    }
}

/// `n` rounded up to a multiple of [`ALIGN`] (callers keep `n` far below overflow).
pub(crate) fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

pub(crate) fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_bits(u32_at(b, at))
}

/// Header fields as stored, before any judgement. Built from at least [`HEADER_LEN`] bytes.
#[derive(Clone, Debug)]
pub(crate) struct RawHeader {
    pub version: u32,
    pub endian: u32,
    pub header_len: u32,
    pub section_count: u32,
    pub file_len: u64,
    pub dim: u32,
    pub n_keys: u32,
    pub n_classes: u32,
    pub key_dtype: u32,
    pub logit_scale: f32,
    pub alpha: f32,
    pub beta: f32,
    /// Bits of the temperature (version 2) or reserved zero (version 1).
    pub temperature_bits: u32,
    pub encoder_sha256: [u8; 32],
    pub encoder_name: [u8; ENCODER_NAME_LEN],
    pub shots: u32,
    pub augment_epochs: u32,
    pub seed: u64,
    pub created_unix: i64,
    pub tool_version: [u8; TOOL_VERSION_LEN],
    /// Stored shots (version 3) or reserved zero.
    pub stored_shots: u32,
    /// Head code (version 4) or reserved zero.
    pub head: u32,
    /// Bits of the GDA α (version 4) or reserved zero.
    pub gda_alpha_bits: u32,
    pub reserved1_zero: bool,
    pub header_crc: u32,
}

impl RawHeader {
    /// Decodes the fixed header; `b` must hold at least [`HEADER_LEN`] bytes.
    pub fn decode(b: &[u8]) -> RawHeader {
        let mut encoder_sha256 = [0u8; 32];
        encoder_sha256.copy_from_slice(&b[at::ENCODER_SHA256..at::ENCODER_SHA256 + 32]);
        let mut encoder_name = [0u8; ENCODER_NAME_LEN];
        encoder_name.copy_from_slice(&b[at::ENCODER_NAME..at::ENCODER_NAME + ENCODER_NAME_LEN]);
        let mut tool_version = [0u8; TOOL_VERSION_LEN];
        tool_version.copy_from_slice(&b[at::TOOL_VERSION..at::TOOL_VERSION + TOOL_VERSION_LEN]);
        RawHeader {
            version: u32_at(b, at::VERSION),
            endian: u32_at(b, at::ENDIAN),
            header_len: u32_at(b, at::HEADER_LEN),
            section_count: u32_at(b, at::SECTION_COUNT),
            file_len: u64_at(b, at::FILE_LEN),
            dim: u32_at(b, at::DIM),
            n_keys: u32_at(b, at::N_KEYS),
            n_classes: u32_at(b, at::N_CLASSES),
            key_dtype: u32_at(b, at::KEY_DTYPE),
            logit_scale: f32_at(b, at::LOGIT_SCALE),
            alpha: f32_at(b, at::ALPHA),
            beta: f32_at(b, at::BETA),
            temperature_bits: u32_at(b, at::TEMPERATURE),
            encoder_sha256,
            encoder_name,
            shots: u32_at(b, at::SHOTS),
            augment_epochs: u32_at(b, at::AUGMENT_EPOCHS),
            seed: u64_at(b, at::SEED),
            created_unix: u64_at(b, at::CREATED_UNIX) as i64,
            tool_version,
            stored_shots: u32_at(b, at::STORED_SHOTS),
            head: u32_at(b, at::HEAD),
            gda_alpha_bits: u32_at(b, at::GDA_ALPHA),
            reserved1_zero: b[at::RESERVED1..at::HEADER_CRC].iter().all(|&x| x == 0),
            header_crc: u32_at(b, at::HEADER_CRC),
        }
    }
}

/// One section table entry as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawEntry {
    pub id: u32,
    pub crc: u32,
    pub offset: u64,
    pub length: u64,
    pub reserved: u64,
}

impl RawEntry {
    /// Decodes entry `i`; `b` must hold the whole table.
    pub fn decode(b: &[u8], i: usize) -> RawEntry {
        let o = HEADER_LEN + i * ENTRY_LEN;
        RawEntry {
            id: u32_at(b, o),
            crc: u32_at(b, o + 4),
            offset: u64_at(b, o + 8),
            length: u64_at(b, o + 16),
            reserved: u64_at(b, o + 24),
        }
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.id.to_le_bytes());
        out[4..8].copy_from_slice(&self.crc.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.length.to_le_bytes());
        out[24..32].copy_from_slice(&self.reserved.to_le_bytes());
    }
}

/// The header checksum: crc32c over the header without its checksum field, then the table.
/// `b` must hold the header and `section_count` entries.
pub(crate) fn header_crc(b: &[u8], section_count: usize) -> u32 {
    let crc = crc32c::crc32c(&b[..at::HEADER_CRC]);
    crc32c::crc32c_append(crc, &b[HEADER_LEN..HEADER_LEN + section_count * ENTRY_LEN])
}

/// A buffer of bytes whose start is 8-byte aligned, so that f32/f16/u32 views of 64-aligned
/// sections are valid casts (the mmap path gets this from page alignment).
#[derive(Clone, Debug, Default)]
pub(crate) struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            words: vec![0; len.div_ceil(8)],
            len,
        }
    }
    pub fn from_slice(bytes: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::zeroed(bytes.len());
        a.as_mut_slice().copy_from_slice(bytes);
        a
    }
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}
