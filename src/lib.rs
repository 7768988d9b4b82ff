//! tipedge: few-shot-adapted CLIP (Tip-Adapter, CoOp) on edge CPUs, with tract.
//!
//! Data flow (see DESIGN.md): image → [`preprocess`] → [`encoder`] (tract) → unit-norm feature →
//! [`adapter`] (zero-shot term + cache term) → top-k. Offline: [`dataset`] folders → cache keys;
//! class names × templates → [`zeroshot`] classifier W.

pub mod adapter;
#[cfg(feature = "runtime")]
pub mod dataset;
#[cfg(feature = "runtime")]
pub mod encoder;
pub mod error;
pub mod kernel;
pub mod pack;
#[cfg(feature = "runtime")]
pub mod pipeline;
#[cfg(feature = "runtime")]
pub mod preprocess;
pub mod rng;
#[cfg(feature = "runtime")]
pub mod sidecar;
#[cfg(feature = "runtime")]
pub mod text;
pub mod train;
#[cfg(feature = "runtime")]
pub mod zeroshot;

pub use error::{Error, Result};
