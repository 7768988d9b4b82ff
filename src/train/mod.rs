//! Offline work on a few-shot cache: the α/β search, Tip-Adapter-F fine-tuning, evaluation
//! metrics and (with the `runtime` feature) the store of encoded features that lets tuning and
//! evaluation run without re-encoding. Everything here is plain Rust on top of [`crate::kernel`]:
//! the gradient of Tip-Adapter-F is closed-form, so no autodiff framework is involved.

#[cfg(feature = "runtime")]
pub mod features;
pub mod finetune;
pub mod metrics;
pub mod search;
