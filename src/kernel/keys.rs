//! The keys: how they are stored ([`KeyDtype`], [`KeyData`]), the checked class-sorted view the
//! kernel reads ([`Keys`]), and how keys are made (normalised, quantised to int8).

use half::f16;
use std::fmt;

/// How the keys are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyDtype {
    F32,
    F16,
    /// int8 values in −127..=127 with one f32 scale per key (absmax / 127).
    I8,
}

impl KeyDtype {
    pub fn name(self) -> &'static str {
        match self {
            KeyDtype::F32 => "f32",
            KeyDtype::F16 => "fp16",
            KeyDtype::I8 => "int8",
        }
    }
    /// Bytes one key of dimension `dim` occupies (int8 counts its f32 scale).
    pub fn key_bytes(self, dim: usize) -> usize {
        match self {
            KeyDtype::F32 => 4 * dim,
            KeyDtype::F16 => 2 * dim,
            KeyDtype::I8 => dim + 4,
        }
    }
}

impl fmt::Display for KeyDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KeyDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(KeyDtype::F32),
            "fp16" | "f16" | "float16" => Ok(KeyDtype::F16),
            "int8" | "i8" => Ok(KeyDtype::I8),
            other => Err(format!(
                "unknown key dtype '{other}' (expected int8, fp16 or f32)"
            )),
        }
    }
}

/// Key values, row-major `n × dim`.
#[derive(Clone, Copy, Debug)]
pub enum KeyData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    I8 { values: &'a [i8], scales: &'a [f32] },
}

impl KeyData<'_> {
    pub fn dtype(&self) -> KeyDtype {
        match self {
            KeyData::F32(_) => KeyDtype::F32,
            KeyData::F16(_) => KeyDtype::F16,
            KeyData::I8 { .. } => KeyDtype::I8,
        }
    }
    /// The keys as f32 (int8: value × its key's scale), row-major `n × dim`.
    pub fn to_f32(&self, dim: usize) -> Vec<f32> {
        match self {
            KeyData::F32(v) => v.to_vec(),
            KeyData::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
            KeyData::I8 { values, scales } => values
                .chunks_exact(dim.max(1))
                .zip(scales.iter())
                .flat_map(|(row, &s)| row.iter().map(move |&q| f32::from(q) * s))
                .collect(),
        }
    }
    fn values_len(&self) -> usize {
        match self {
            KeyData::F32(v) => v.len(),
            KeyData::F16(v) => v.len(),
            KeyData::I8 { values, .. } => values.len(),
        }
    }
}

/// Why a set of keys or a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KernelError(pub String);

/// Class-sorted keys: a checked view, cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Keys<'a> {
    dim: usize,
    n: usize,
    data: KeyData<'a>,
    class_offsets: &'a [u32],
}

impl<'a> Keys<'a> {
    /// `class_offsets` has one entry per class plus one: class `c` owns keys
    /// `class_offsets[c]..class_offsets[c+1]`; it starts at 0, never decreases and ends at the
    /// key count. Empty classes are allowed.
    pub fn new(
        dim: usize,
        data: KeyData<'a>,
        class_offsets: &'a [u32],
    ) -> Result<Keys<'a>, KernelError> {
        if dim == 0 {
            return Err(KernelError("key dimension is 0".into()));
        }
        let len = data.values_len();
        if !len.is_multiple_of(dim) {
            return Err(KernelError(format!(
                "{len} key values are not a whole number of keys of dimension {dim}"
            )));
        }
        let n = len / dim;
        if let KeyData::I8 { scales, .. } = data {
            if scales.len() != n {
                return Err(KernelError(format!(
                    "{} scales for {n} int8 keys",
                    scales.len()
                )));
            }
        }
        if class_offsets.len() < 2 {
            return Err(KernelError("class offsets need at least one class".into()));
        }
        if class_offsets[0] != 0 || *class_offsets.last().unwrap() as usize != n {
            return Err(KernelError(format!(
                "class offsets must run from 0 to the key count {n}"
            )));
        }
        if let Some(w) = class_offsets.windows(2).position(|w| w[1] < w[0]) {
            return Err(KernelError(format!(
                "class offsets decrease at class {w} (classes would overlap)"
            )));
        }
        Ok(Keys {
            dim,
            n,
            data,
            class_offsets,
        })
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn n_classes(&self) -> usize {
        self.class_offsets.len() - 1
    }
    pub fn dtype(&self) -> KeyDtype {
        self.data.dtype()
    }
    pub fn data(&self) -> KeyData<'a> {
        self.data
    }
    pub fn class_offsets(&self) -> &'a [u32] {
        self.class_offsets
    }
    /// Bytes of key storage the kernel reads per query pass.
    pub fn bytes(&self) -> usize {
        self.dtype().key_bytes(self.dim) * self.n
    }
    /// Keys `start..end` as a sub-view of the same data (used to cut tiles).
    #[inline]
    pub(super) fn range(&self, start: usize, end: usize) -> KeyData<'a> {
        let (a, b) = (start * self.dim, end * self.dim);
        match self.data {
            KeyData::F32(v) => KeyData::F32(&v[a..b]),
            KeyData::F16(v) => KeyData::F16(&v[a..b]),
            KeyData::I8 { values, scales } => KeyData::I8 {
                values: &values[a..b],
                scales: &scales[start..end],
            },
        }
    }
}

/// The class offsets of keys sorted by class, from their labels: class `c` owns keys
/// `offsets[c]..offsets[c+1]` (`n_classes + 1` entries; labels must be `< n_classes`).
pub fn class_offsets_of(labels: &[u32], n_classes: usize) -> Vec<u32> {
    let mut offsets = vec![0u32; n_classes + 1];
    for &l in labels {
        offsets[l as usize + 1] += 1;
    }
    for c in 0..n_classes {
        offsets[c + 1] += offsets[c];
    }
    offsets
}

/// L2-normalise each row of a row-major matrix in place (rows of zeros stay zero).
pub fn l2_normalize_rows(values: &mut [f32], dim: usize) {
    for row in values.chunks_exact_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
}

/// Quantise one key to int8 with its absmax scale: `k ≈ scale · q`, `q ∈ −127..=127`.
pub fn quantize_key_i8(key: &[f32], out: &mut [i8]) -> f32 {
    let absmax = key.iter().fold(0f32, |m, x| m.max(x.abs()));
    if absmax == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let inv = 127.0 / absmax;
    for (o, x) in out.iter_mut().zip(key) {
        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    absmax / 127.0
}
