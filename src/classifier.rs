//! [`Classifier`]: everything that turns a unit-norm image feature into class logits, owned and
//! ready — the keys (a memory-mapped pack, or an owned [`PackDraft`]), the zero-shot classifier
//! W, the [`AdapterParams`] read from the pack in one place, the class names and the dispatched
//! affinity kernel. It is immutable and `Send + Sync`: a [`crate::session::Session`], a daemon's
//! worker threads, the C ABI and Python share one through an `Arc` and swap it for another
//! between two frames.
//!
//! Scoring needs a [`ScoreScratch`] (the kernel's staging buffers and the class sums). It belongs
//! to the caller, one per thread ([`Classifier::scratch`]), so that sessions sharing a classifier
//! never wait on each other and the classifier needs no lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::adapter::{AdapterParams, ScoreScratch, TipAdapter};
use crate::error::Result;
use crate::kernel::{Kernel, KeyDtype};
use crate::pack::{EncoderId, Expect, Pack, PackDraft};

/// Where the keys live.
#[derive(Debug, Clone)]
enum Store {
    /// A verified pack file, memory-mapped: the keys are never copied.
    Mapped(Arc<Pack>),
    /// Built in memory (from shots, or a pack being edited).
    Owned(Arc<PackDraft>),
}

/// A ready classifier (see the module documentation).
#[derive(Debug, Clone)]
pub struct Classifier {
    store: Store,
    params: AdapterParams,
    /// The temperature fitted for `params` (none once the parameters are overridden).
    temperature: Option<f32>,
    kernel: Kernel,
    /// What predictions name as their pack (a device's slot and sha256 prefix).
    label: Option<Arc<str>>,
}

impl Classifier {
    /// Maps and verifies the pack at `path` (every checksum and count) and refuses one that
    /// does not meet `expect` (feature dimension, image encoder fingerprint).
    pub fn open(path: impl AsRef<Path>, expect: &Expect) -> Result<Classifier> {
        Ok(Classifier::from_pack(Arc::new(Pack::open(path, expect)?)))
    }

    /// A classifier over an open pack, with the pack's α, β and logit scale.
    pub fn from_pack(pack: Arc<Pack>) -> Classifier {
        Classifier {
            params: pack.params(),
            temperature: pack.temperature(),
            store: Store::Mapped(pack),
            kernel: Kernel::detect(),
            label: None,
        }
    }

    /// A classifier over keys built in memory, with the draft's α, β and logit scale.
    pub fn from_draft(draft: PackDraft) -> Classifier {
        Classifier {
            params: draft.params,
            temperature: draft.temperature,
            store: Store::Owned(Arc::new(draft)),
            kernel: Kernel::detect(),
            label: None,
        }
    }

    /// The same keys and W scored with other parameters (`--alpha`, `--beta`); refuses
    /// non-finite values. A temperature fitted for the old parameters no longer applies and is
    /// dropped (probabilities become `softmax(logits)`) unless the parameters are unchanged.
    pub fn with_params(self, params: AdapterParams) -> Result<Classifier> {
        params.check()?;
        let temperature = self.temperature.filter(|_| params == self.params);
        Ok(Classifier {
            params,
            temperature,
            ..self
        })
    }

    /// Names the pack in every prediction it makes (`"pack"` in the records), e.g. `a:1f2e3d4c5b6a`.
    pub fn with_label(self, label: &str) -> Classifier {
        Classifier {
            label: Some(label.into()),
            ..self
        }
    }

    /// The pack's name in predictions, if given.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// Uses `kernel` instead of the detected one (tests, benchmarks).
    pub fn with_kernel(self, kernel: Kernel) -> Classifier {
        Classifier { kernel, ..self }
    }

