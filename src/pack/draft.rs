//! An adapter pack in memory, owned and editable: what `cache build`, `tune`, `finetune` and
//! (later) on-device enrolment produce, what an in-memory [`crate::classifier::Classifier`]
//! scores with, and what [`PackDraft::write`] turns into a pack file.

use std::path::Path;

use super::{write_pack, EncoderId, OwnedKeys, Pack, PackContents, Provenance};
use crate::adapter::AdapterParams;
use crate::kernel::{class_offsets_of, l2_normalize_rows, KeyData, KeyDtype, Keys};
use crate::{Error, Result};

/// Everything a pack holds, owned. Keys are sorted by class (`class_offsets`), and `labels`
/// agree with the offsets; the constructors keep it so.
#[derive(Debug, Clone, PartialEq)]
pub struct PackDraft {
    dim: usize,
    keys: OwnedKeys,
    class_offsets: Vec<u32>,
    labels: Vec<u32>,
    class_names: Vec<String>,
    text_classifier: Option<Vec<f32>>,
    /// α, β and the logit scale stored in the pack.
    pub params: AdapterParams,
    /// The temperature of calibrated probabilities, fitted for these keys and `params`.
    pub temperature: Option<f32>,
    pub encoder: EncoderId,
    pub provenance: Provenance,
}

impl PackDraft {
    /// A draft from f32 keys in any class order (`labels.len() × dim`, one label per key): each
    /// key is L2-normalised (the official `build_cache_model` normalises after averaging over
    /// augmentations) and the keys are reordered by class (stable), so that the cache term is a
    /// segmented sum. No keys at all is allowed (a zero-shot CLIP classifier).
    #[allow(clippy::too_many_arguments)]
    pub fn from_f32_keys(
        dim: usize,
        mut keys: Vec<f32>,
        labels: Vec<u32>,
        class_names: Vec<String>,
        text_classifier: Option<Vec<f32>>,
        params: AdapterParams,
        encoder: EncoderId,
        provenance: Provenance,
    ) -> Result<PackDraft> {
        let n_classes = class_names.len();
        if dim == 0 || keys.len() != labels.len() * dim {
            return Err(Error::Invalid(format!(
                "cache: {} key values for {} labels of dim {dim}",
                keys.len(),
                labels.len()
            )));
        }
        if n_classes == 0 {
            return Err(Error::Invalid("cache: no classes".into()));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= n_classes) {
            return Err(Error::Invalid(format!(
                "cache: label {bad} out of range ({n_classes} classes)"
            )));
        }
        if let Some(w) = &text_classifier {
            if w.len() != n_classes * dim {
                return Err(Error::Invalid(format!(
                    "text classifier has {} values, expected {n_classes} classes × {dim} dims",
                    w.len()
                )));
            }
        }
        l2_normalize_rows(&mut keys, dim);
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by_key(|&i| labels[i]);
        let keys: Vec<f32> = order
            .iter()
            .flat_map(|&i| keys[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        let labels: Vec<u32> = order.iter().map(|&i| labels[i]).collect();
        let class_offsets = class_offsets_of(&labels, n_classes);
        Ok(PackDraft {
            dim,
            keys: OwnedKeys::F32(keys),
            class_offsets,
            labels,
            class_names,
            text_classifier,
            params,
            temperature: None,
            encoder,
            provenance,
        })
    }

    /// A copy of an open pack, to edit (new α/β, fine-tuned keys, more shots).
    pub fn from_pack(pack: &Pack) -> PackDraft {
        let c = pack.contents();
        PackDraft {
            dim: c.dim,
            keys: match c.key_data {
                KeyData::F32(v) => OwnedKeys::F32(v.to_vec()),
                KeyData::F16(v) => OwnedKeys::F16(v.to_vec()),
                KeyData::I8 { values, scales } => OwnedKeys::I8 {
                    values: values.to_vec(),
                    scales: scales.to_vec(),
                },
            },
            class_offsets: c.class_offsets.to_vec(),
            labels: c.labels.to_vec(),
            class_names: c.class_names.to_vec(),
            text_classifier: c.text_classifier.map(<[f32]>::to_vec),
            params: pack.params(),
            temperature: pack.temperature(),
            encoder: c.encoder.clone(),
            provenance: c.provenance.clone(),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn n_keys(&self) -> usize {
        self.labels.len()
    }
    pub fn n_classes(&self) -> usize {
        self.class_names.len()
    }
    pub fn key_dtype(&self) -> KeyDtype {
        self.keys.dtype()
    }
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
    pub fn class_offsets(&self) -> &[u32] {
        &self.class_offsets
    }
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
    pub fn text_classifier(&self) -> Option<&[f32]> {
        self.text_classifier.as_deref()
    }
    pub fn key_data(&self) -> KeyData<'_> {
        self.keys.as_key_data()
    }
    /// The keys as the kernel reads them.
    pub fn keys(&self) -> Keys<'_> {
        Keys::new(self.dim, self.key_data(), &self.class_offsets)
            .expect("a PackDraft keeps its keys and class offsets consistent")
    }

    /// Replaces the keys by `n_keys × dim` f32 values in the same order (fine-tuned keys),
    /// stored as `dtype`.
    pub fn set_keys_f32(&mut self, keys: &[f32], dtype: KeyDtype) -> Result<()> {
        if keys.len() != self.n_keys() * self.dim {
            return Err(Error::Invalid(format!(
                "{} key values replace {} keys of dim {}",
                keys.len(),
                self.n_keys(),
                self.dim
            )));
        }
        self.keys = OwnedKeys::from_f32(dtype, self.dim, keys)?;
        Ok(())
    }

    /// Stores the keys as `dtype` (int8 with one absmax scale per key, fp16, f32); converting
    /// from int8 or fp16 goes through their f32 values.
    pub fn convert_keys(&mut self, dtype: KeyDtype) -> Result<()> {
        if dtype == self.key_dtype() {
            return Ok(());
        }
        let f32_keys = self.key_data().to_f32(self.dim);
        self.keys = OwnedKeys::from_f32(dtype, self.dim, &f32_keys)?;
        Ok(())
    }

    /// The pack's contents, borrowed, as the writer and the encoder take them.
    pub fn contents(&self) -> PackContents<'_> {
        PackContents {
            dim: self.dim,
            key_data: self.key_data(),
            class_offsets: &self.class_offsets,
            labels: &self.labels,
            class_names: &self.class_names,
            text_classifier: self.text_classifier(),
            logit_scale: self.params.logit_scale,
            alpha: self.params.alpha,
            beta: self.params.beta,
            temperature: self.temperature,
            encoder: &self.encoder,
            provenance: &self.provenance,
        }
    }

    /// Writes the pack atomically ([`write_pack`]): a temporary file beside `path`, fsync,
    /// rename, fsync of the directory; refused if the reader would refuse it.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_pack(path, &self.contents())
    }
}
