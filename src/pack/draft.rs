//! An adapter pack in memory, owned and editable: what `cache build`, `tune`, `finetune` and
//! (later) on-device enrolment produce, what an in-memory [`crate::classifier::Classifier`]
//! scores with, and what [`PackDraft::write`] turns into a pack file.

use std::path::Path;

use super::{write_pack, EncoderId, OwnedKeys, Pack, PackContents, Provenance, StoredShots};
use crate::adapter::{AdapterParams, GdaTerm, Head, TipAdapter};
use crate::kernel::{class_offsets_of, l2_normalize_rows, KeyData, KeyDtype, Keys};
use crate::{Error, Result};

/// What [`PackDraft::add_shots`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedShots {
    /// The class index.
    pub class: usize,
    /// The class was created.
    pub new_class: bool,
    /// Keys added.
    pub keys: usize,
}

/// A GDA layer owned by a draft: `n_classes × dim` weights, one bias per class, and the α it is
/// added with (see [`crate::adapter::GdaTerm`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedGda {
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub alpha: f32,
}

impl OwnedGda {
    pub fn from_term(g: GdaTerm<'_>) -> OwnedGda {
        OwnedGda {
            weights: g.weights.to_vec(),
            bias: g.bias.to_vec(),
            alpha: g.alpha,
        }
    }
    pub fn term(&self) -> GdaTerm<'_> {
        GdaTerm {
            weights: &self.weights,
            bias: &self.bias,
            alpha: self.alpha,
        }
    }
}

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
    /// Shots stored with the pack (enrolled on a device): features `n × dim`, classes, sources.
    shot_features: Vec<f32>,
    shot_labels: Vec<u32>,
    shot_sources: Vec<String>,
    /// The terms the pack scores with, and the GDA layer when the head uses it.
    head: Head,
    gda: Option<OwnedGda>,
    /// How the recipe and head were chosen on validation (JSON), kept for the record.
    pub choice: Option<String>,
    /// The CoOp prompt context W was made from (a context file's bytes).
    pub prompt_context: Option<Vec<u8>>,
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
            shot_features: Vec::new(),
            shot_labels: Vec::new(),
            shot_sources: Vec::new(),
            head: Head::Tip,
            gda: None,
            choice: None,
            prompt_context: None,
        })
    }

    /// A copy of an open pack, to edit (new α/β, fine-tuned keys, more shots).
    pub fn from_pack(pack: &Pack) -> PackDraft {
        let c = pack.contents();
        let shots = c.stored_shots;
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
            shot_features: shots.map_or_else(Vec::new, |s| s.features.to_vec()),
            shot_labels: shots.map_or_else(Vec::new, |s| s.labels.to_vec()),
            shot_sources: shots.map_or_else(Vec::new, |s| s.sources.to_vec()),
            head: pack.head(),
            gda: pack.gda().map(OwnedGda::from_term),
            choice: pack.choice().map(str::to_string),
            prompt_context: pack.prompt_context().map(<[u8]>::to_vec),
        }
    }

    /// The terms the pack scores with.
    pub fn head(&self) -> Head {
        self.head
    }
    /// The GDA layer, if the head uses one.
    pub fn gda(&self) -> Option<&OwnedGda> {
        self.gda.as_ref()
    }

    /// Scores with `head`; `gda` must be given exactly when the head uses it, with one row of
    /// the keys' dimension per class, finite values and a finite α. On error the draft is
    /// unchanged.
    pub fn set_head(&mut self, head: Head, gda: Option<OwnedGda>) -> Result<()> {
        let gda = gda.filter(|_| head.uses_gda());
        if let Some(g) = &gda {
            if g.weights.iter().chain(&g.bias).any(|v| !v.is_finite()) {
                return Err(Error::Invalid(
                    "the GDA layer has a value that is not finite".into(),
                ));
            }
        }
        // The model's own check of the shapes and α.
        TipAdapter::new(self.keys(), self.text_classifier(), self.params)?
            .with_head(head, gda.as_ref().map(OwnedGda::term))?;
        self.head = head;
        self.gda = gda;
        Ok(())
    }

    /// The model this draft scores with: keys, W, α/β and the head.
    pub fn model(&self) -> TipAdapter<'_> {
        TipAdapter::new(self.keys(), self.text_classifier(), self.params)
            .and_then(|m| m.with_head(self.head, self.gda.as_ref().map(OwnedGda::term)))
            .expect("a PackDraft keeps W and its GDA layer consistent with its classes")
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
    /// The shots stored with the pack, if any.
    pub fn stored_shots(&self) -> Option<StoredShots<'_>> {
        (!self.shot_labels.is_empty()).then_some(StoredShots {
            features: &self.shot_features,
            labels: &self.shot_labels,
            sources: &self.shot_sources,
        })
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

    /// Adds `keys` (`n × dim` f32; each L2-normalised here) as shots of the class `name`: after
    /// that class's keys, or, when no class has that name and `new_class` is set, as a new last
    /// class — whose row of the zero-shot classifier W must come with it (`w_row`, `dim` values)
    /// when the draft has one. The new keys are stored in the draft's key dtype; the keys already
    /// there are not touched (int8 keys carry one scale each). Each shot is also stored with the
    /// pack, in f32 with its class and `sources` entry (one per key), for a later `finetune`.
    /// The provenance is untouched: its K stays the shots `cache build` drew (the stored shots
    /// say what was enrolled since). On error the draft is unchanged.
    pub fn add_shots(
        &mut self,
        name: &str,
        keys: &[f32],
        sources: &[String],
        new_class: bool,
        w_row: Option<&[f32]>,
    ) -> Result<AddedShots> {
        let dim = self.dim;
        if keys.is_empty() || !keys.len().is_multiple_of(dim) {
            return Err(Error::Invalid(format!(
                "enrol: {} feature values are not a whole number (≥ 1) of features of dim {dim}",
                keys.len()
            )));
        }
        if let Some(bad) = keys.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "enrol: feature {} has a value that is not finite",
                bad / dim
            )));
        }
        let n = keys.len() / dim;
        if sources.len() != n {
            return Err(Error::Invalid(format!(
                "enrol: {} sources for {n} shots",
                sources.len()
            )));
        }
        if let Some(i) = sources.iter().position(|s| s.chars().any(char::is_control)) {
            return Err(Error::Invalid(format!(
                "enrol: the source of shot {i} contains a control character"
            )));
        }
        let existing = self.class_names.iter().position(|c| c == name);
        let class = match (existing, new_class) {
            (Some(c), _) => c,
            (None, false) => {
                return Err(Error::Invalid(format!(
                    "enrol: class '{name}' is not in the pack (classes: {}); ask for a new class \
                     to create it",
                    self.class_names.join(", ")
                )))
            }
            (None, true) => {
                self.check_new_class(name, w_row)
                    .map_err(|e| Error::Invalid(format!("enrol: {e}")))?;
                self.class_names.len()
            }
        };
        let mut normalized = keys.to_vec();
        l2_normalize_rows(&mut normalized, dim);
        let new = OwnedKeys::from_f32(self.key_dtype(), dim, &normalized)?;
        if class == self.class_names.len() {
            self.push_class(name, w_row);
        }
        let at = self.class_offsets[class + 1] as usize;
        self.keys.insert(at, dim, new);
        self.labels
            .splice(at..at, std::iter::repeat_n(class as u32, n));
        for o in &mut self.class_offsets[class + 1..] {
            *o += n as u32;
        }
        self.shot_features.extend_from_slice(&normalized);
        self.shot_labels
            .extend(std::iter::repeat_n(class as u32, n));
        self.shot_sources.extend_from_slice(sources);
        Ok(AddedShots {
            class,
            new_class: existing.is_none(),
            keys: n,
        })
    }

    /// Adds a class with no keys, known by its row of W alone (`w_row`, `dim` values): a class
    /// added by name (CoOp's generic context gives any name its row). Its cache term is zero
    /// until shots of it are enrolled. On error the draft is unchanged.
    pub fn add_class(&mut self, name: &str, w_row: &[f32]) -> Result<usize> {
        if self.class_names.iter().any(|c| c == name) {
            return Err(Error::Invalid(format!(
                "class '{name}' is already in the pack"
            )));
        }
        if self.text_classifier.is_none() {
            return Err(Error::Invalid(format!(
                "the pack has no text classifier W, so '{name}' cannot be added by name"
            )));
        }
        self.check_new_class(name, Some(w_row))?;
        self.push_class(name, Some(w_row));
        Ok(self.class_names.len() - 1)
    }

    /// What a new class must satisfy: a name, no GDA layer (it has no row for it), and a W row
    /// exactly when the draft has W.
    fn check_new_class(&self, name: &str, w_row: Option<&[f32]>) -> Result<()> {
        let dim = self.dim;
        if self.gda.is_some() {
            return Err(Error::Invalid(format!(
                "the pack scores with a GDA layer fitted for {} classes, which has no \
                 row for a new class '{name}'; rebuild the pack with the new class's shots \
                 (cache build), or with --head tip",
                self.class_names.len()
            )));
        }
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "{name:?} is not a class name (empty or with control characters)"
            )));
        }
        match (&self.text_classifier, w_row) {
            (Some(_), None) => Err(Error::Invalid(format!(
                "the pack has a zero-shot classifier W, so the new class \
                 '{name}' needs its W row (from a CLIP text tower)"
            ))),
            (Some(_), Some(w)) if w.len() != dim || w.iter().any(|v| !v.is_finite()) => {
                Err(Error::Invalid(format!(
                    "the W row of '{name}' has {} values (finite ones needed), \
                     expected {dim}",
                    w.len()
                )))
            }
            (None, Some(_)) => Err(Error::Invalid(format!(
                "the pack has no zero-shot classifier W; '{name}' takes no W row"
            ))),
            _ => Ok(()),
        }
    }

    fn push_class(&mut self, name: &str, w_row: Option<&[f32]>) {
        self.class_names.push(name.to_string());
        self.class_offsets.push(self.labels.len() as u32);
        if let (Some(w), Some(row)) = (self.text_classifier.as_mut(), w_row) {
            w.extend_from_slice(row);
        }
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
            stored_shots: self.stored_shots(),
            head: self.head,
            gda: self.gda.as_ref().map(OwnedGda::term),
            choice: self.choice.as_deref(),
            prompt_context: self.prompt_context.as_deref(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(dtype: KeyDtype, with_w: bool) -> PackDraft {
        let dim = 4;
        let keys: Vec<f32> = (0..5 * dim).map(|i| ((i * 7 % 11) as f32) - 5.0).collect();
        let names = vec!["a".to_string(), "b".to_string()];
        let w = with_w.then(|| (0..2 * dim).map(|i| i as f32 * 0.1).collect());
        let mut d = PackDraft::from_f32_keys(
            dim,
            keys,
            vec![0, 1, 0, 1, 1],
            names,
            w,
            AdapterParams::default(),
            EncoderId {
                name: "t".into(),
                sha256: [7; 32],
            },
            Provenance::default(),
        )
        .unwrap();
        d.convert_keys(dtype).unwrap();
        d
    }

    fn src(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("shot {i}")).collect()
    }

    /// The keys of class `c` in f32, as stored.
    fn class_keys(d: &PackDraft, c: usize) -> Vec<f32> {
        let o = d.class_offsets();
        let all = d.key_data().to_f32(d.dim());
        all[o[c] as usize * d.dim()..o[c + 1] as usize * d.dim()].to_vec()
    }

    #[test]
    fn a_gda_layer_keeps_its_classes() {
        let mut d = draft(KeyDtype::I8, false);
        let gda = OwnedGda {
            weights: vec![0.5; 2 * 4],
            bias: vec![0.0, 1.0],
            alpha: 1.0,
        };
        // Shapes and values are checked; a refusal leaves the draft as it was.
        let short = OwnedGda {
            weights: vec![0.5; 4],
            ..gda.clone()
        };
        assert!(d.set_head(Head::Gda, Some(short)).is_err());
        let nan = OwnedGda {
            bias: vec![f32::NAN, 0.0],
            ..gda.clone()
        };
        assert!(d.set_head(Head::Both, Some(nan)).is_err());
        assert!(d.set_head(Head::Gda, None).is_err());
        assert_eq!((d.head(), d.gda()), (Head::Tip, None));
        d.set_head(Head::Both, Some(gda.clone())).unwrap();
        assert_eq!(d.model().head(), Head::Both);
        // Shots of a known class are fine; a new class has no GDA row: refused, unchanged.
        d.add_shots("a", &[1.0, 0.0, 0.0, 0.0], &src(1), false, None)
            .unwrap();
        let before = d.clone();
        let e = d
            .add_shots("c", &[0.0, 1.0, 0.0, 0.0], &src(1), true, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("GDA layer fitted for 2 classes"), "{e}");
        assert_eq!(d, before);
        // Back to the cache alone: the layer goes, and new classes can be enrolled again.
        d.set_head(Head::Tip, Some(gda)).unwrap();
        assert_eq!(d.gda(), None);
        d.add_shots("c", &[0.0, 1.0, 0.0, 0.0], &src(1), true, None)
            .unwrap();
    }

    #[test]
    fn shots_go_after_their_class_and_leave_other_keys_bit_identical() {
        for dtype in [KeyDtype::I8, KeyDtype::F16, KeyDtype::F32] {
            let mut d = draft(dtype, false);
            let before = d.clone();
            let new = [3.0, 0.0, 4.0, 0.0, 0.0, 1.0, 0.0, 0.0];
            let added = d.add_shots("a", &new, &src(2), false, None).unwrap();
            assert_eq!(
                added,
                AddedShots {
                    class: 0,
                    new_class: false,
                    keys: 2
                }
            );
            assert_eq!(d.class_offsets(), &[0, 4, 7]);
            assert_eq!(d.labels(), &[0, 0, 0, 0, 1, 1, 1]);
            let a = class_keys(&d, 0);
            assert_eq!(&a[..8], class_keys(&before, 0).as_slice(), "{dtype:?}");
            // Stored normalised, in the draft's dtype.
            let expect =
                OwnedKeys::from_f32(dtype, 4, &[0.6, 0.0, 0.8, 0.0, 0.0, 1.0, 0.0, 0.0]).unwrap();
            assert_eq!(&a[8..], expect.as_key_data().to_f32(4).as_slice());
            assert_eq!(class_keys(&d, 1), class_keys(&before, 1));
            assert_eq!(d.provenance, before.provenance, "K stays the drawn K");
            let stored = d.stored_shots().unwrap();
            assert_eq!(stored.labels, &[0, 0]);
            assert_eq!(stored.features, &[0.6, 0.0, 0.8, 0.0, 0.0, 1.0, 0.0, 0.0]);
            assert_eq!(stored.sources, &["shot 0", "shot 1"]);
            // Written as version 3 and read back the same (the writer verifies its output).
            let bytes = crate::pack::encode(&d.contents()).unwrap();
            let p = Pack::from_bytes(&bytes, &crate::pack::Expect::any()).unwrap();
            assert_eq!(p.header().version, 3);
            assert_eq!(p.stored_shots(), d.stored_shots());
            assert_eq!(PackDraft::from_pack(&p), d);
        }
    }

    #[test]
    fn a_new_class_comes_last_with_its_w_row() {
        let mut d = draft(KeyDtype::I8, true);
        let added = d
            .add_shots("c", &[1.0, 0.0, 0.0, 0.0], &src(1), true, Some(&[0.5; 4]))
            .unwrap();
        assert!(added.new_class);
        assert_eq!(added.class, 2);
        assert_eq!(d.class_names(), &["a", "b", "c"]);
        assert_eq!(d.class_offsets(), &[0, 2, 5, 6]);
        assert_eq!(d.text_classifier().unwrap()[8..], [0.5; 4]);
        crate::pack::encode(&d.contents()).unwrap();
        // "new" for a class that exists adds to it.
        let added = d.add_shots("a", &[1.0; 4], &src(1), true, None).unwrap();
        assert!(!added.new_class);
        assert_eq!(d.class_offsets(), &[0, 3, 6, 7]);
    }

    #[test]
    fn refusals_leave_the_draft_unchanged() {
        type Case<'a> = (&'a str, &'a [f32], bool, Option<&'a [f32]>, &'a str);
        let cases: [Case; 7] = [
            ("x", &[1.0; 4], false, None, "not in the pack"),
            ("a", &[1.0; 3], false, None, "whole number"),
            ("a", &[], false, None, "whole number"),
            ("a", &[1.0, f32::NAN, 0.0, 0.0], false, None, "not finite"),
            ("x", &[1.0; 4], true, None, "needs its W row"),
            ("x", &[1.0; 4], true, Some(&[1.0; 3]), "expected 4"),
            ("x\n", &[1.0; 4], true, Some(&[1.0; 4]), "not a class name"),
        ];
        for (name, keys, new, w, why) in cases {
            let mut d = draft(KeyDtype::I8, true);
            let before = d.clone();
            let e = d
                .add_shots(name, keys, &src(keys.len() / 4), new, w)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{name:?}: {e}");
            assert_eq!(d, before);
        }
        let mut d = draft(KeyDtype::F16, false);
        let e = d
            .add_shots("x", &[1.0; 4], &src(1), true, Some(&[1.0; 4]))
            .unwrap_err();
        assert!(e.to_string().contains("no zero-shot classifier"), "{e}");
    }
}
