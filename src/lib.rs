//! tipedge: few-shot-adapted CLIP (Tip-Adapter, CoOp) on edge CPUs, with tract.
//!
//! The online path (see ARCHITECTURE.md): a camera frame ([`preprocess::FrameRef`]) →
//! [`preprocess`] → [`encoder`] (tract) → unit-norm feature → [`classifier::Classifier`]
//! (zero-shot term + affinity [`kernel`] over the keys of a memory-mapped [`pack`]) → top-k,
//! all owned by one reusable [`session::Session`]. Offline ([`train`]): few-shot folders
//! ([`dataset`]) → cache keys, class names × templates → [`zeroshot`] W, the α/β search,
//! Tip-Adapter-F, evaluation; results are typed values and [`record`]s.
//!
//! Without the `runtime` feature the crate is the layers that need neither tract nor image
//! decoding: [`kernel`], [`pack`], [`adapter`], [`classifier`] and the arithmetic of [`train`].

pub mod adapter;
#[cfg(feature = "runtime")]
pub mod bench;
pub mod classifier;
#[cfg(feature = "runtime")]
pub mod coop;
#[cfg(feature = "runtime")]
pub mod dataset;
#[cfg(feature = "runtime")]
pub mod device;
#[cfg(feature = "runtime")]
pub mod embed;
#[cfg(feature = "runtime")]
pub mod encoder;
pub mod error;
#[cfg(feature = "runtime")]
pub mod files;
pub mod kernel;
pub mod pack;
#[cfg(feature = "runtime")]
pub mod preprocess;
pub mod progress;
#[cfg(feature = "runtime")]
pub mod record;
pub mod rng;
#[cfg(feature = "runtime")]
pub mod session;
#[cfg(feature = "runtime")]
pub mod sidecar;
#[cfg(feature = "runtime")]
pub mod stream;
pub mod tda;
#[cfg(feature = "runtime")]
pub mod text;
pub mod train;
#[cfg(feature = "runtime")]
pub mod zeroshot;

pub use error::{Error, Result};
