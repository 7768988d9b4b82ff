//! tipedge: few-shot-adapted CLIP (Tip-Adapter, CoOp) on edge CPUs, with tract.
//!
//! Data flow (see DESIGN.md): image → [`preprocess`] → [`encoder`] (tract) → unit-norm feature →
//! [`adapter`] (zero-shot term + cache term) → top-k. Offline: [`dataset`] folders → cache keys;
//! class names × templates → [`zeroshot`] classifier W.

pub mod adapter;
pub mod dataset;
pub mod encoder;
pub mod error;
pub mod pipeline;
pub mod preprocess;
pub mod sidecar;
pub mod zeroshot;

pub use error::{Error, Result};
