//! Offline work on a few-shot cache, as library functions returning owned, typed results:
//!
//! - [`keys`]: shots → cache keys (augmented passes averaged, as the official code);
//! - [`build`]: keys + class names (+ W for CLIP) → a [`crate::pack::PackDraft`]; `cache build`;
//! - [`recipes`]: key recipes (plain, flip, crops) chosen on validation (`cache build --val`);
//! - [`search`]: the official α/β grid search; [`tune`]: `tipedge tune`;
//! - [`finetune`]: Tip-Adapter-F (closed-form gradient, PyTorch's AdamW); [`finetune_pack`]:
//!   `tipedge finetune`;
//! - [`calibration`]: the temperature of calibrated probabilities (fitted by `tune` and
//!   `finetune`), NLL / Brier / ECE and the reject option's coverage (`tipedge eval`);
//! - [`gda`]: the GDA head (Gaussian discriminant analysis on the shots' views, ICLR 2024);
//! - [`metrics`], [`evaluate`]: `tipedge eval`;
//! - [`features`]: the store of encoded validation / test features.
//!
//! Everything here is plain Rust on top of [`crate::adapter`] and [`crate::kernel`]; the parts
//! that read images need the `runtime` feature.

#[cfg(feature = "runtime")]
pub mod build;
pub mod calibration;
#[cfg(feature = "runtime")]
pub mod evaluate;
#[cfg(feature = "runtime")]
pub mod features;
pub mod finetune;
#[cfg(feature = "runtime")]
pub mod finetune_pack;
pub mod gda;
#[cfg(feature = "runtime")]
pub mod keys;
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod recipes;
pub mod search;
#[cfg(feature = "runtime")]
pub mod tune;
