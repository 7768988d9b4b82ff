//! One error type for the library. Every variant renders as a single line that names the file
//! (or the thing) at fault and the reason, because that line is what a user of a camera pipeline
//! sees in a log.

use std::path::{Path, PathBuf};

/// The library's error: `"<file>: <reason>"` on one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image could not be read, decoded or accepted (size limit, empty file, ...).
    #[error("{}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    /// A model graph or its sidecar is missing, malformed, or disagrees with the other.
    #[error("{}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    /// A few-shot data set folder is unusable (no classes, empty class, ...).
    #[error("{}: {reason}", path.display())]
    Dataset { path: PathBuf, reason: String },
    /// An adapter pack is missing, corrupt, or built for another model; also a pack that could
    /// not be written.
    #[error("{}: {reason}", path.display())]
    Pack { path: PathBuf, reason: String },
    /// A camera frame was refused (bad size, stride, buffer, corrupt JPEG) or could not be
    /// classified; `index` counts a session's frames from 0.
    #[error("frame {index}: {reason}")]
    Frame { index: u64, reason: String },
    /// Inputs that do not fit together (dimensions, class counts, ...), no file involved.
    #[error("{0}")]
    Invalid(String),
    /// A failure inside tract while running a graph that loaded fine.
    #[error("inference failed: {0}")]
    Inference(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn image(path: impl AsRef<Path>, reason: impl std::fmt::Display) -> Self {
        Error::Image {
            path: path.as_ref().to_path_buf(),
            reason: one_line(reason),
        }
    }
    pub fn model(path: impl AsRef<Path>, reason: impl std::fmt::Display) -> Self {
        Error::Model {
            path: path.as_ref().to_path_buf(),
            reason: one_line(reason),
        }
    }
    pub fn dataset(path: impl AsRef<Path>, reason: impl std::fmt::Display) -> Self {
        Error::Dataset {
            path: path.as_ref().to_path_buf(),
            reason: one_line(reason),
        }
    }
    pub fn frame(index: u64, reason: impl std::fmt::Display) -> Self {
        Error::Frame {
            index,
            reason: one_line(reason),
        }
    }
    pub fn pack(path: impl AsRef<Path>, reason: impl std::fmt::Display) -> Self {
        Error::Pack {
            path: path.as_ref().to_path_buf(),
            reason: one_line(reason),
        }
    }
}

/// Error chains from tract and the codecs can span lines; a log line must not.
pub(crate) fn one_line(reason: impl std::fmt::Display) -> String {
    let s = reason.to_string();
    let mut out = String::with_capacity(s.len());
    for (i, part) in s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(part);
    }
    out
}

/// `std::io::Error` without the "(os error 2)" noise.
#[cfg(feature = "runtime")]
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Renders a tract error with its causes on one line (`{:#}` of anyhow).
#[cfg(feature = "runtime")]
pub(crate) fn tract_reason(e: &tract_onnx::prelude::TractError) -> String {
    one_line(format!("{e:#}"))
}
