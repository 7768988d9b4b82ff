//! Fixed-size raw frames from a byte stream: what `ffmpeg -f rawvideo -pix_fmt nv12 -` or
//! `gst-launch-1.0 ... ! fdsink` write to a pipe.
//!
//! The stream has no headers and no markers: frame `i` is bytes `i*len..(i+1)*len`, so the
//! reader has to be told the frame size
//! ([`crate::preprocess::PixelFormat::packed_len`] computes it from a pixel format and a size). Limits:
//! - One lost or extra byte upstream shifts every later frame; nothing in the data can detect or
//!   repair that. Only a short last frame (end of input inside a frame) is reported.
//! - Short reads (pipes) are gathered into whole frames, `Interrupted` reads are retried; any
//!   other read error ends the stream as `Err`.
//! - Layouts are ffmpeg's with no row padding (`-f rawvideo` writes them packed).

use std::io::{ErrorKind, Read};
use std::time::SystemTime;

use super::source::{FrameSource, Next};

/// Reads frames of exactly `frame_len` bytes, indices 0, 1, 2, …
///
/// A clean end of input at a frame boundary is [`Next::End`]; an end of input inside a frame is
/// one [`Next::Bad`] (`"truncated: N of M bytes before the end of input"`) and then `End`.
pub struct RawReader<R: Read + Send> {
    reader: R,
    frame_len: usize,
    index: u64,
    done: bool,
}

impl<R: Read + Send> RawReader<R> {
    /// A reader of `frame_len`-byte frames from `reader`.
    ///
    /// # Panics
    /// If `frame_len` is 0.
    pub fn new(reader: R, frame_len: usize) -> Self {
        assert!(frame_len > 0, "RawReader: frame_len must be non-zero");
        RawReader {
            reader,
            frame_len,
            index: 0,
            done: false,
        }
    }

    /// The size of one frame in bytes.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Gives the inner reader back.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

impl<R: Read + Send> FrameSource for RawReader<R> {
    fn next(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Next> {
        if self.done {
            return Ok(Next::End);
        }
        // Same length as last time: nothing to do, every byte is overwritten below. Otherwise
        // resize (zero-filling only what is new), never reallocating once the capacity suffices.
        buf.resize(self.frame_len, 0);
        let mut filled = 0;
        while filled < self.frame_len {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    buf.truncate(filled);
                    self.done = true;
                    return Err(e);
                }
            }
        }
        let index = self.index;
        if filled == self.frame_len {
            self.index += 1;
            return Ok(Next::Frame {
                index,
                arrival: SystemTime::now(),
                path: None,
            });
        }
        buf.truncate(filled);
        self.done = true;
        if filled == 0 {
            return Ok(Next::End);
        }
        self.index += 1;
        Ok(Next::Bad {
            index: Some(index),
            what: format!("frame {index}"),
            reason: format!(
                "truncated: {filled} of {} bytes before the end of input",
                self.frame_len
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::stream::test_fixture as fixture;

    /// A `Bad` item's fields.
    type BadItem = (Option<u64>, String, String);

    /// Everything a source yields until `End`, frames as their bytes.
    fn drain(src: &mut impl FrameSource) -> Vec<Result<Vec<u8>, BadItem>> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut expect = 0;
        loop {
            match src.next(&mut buf).unwrap() {
                Next::Frame { index, path, .. } => {
                    assert_eq!(index, expect);
                    assert!(path.is_none());
                    expect += 1;
                    out.push(Ok(buf.clone()));
                }
                Next::Bad {
                    index,
                    what,
                    reason,
                } => {
                    assert_eq!(index, Some(expect));
                    expect += 1;
                    out.push(Err((index, what, reason)));
                }
                Next::End => return out,
            }
        }
    }

    /// A reader that hands out at most `chunk` bytes per call and fails every other call with
    /// `Interrupted`, like a pipe read by a process that receives signals.
    struct Choppy<R> {
        inner: R,
        chunk: usize,
        calls: usize,
    }

    impl<R: Read> Read for Choppy<R> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(ErrorKind::Interrupted.into());
            }
            let n = out.len().min(self.chunk);
            self.inner.read(&mut out[..n])
        }
    }

    /// ffmpeg wrote 3 frames of each layout (tests/data/stream/make.sh): one frame is a third.
    fn third(data: &[u8]) -> usize {
        assert_eq!(data.len() % 3, 0);
        data.len() / 3
    }

