//! What a stream reads from: one trait, three readers ([`super::raw`], [`super::mjpeg`],
//! [`super::watch`]).

use std::path::PathBuf;
use std::time::SystemTime;

/// What a source yields for one call of [`FrameSource::next`].
#[derive(Debug)]
pub enum Next {
    /// One whole frame (raw pixels, one JPEG, or a file's bytes) is now in the caller's buffer.
    Frame {
        index: u64,
        arrival: SystemTime,
        path: Option<PathBuf>,
    },
    /// Something that could not become a frame: skipped and reported; the stream goes on.
    /// `what` names it for a person ("frame 12", "bytes 4096..4160", a file path); `reason` is
    /// one line without a trailing period.
    Bad {
        index: Option<u64>,
        what: String,
        reason: String,
    },
    /// End of input (or the stop flag was raised).
    End,
}

pub trait FrameSource: Send {
    /// Reads the next item. `buf` is the caller's reusable buffer: cleared and filled with the
    /// frame's bytes; after warm-up (once its capacity suffices) no allocation per frame.
    fn next(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Next>;
}

/// One frame's bytes offered `n` times, from memory: benchmarks and tests of the pipeline
/// without a camera (`tipedge bench stream`).
#[derive(Debug, Clone)]
pub struct RepeatSource {
    frame: Vec<u8>,
    left: u64,
    index: u64,
}

impl RepeatSource {
    pub fn new(frame: Vec<u8>, n: u64) -> RepeatSource {
        RepeatSource {
            frame,
            left: n,
            index: 0,
        }
    }
}

impl FrameSource for RepeatSource {
    fn next(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Next> {
        if self.left == 0 {
            return Ok(Next::End);
        }
        self.left -= 1;
        buf.clear();
        buf.extend_from_slice(&self.frame);
        self.index += 1;
        Ok(Next::Frame {
            index: self.index - 1,
            arrival: SystemTime::now(),
            path: None,
        })
    }
}