    /// The model this classifier scores with: keys, W, the head (GDA layer) and parameters.
    pub fn model(&self) -> TipAdapter<'_> {
        let m = match &self.store {
            Store::Mapped(p) => p.model(),
            Store::Owned(d) => d.model(),
        };
        m.with_params(self.params)
    }

    pub fn params(&self) -> AdapterParams {
        self.params
    }
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
    pub fn class_names(&self) -> &[String] {
        match &self.store {
            Store::Mapped(p) => p.class_names(),
            Store::Owned(d) => d.class_names(),
        }
    }
    pub fn n_classes(&self) -> usize {
        self.class_names().len()
    }
    /// Feature dimension C.
    pub fn dim(&self) -> usize {
        match &self.store {
            Store::Mapped(p) => p.dim(),
            Store::Owned(d) => d.dim(),
        }
    }
    pub fn n_keys(&self) -> usize {
        match &self.store {
            Store::Mapped(p) => p.n_keys(),
            Store::Owned(d) => d.n_keys(),
        }
    }
    pub fn key_dtype(&self) -> KeyDtype {
        match &self.store {
            Store::Mapped(p) => p.key_dtype(),
            Store::Owned(d) => d.key_dtype(),
        }
    }
    /// Whether W is present (CLIP) or the cache term stands alone (image-only backbones).
    pub fn has_text_classifier(&self) -> bool {
        self.model().classifier().is_some()
    }
    /// The temperature of calibrated probabilities (`softmax(logits / T)`), if the pack has one
    /// for these parameters.
    pub fn temperature(&self) -> Option<f32> {
        self.temperature
    }
    /// The image encoder the keys were made with.
    pub fn encoder(&self) -> &EncoderId {
        match &self.store {
            Store::Mapped(p) => p.encoder(),
            Store::Owned(d) => &d.encoder,
        }
    }
    /// The pack file behind the keys, if they are memory-mapped.
    pub fn pack(&self) -> Option<&Pack> {
        match &self.store {
            Store::Mapped(p) => Some(p),
            Store::Owned(_) => None,
        }
    }
    /// The pack file's path, if any.
    pub fn path(&self) -> Option<PathBuf> {
        self.pack().map(|p| p.path().to_path_buf())
    }

    /// Work buffers for this classifier's shape; one per scoring thread.
    pub fn scratch(&self) -> ScoreScratch {
        ScoreScratch::new(self.dim(), self.n_classes())
    }

    /// Logits of up to [`crate::kernel::MAX_BATCH`] unit-norm features (`batch × dim` in,
    /// `batch × n_classes` out). Allocates nothing.
    pub fn logits(
        &self,
        scratch: &mut ScoreScratch,
        features: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        self.model()
            .logits_batch(&self.kernel, scratch, features, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::Provenance;

    fn draft() -> PackDraft {
        PackDraft::from_f32_keys(
            2,
            vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8],
            vec![1, 0, 1],
            vec!["a".into(), "b".into()],
            None,
            AdapterParams {
                alpha: 2.0,
                beta: 3.0,
                logit_scale: 100.0,
            },
            EncoderId {
                name: "test".into(),
                sha256: [7; 32],
            },
            Provenance::default(),
        )
        .unwrap()
    }

    #[test]
    fn owned_and_mapped_classifiers_score_alike() {
        let d = draft();
        assert_eq!(d.labels(), &[0, 1, 1]);
        assert_eq!(d.class_offsets(), &[0, 1, 3]);
        let owned = Classifier::from_draft(d.clone());
        let bytes = crate::pack::encode(&d.contents()).unwrap();
        let mapped =
            Classifier::from_pack(Arc::new(Pack::from_bytes(&bytes, &Expect::any()).unwrap()));
        let (mut a, mut b) = ([0f32; 2], [0f32; 2]);
        owned
            .logits(&mut owned.scratch(), &[1.0, 0.0], &mut a)
            .unwrap();
        mapped
            .logits(&mut mapped.scratch(), &[1.0, 0.0], &mut b)
            .unwrap();
        assert_eq!(a, b);
        let e = |s: f32| 2.0 * (-3.0 * (1.0 - s)).exp();
        assert!((a[0] - e(0.0)).abs() < 1e-6);
        assert!((a[1] - (e(1.0) + e(0.6))).abs() < 1e-6);
        assert_eq!(owned.class_names(), mapped.class_names());
        assert_eq!(owned.encoder(), mapped.encoder());
        let tuned = owned.with_params(AdapterParams::default()).unwrap();
        assert_eq!(tuned.params(), AdapterParams::default());
        assert!(tuned
            .with_params(AdapterParams {
                beta: f32::INFINITY,
                ..AdapterParams::default()
            })
            .is_err());
    }

    #[test]
    fn classifiers_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Classifier>();
    }
}