    /// The sizes [`crate::preprocess::PixelFormat::packed_len`] gives are ffmpeg's (for the
    /// even sizes the colour conversion takes; the odd-sized fixtures below are split by their
    /// length).
    #[test]
    fn packed_len_matches_ffmpeg_output_sizes() {
        use crate::preprocess::PixelFormat;
        let len = |f: &str, w, h| f.parse::<PixelFormat>().unwrap().packed_len(w, h).unwrap();
        assert_eq!(
            fixture("raw_34x17_3.yuyv422").len(),
            3 * len("yuyv422", 34, 17).unwrap()
        );
        assert_eq!(
            fixture("raw_33x17_3.rgb24").len(),
            3 * len("rgb24", 33, 17).unwrap()
        );
        assert_eq!(
            fixture("raw_33x17_3.gray").len(),
            3 * len("gray", 33, 17).unwrap()
        );
        assert_eq!(len("nv12", 640, 480).unwrap(), 640 * 480 * 3 / 2);
        assert_eq!(len("yuv420p", 640, 480).unwrap(), 640 * 480 * 3 / 2);
        assert!(len("nv12", 33, 17).is_err(), "odd 4:2:0 sizes are refused");
        assert!(len("yuyv422", 33, 17).is_err());
        assert!(len("rgb24", 0, 240).is_err());
        assert!("mjpeg"
            .parse::<PixelFormat>()
            .unwrap()
            .packed_len(8, 8)
            .is_none());
    }

    #[test]
    fn splits_ffmpeg_nv12_into_its_frames() {
        let data = fixture("raw_33x17_3.nv12");
        let len = third(&data);
        let got = drain(&mut RawReader::new(&data[..], len));
        let want: Vec<_> = data.chunks(len).map(|c| Ok(c.to_vec())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn short_and_interrupted_reads_give_the_same_frames() {
        let data = fixture("raw_33x17_3.yuv420p");
        let len = third(&data);
        for chunk in [1, 7, 866, 868, 5000] {
            let mut src = RawReader::new(
                Choppy {
                    inner: &data[..],
                    chunk,
                    calls: 0,
                },
                len,
            );
            let want: Vec<_> = data.chunks(len).map(|c| Ok(c.to_vec())).collect();
            assert_eq!(drain(&mut src), want, "chunk {chunk}");
        }
    }

    #[test]
    fn reads_whole_frames_through_a_real_pipe() {
        let data = fixture("raw_33x17_3.rgb24");
        let len = third(&data);
        let (reader, mut writer) = std::io::pipe().unwrap();
        let sent = data.clone();
        let t = std::thread::spawn(move || {
            // Odd-sized writes with pauses, so the reader sees partial frames.
            for part in sent.chunks(1000) {
                writer.write_all(part).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let got = drain(&mut RawReader::new(reader, len));
        t.join().unwrap();
        let want: Vec<_> = data.chunks(len).map(|c| Ok(c.to_vec())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn truncated_last_frame_is_bad_then_end() {
        let data = fixture("raw_33x17_3.gray");
        let len = third(&data);
        let cut = &data[..data.len() - 5];
        let mut src = RawReader::new(cut, len);
        let got = drain(&mut src);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok(data[..len].to_vec()));
        assert_eq!(got[1], Ok(data[len..2 * len].to_vec()));
        assert_eq!(
            got[2],
            Err((
                Some(2),
                "frame 2".to_string(),
                format!(
                    "truncated: {} of {len} bytes before the end of input",
                    len - 5
                )
            ))
        );
        // End stays End.
        assert!(matches!(src.next(&mut Vec::new()).unwrap(), Next::End));
    }

    #[test]
    fn empty_input_is_end_and_read_errors_are_err() {
        let mut src = RawReader::new(&[][..], 6);
        assert!(matches!(src.next(&mut Vec::new()).unwrap(), Next::End));

        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("pipe broke"))
            }
        }
        let mut src = RawReader::new(Broken, 6);
        let e = src.next(&mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "pipe broke");
    }

    #[test]
    fn no_reallocation_after_the_first_frame() {
        let data = fixture("raw_33x17_3.bgr24");
        let len = third(&data);
        let mut src = RawReader::new(&data[..], len);
        let mut buf = Vec::new();
        assert!(matches!(src.next(&mut buf).unwrap(), Next::Frame { .. }));
        let ptr = buf.as_ptr();
        for _ in 0..2 {
            assert!(matches!(src.next(&mut buf).unwrap(), Next::Frame { .. }));
            assert_eq!(buf.as_ptr(), ptr);
        }
    }
}
