//! Concatenated JPEG frames (`ffmpeg ... -f mjpeg -`, a camera's MJPEG mode), split by walking
//! the JPEG marker structure (ITU-T T.81, annex B), not by searching for `FF D9`.
//!
//! How a frame is found:
//! - A frame starts at `FF D8 FF` (SOI followed by the first marker's `FF`). Bytes before it
//!   are garbage: each run is reported once as [`Next::Bad`] with its stream byte range.
//! - After SOI, segments are walked: markers with a 2-byte length (APPn, DQT, DHT, SOFn, DRI,
//!   COM, SOS, …, every code except the ones below) are skipped by their length, so an EXIF
//!   thumbnail or a comment holding `FF D9` does not end the frame. Fill bytes (`FF FF…`)
//!   before a marker are kept. TEM (`FF 01`) and RSTn (`FF D0`–`FF D7`) have no length.
//! - After an SOS header, the entropy-coded data runs until a marker other than `FF 00`
//!   (byte stuffing), RSTn and fill bytes. Progressive JPEGs (several scans, DHT between them)
//!   and restart intervals need nothing special.
//! - EOI (`FF D9`) ends the frame; a frame is handed out as soon as its EOI has been read, so a
//!   live stream is not delayed by one frame.
//!
//! What is reported as a bad frame (the frame index counts it, the stream goes on):
//! - the end of input before EOI (`truncated JPEG: end of input before EOI`);
//! - a segment length below 2, a byte other than `FF` where a marker must be, `FF 00` outside
//!   a scan, EOI with no scan before it;
//! - an SOI inside a frame (a frame cut short by the next one): the reader resynchronises at
//!   that SOI, so the next frame is not lost;
//! - a frame longer than `max_frame_bytes`: it is still walked to its end (so its bytes are not
//!   mistaken for garbage) but not kept: memory stays bounded, the time to skip it does not.
//!
//! After a broken frame the reader skips, silently, to the next `FF D8 FF`: the rest of the
//! broken frame is part of the one report, not a second one as garbage.
//!
//! Limits:
//! - This is a framing parser: entropy-coded data is not decoded. Bytes lost inside a scan
//!   leave a well-formed frame that is handed out as it is; the JPEG decoder reports (or
//!   shows) the damage.
//! - A frame cut inside a header segment and followed by the next frame can take the start of
//!   that next frame with it (the length says to skip it); the reader then resynchronises at
//!   the frame after.
//! - Between segments only `FF` may stand: stray bytes there make the frame bad (libjpeg
//!   skips them with a warning; a splitter that guessed would hand out more broken frames).
//! - Cameras that pad each frame after EOI (zeros up to a buffer size) get one garbage report
//!   per padded frame.
//! - A run of garbage longer than `max_frame_bytes` is reported in pieces of that size, so a
//!   stream that never has a frame still reports something.

use std::io::{ErrorKind, Read};
use std::time::SystemTime;

use super::source::{FrameSource, Next};

/// Default cap on one frame's size: 64 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

/// Size of the internal read buffer.
const READ_BUF_BYTES: usize = 64 << 10;

/// How a frame's walk ended.
enum Walk {
    /// EOI read; the number of scans seen.
    Eoi { scans: u32 },
    /// End of input before EOI.
    Truncated,
    /// Structurally broken: the reason.
    Broken(String),
    /// An SOI at this stream offset, before EOI: the reader stands on it.
    NewSoi(u64),
}

/// Splits a byte stream of concatenated JPEGs into frames (see the module doc).
pub struct MjpegReader<R: Read + Send> {
    reader: R,
    rbuf: Box<[u8]>,
    /// Unread bytes are `rbuf[pos..end]`.
    pos: usize,
    end: usize,
    /// Stream offset of `rbuf[pos]`.
    offset: u64,
    eof: bool,
    /// Index of the next frame.
    index: u64,
    max_frame_bytes: usize,
    /// The current frame went over `max_frame_bytes`: its bytes are no longer kept.
    oversized: bool,
    /// Skip to the next SOI without reporting the bytes (the rest of a broken frame).
    quiet: bool,
}

impl<R: Read + Send> MjpegReader<R> {
    /// A splitter over `reader`; frames longer than `max_frame_bytes` are reported and skipped
    /// ([`DEFAULT_MAX_FRAME_BYTES`] is a sensible value).
    pub fn new(reader: R, max_frame_bytes: usize) -> Self {
        MjpegReader {
            reader,
            rbuf: vec![0; READ_BUF_BYTES].into_boxed_slice(),
            pos: 0,
            end: 0,
            offset: 0,
            eof: false,
            index: 0,
            max_frame_bytes,
            oversized: false,
            quiet: false,
        }
    }

    /// Stream offset of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Gives the inner reader back (bytes already buffered are lost).
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// Makes at least `n` (≤ 4) unread bytes available; `false` if the input ends first.
    fn ensure(&mut self, n: usize) -> std::io::Result<bool> {
        while self.end - self.pos < n {
            if self.eof {
                return Ok(false);
            }
            if self.pos == self.end {
                self.pos = 0;
                self.end = 0;
            } else if self.pos + n > self.rbuf.len() {
                self.rbuf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            }
            match self.reader.read(&mut self.rbuf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Consumes `n` buffered bytes, discarding them.
    fn skip(&mut self, n: usize) {
        self.pos += n;
        self.offset += n as u64;
    }

    /// Consumes `n` buffered bytes of the current frame into `buf` (unless it is oversized).
    fn take(&mut self, n: usize, buf: &mut Vec<u8>) {
        if !self.oversized {
            if buf.len() + n > self.max_frame_bytes {
                self.oversized = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&self.rbuf[self.pos..self.pos + n]);
            }
        }
        self.skip(n);
    }

    /// Skips to the next `FF D8 FF`. Returns the number of bytes skipped and whether an SOI
    /// was found (else the input ended or `limit` bytes were skipped).
    fn hunt(&mut self, limit: u64) -> std::io::Result<(u64, bool)> {
        let mut skipped = 0u64;
        loop {
            if !self.ensure(3)? {
                let rest = self.end - self.pos;
                self.skip(rest);
                return Ok((skipped + rest as u64, false));
            }
            let win = &self.rbuf[self.pos..self.end];
            let found = win
                .windows(3)
                .position(|w| w == [0xFF, 0xD8, 0xFF].as_slice());
            // Without a match, keep the last 2 bytes: they may start one.
            let n = found.unwrap_or(win.len() - 2);
            let n = usize::try_from(limit - skipped).map_or(n, |room| n.min(room));
            self.skip(n);
            skipped += n as u64;
            if found == Some(n) {
                return Ok((skipped, true));
            }
            if skipped >= limit {
                return Ok((skipped, false));
            }
        }
    }

    /// Walks one frame whose SOI is the next unread byte, copying it into `buf`.
    fn walk(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Walk> {
        self.take(2, buf); // SOI: hunt() made 3 bytes available
        let mut scans = 0u32;
        loop {
            if !self.ensure(2)? {
                return Ok(Walk::Truncated);
            }
            let at = self.offset;
            let (lead, code) = (self.rbuf[self.pos], self.rbuf[self.pos + 1]);
            if lead != 0xFF {
                return Ok(Walk::Broken(format!(
                    "expected a marker at byte {at}, found 0x{lead:02X}"
                )));
            }
            match code {
                0xFF => self.take(1, buf), // fill byte before a marker
                0xD8 => return Ok(Walk::NewSoi(at)),
                0xD9 => {
                    self.take(2, buf);
                    return Ok(Walk::Eoi { scans });
                }
                0x01 | 0xD0..=0xD7 => self.take(2, buf), // TEM, RSTn: no length
                0x00 => {
                    return Ok(Walk::Broken(format!(
                        "invalid marker FF00 at byte {at} outside a scan"
                    )))
                }
                _ => {
                    if !self.ensure(4)? {
                        return Ok(Walk::Truncated);
                    }
                    let len =
                        u16::from_be_bytes([self.rbuf[self.pos + 2], self.rbuf[self.pos + 3]]);
                    if len < 2 {
                        return Ok(Walk::Broken(format!(
                            "segment FF{code:02X} at byte {at} has length {len}, less than 2"
                        )));
                    }
                    self.take(4, buf);
                    let mut left = usize::from(len) - 2;
                    while left > 0 {
                        if !self.ensure(1)? {
                            return Ok(Walk::Truncated);
                        }
                        let n = left.min(self.end - self.pos);
                        self.take(n, buf);
                        left -= n;
                    }
                    if code == 0xDA {
                        scans += 1;
                        if !self.scan(buf)? {
                            return Ok(Walk::Truncated);
                        }
                    }
                }
            }
        }
    }

    /// Copies entropy-coded data up to the next marker that ends it; `false` at end of input.
    fn scan(&mut self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        loop {
            if !self.ensure(1)? {
                return Ok(false);
            }
            let win = &self.rbuf[self.pos..self.end];
            match win.iter().position(|&b| b == 0xFF) {
                None => self.take(win.len(), buf),
                Some(i) => {
                    self.take(i, buf);
                    if !self.ensure(2)? {
                        return Ok(false);
                    }
                    match self.rbuf[self.pos + 1] {
                        // Stuffed FF, restart marker: still data.
                        0x00 | 0xD0..=0xD7 => self.take(2, buf),
                        // Fill byte: look at what follows it.
                        0xFF => self.take(1, buf),
                        _ => return Ok(true),
                    }
                }
            }
        }
    }
}

impl<R: Read + Send> FrameSource for MjpegReader<R> {
    fn next(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Next> {
        buf.clear();
        let start = self.offset;
        let limit = if self.quiet {
            u64::MAX
        } else {
            self.max_frame_bytes.max(1) as u64
        };
        let (skipped, found) = self.hunt(limit)?;
        let quiet = std::mem::replace(&mut self.quiet, false);
        if skipped > 0 && !quiet {
            let reason = if found {
                format!("{skipped} bytes of garbage before a JPEG frame")
            } else if self.eof && self.pos == self.end {
                format!("{skipped} bytes of garbage after the last JPEG frame")
            } else {
                format!("{skipped} bytes of garbage, no JPEG frame start yet")
            };
            return Ok(Next::Bad {
                index: None,
                what: format!("bytes {start}..{}", self.offset),
                reason,
            });
        }
        if !found {
            return Ok(Next::End);
        }

        let index = self.index;
        self.index += 1;
        self.oversized = false;
        let walk = self.walk(buf)?;
        let bad = |reason: String| Next::Bad {
            index: Some(index),
            what: format!("frame {index}"),
            reason,
        };
        // After a frame that did not end at its EOI, skip silently to the next SOI.
        self.quiet = !matches!(walk, Walk::Eoi { .. });
        if self.oversized {
            buf.clear();
            return Ok(bad(format!(
                "frame larger than {} bytes: skipped",
                self.max_frame_bytes
            )));
        }
        Ok(match walk {
            Walk::Eoi { scans: 0 } => {
                buf.clear();
                bad("no scan (SOS) before EOI".into())
            }
            Walk::Eoi { .. } => Next::Frame {
                index,
                arrival: SystemTime::now(),
                path: None,
            },
            Walk::Truncated => {
                buf.clear();
                bad("truncated JPEG: end of input before EOI".into())
            }
            Walk::Broken(reason) => {
                buf.clear();
                bad(reason)
            }
            Walk::NewSoi(at) => {
                buf.clear();
                bad(format!(
                    "an SOI at byte {at} before EOI (frame cut short): resynchronised there"
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use crate::stream::test_fixture as fixture;

    /// The 48 textile query JPEGs, in path order.
    fn textile() -> Vec<(PathBuf, Vec<u8>)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/textile/query");
        let mut files = Vec::new();
        for class in std::fs::read_dir(&root).unwrap() {
            for f in std::fs::read_dir(class.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if p.extension().is_some_and(|e| e == "jpg") {
                    let bytes = std::fs::read(&p).unwrap();
                    files.push((p, bytes));
                }
            }
        }
        files.sort();
        assert_eq!(
            files.len(),
            48,
            "textile query JPEGs under {}",
            root.display()
        );
        files
    }

    #[derive(Debug, PartialEq, Clone)]
    enum Item {
        Frame(u64, Vec<u8>),
        Bad(Option<u64>, String, String),
    }

    fn bad(index: Option<u64>, what: &str, reason: &str) -> Item {
        Item::Bad(index, what.to_string(), reason.to_string())
    }

    /// Everything the reader yields until `End`; checks along the way that each frame is the
    /// stream bytes just before the reader's offset (so it was copied whole and in order).
    fn split<R: Read + Send>(reader: R, max: usize, input: Option<&[u8]>) -> Vec<Item> {
        let mut src = MjpegReader::new(reader, max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for _ in 0..100_000 {
            match src.next(&mut buf).unwrap() {
                Next::Frame { index, path, .. } => {
                    assert!(path.is_none());
                    if let Some(input) = input {
                        let end = src.offset() as usize;
                        assert_eq!(&input[end - buf.len()..end], &buf[..]);
                    }
                    out.push(Item::Frame(index, buf.clone()));
                }
                Next::Bad {
                    index,
                    what,
                    reason,
                } => {
                    assert!(!reason.ends_with('.') && !reason.contains('\n'), "{reason}");
                    out.push(Item::Bad(index, what, reason));
                }
                Next::End => {
                    assert!(matches!(src.next(&mut buf).unwrap(), Next::End));
                    return out;
                }
            }
        }
        panic!("no End after 100000 items");
    }

    /// Hands out one byte per `read` call.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || out.is_empty() {
                return Ok(0);
            }
            out[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    fn frames(items: &[Item]) -> Vec<Vec<u8>> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Frame(_, f) => Some(f.clone()),
                Item::Bad(..) => None,
            })
            .collect()
    }

    /// Offsets of `FF D8 FF E0` (every ffmpeg MJPEG frame starts with SOI + JFIF APP0).
    fn jfif_starts(data: &[u8]) -> Vec<usize> {
        data.windows(4)
            .enumerate()
            .filter(|(_, w)| *w == [0xFF, 0xD8, 0xFF, 0xE0])
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn splits_ffmpeg_testsrc_stream() {
        let data = fixture("testsrc_320x240_20.mjpeg");
        let got = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        let starts = jfif_starts(&data);
        assert_eq!(starts.len(), 20);
        assert_eq!(got.len(), 20);
        for (i, item) in got.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(data.len());
            assert_eq!(
                item,
                &Item::Frame(i as u64, data[starts[i]..end].to_vec()),
                "frame {i}"
            );
        }
    }

    #[test]
    fn splits_concatenated_textile_jpegs_byte_for_byte() {
        let files = textile();
        let data: Vec<u8> = files.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        let got = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        let want: Vec<Item> = files
            .iter()
            .enumerate()
            .map(|(i, (_, b))| Item::Frame(i as u64, b.clone()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn one_byte_reads_and_a_real_pipe_give_the_same_items() {
        let files = textile();
        let mut data = b"\x00\xFF\xD8junk".to_vec();
        for (_, b) in &files[..6] {
            data.extend_from_slice(b);
            data.extend_from_slice(b"\xFF\xFF\xD9 between");
        }
        data.extend_from_slice(&files[6].1[..5000]);
        let want = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        assert_eq!(frames(&want).len(), 6);
        assert_eq!(want.len(), 1 + 6 + 6 + 1); // garbage, frames and garbage, truncated frame
        assert_eq!(
            split(OneByte(&data), DEFAULT_MAX_FRAME_BYTES, Some(&data)),
            want
        );

        let (reader, mut writer) = std::io::pipe().unwrap();
        let sent = data.clone();
        let t = std::thread::spawn(move || {
            for part in sent.chunks(777) {
                writer.write_all(part).unwrap();
            }
        });
        assert_eq!(split(reader, DEFAULT_MAX_FRAME_BYTES, Some(&data)), want);
        t.join().unwrap();
    }

    #[test]
    fn garbage_before_between_and_after_frames_is_reported_by_byte_range() {
        let f = textile();
        let (a, b, c) = (&f[0].1, &f[1].1, &f[2].1);
        // Near misses: SOI not followed by FF, EOI, fill bytes, a lone FF at the end.
        let g1 = b"\xFF\xD8\x00\xFF\xD9hello\xFF\xFF";
        let g2 = b"\xFF\xD8\x00\xFF"; // the FF is followed by the next frame's FF D8 FF
        let g3 = b"tail\xFF\xD8\x00\xFF";
        let data = [&g1[..], a, g2, b, c, g3].concat();
        let o_b = g1.len() + a.len(); // offset of g2
        let o_g3 = o_b + g2.len() + b.len() + c.len();
        let got = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        let want = vec![
            bad(
                None,
                "bytes 0..12",
                "12 bytes of garbage before a JPEG frame",
            ),
            Item::Frame(0, a.clone()),
            bad(
                None,
                &format!("bytes {o_b}..{}", o_b + 4),
                "4 bytes of garbage before a JPEG frame",
            ),
            Item::Frame(1, b.clone()),
            Item::Frame(2, c.clone()),
            bad(
                None,
                &format!("bytes {o_g3}..{}", data.len()),
                "8 bytes of garbage after the last JPEG frame",
            ),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn truncated_last_frame_is_bad_then_end() {
        let f = textile();
        let data = [&f[0].1[..], &f[1].1, &f[2].1[..f[2].1.len() / 2]].concat();
        let got = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        assert_eq!(
            got,
            vec![
                Item::Frame(0, f[0].1.clone()),
                Item::Frame(1, f[1].1.clone()),
                bad(
                    Some(2),
                    "frame 2",
                    "truncated JPEG: end of input before EOI"
                ),
            ]
        );
        // Cut inside a header segment and right after SOI: also truncated.
        for cut in [3, 30] {
            let got = split(&f[0].1[..cut], DEFAULT_MAX_FRAME_BYTES, None);
            assert_eq!(
                got,
                vec![bad(
                    Some(0),
                    "frame 0",
                    "truncated JPEG: end of input before EOI"
                )]
            );
        }
        // A lone SOI at the very end is not yet a frame start (that needs `FF D8 FF`).
        let got = split(&f[0].1[..2], DEFAULT_MAX_FRAME_BYTES, None);
        assert_eq!(
            got,
            vec![bad(
                None,
                "bytes 0..2",
                "2 bytes of garbage after the last JPEG frame"
            )]
        );
    }

    #[test]
    fn frame_cut_short_by_the_next_soi_resynchronises_there() {
        let f = textile();
        let half = f[0].1.len() / 2;
        let data = [&f[0].1[..half], &f[1].1, &f[2].1].concat();
        let got = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        assert_eq!(
            got,
            vec![
                bad(
                    Some(0),
                    "frame 0",
                    &format!(
                        "an SOI at byte {half} before EOI (frame cut short): resynchronised there"
                    ),
                ),
                Item::Frame(1, f[1].1.clone()),
                Item::Frame(2, f[2].1.clone()),
            ]
        );
    }

    #[test]
    fn frame_with_its_middle_removed() {
        let f = textile();
        let a = &f[0].1;
        let n = a.len();
        // Removed across the headers (from inside DQT into the scan): broken, the next frames
        // are intact.
        let cut = [&a[..40], &a[n / 2..]].concat();
        let data = [&cut[..], &f[1].1, &f[2].1].concat();
        let got = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        assert_eq!(got.len(), 3, "{got:?}");
        match &got[0] {
            Item::Bad(Some(0), what, reason) => {
                assert_eq!(what, "frame 0");
                assert!(reason.starts_with("expected a marker at byte "), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            got[1..],
            [
                Item::Frame(1, f[1].1.clone()),
                Item::Frame(2, f[2].1.clone())
            ]
        );

        // Removed inside the scan data: still well-formed JPEG framing, so it is a frame (the
        // decoder sees the damage); its neighbours are untouched.
        let sos = a.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let (from, to) = (sos + (n - sos) / 3, sos + 2 * (n - sos) / 3);
        let mut cut = [&a[..from], &a[to..]].concat();
        // Don't split an FF 00 pair.
        if cut[from - 1] == 0xFF {
            cut.remove(from - 1);
        }
        let data = [&f[1].1[..], &cut, &f[2].1].concat();
        let got = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        assert_eq!(
            got,
            vec![
                Item::Frame(0, f[1].1.clone()),
                Item::Frame(1, cut),
                Item::Frame(2, f[2].1.clone())
            ]
        );
    }

    #[test]
    fn progressive_and_restart_interval_jpegs() {
        let parts = [
            fixture("progressive.jpg"),
            fixture("progressive_restart.jpg"),
            fixture("baseline_restart.jpg"),
        ];
        // They are what they claim: several scans, restart markers.
        let count = |d: &[u8], m: &[u8]| d.windows(2).filter(|w| *w == m).count();
        assert!(count(&parts[0], &[0xFF, 0xDA]) >= 5);
        assert!(count(&parts[1], &[0xFF, 0xD0]) >= 3);
        assert!(count(&parts[2], &[0xFF, 0xD1]) >= 1);
        let data = parts.concat();
        let got = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        let want: Vec<Item> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| Item::Frame(i as u64, p.clone()))
            .collect();
        assert_eq!(got, want);
    }

    /// A JPEG with an APP1 holding a whole thumbnail JPEG, a COM holding `FF D9`, fill bytes
    /// before a marker and before a restart marker: a search for `FF D9` would cut it in three.
    fn tricky_frame() -> Vec<u8> {
        let inner = fixture("progressive.jpg");
        let base = fixture("baseline_restart.jpg");
        let mut f = vec![0xFF, 0xD8];
        let app1 = [&b"Exif\0\0"[..], &inner].concat();
        f.extend_from_slice(&[0xFF, 0xE1]);
        f.extend_from_slice(&(app1.len() as u16 + 2).to_be_bytes());
        f.extend_from_slice(&app1);
        let com = b"x\xFF\xD9\xFF\xD8\xFF\xD9";
        f.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFE, 0x00, com.len() as u8 + 2]);
        f.extend_from_slice(com);
        // Fill bytes before a restart marker inside the scan.
        let rst = base.windows(2).position(|w| w == [0xFF, 0xD0]).unwrap();
        f.extend_from_slice(&base[2..rst]);
        f.extend_from_slice(&[0xFF, 0xFF]);
        f.extend_from_slice(&base[rst..]);
        f
    }

    #[test]
    fn thumbnails_comments_and_fill_bytes_do_not_end_a_frame() {
        let t = tricky_frame();
        let b = fixture("baseline_restart.jpg");
        let data = [&t[..], &b, &t].concat();
        let got = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        assert_eq!(
            got,
            vec![
                Item::Frame(0, t.clone()),
                Item::Frame(1, b),
                Item::Frame(2, t)
            ]
        );
    }

    #[test]
    fn broken_structure_is_bad_and_the_stream_goes_on() {
        let b = fixture("baseline_restart.jpg");
        let p = fixture("progressive.jpg");
        // APP0 length 1.
        let mut len1 = b.clone();
        len1[4..6].copy_from_slice(&[0, 1]);
        // A stray byte where the marker after APP0 must be.
        let app0_end = 4 + usize::from(u16::from_be_bytes([b[4], b[5]]));
        let stray = [&b[..app0_end], b"\x00", &b[app0_end..]].concat();
        // SOI, tables, EOI: no scan.
        let no_scan = [&b[..app0_end], b"\xFF\xD9"].concat();
        // FF 00 outside a scan.
        let ff00 = [&b[..app0_end], b"\xFF\x00", &b[app0_end..]].concat();
        let data = [&len1[..], &p, &stray, &p, &no_scan, &p, &ff00, &p].concat();
        let got = split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data));
        let o_stray = len1.len() + p.len() + app0_end;
        let o_ff00 = 3 * p.len() + len1.len() + stray.len() + no_scan.len() + app0_end;
        assert_eq!(
            got,
            vec![
                bad(
                    Some(0),
                    "frame 0",
                    "segment FFE0 at byte 2 has length 1, less than 2"
                ),
                Item::Frame(1, p.clone()),
                bad(
                    Some(2),
                    "frame 2",
                    &format!("expected a marker at byte {o_stray}, found 0x00")
                ),
                Item::Frame(3, p.clone()),
                bad(Some(4), "frame 4", "no scan (SOS) before EOI"),
                Item::Frame(5, p.clone()),
                bad(
                    Some(6),
                    "frame 6",
                    &format!("invalid marker FF00 at byte {o_ff00} outside a scan")
                ),
                Item::Frame(7, p),
            ]
        );
    }

    #[test]
    fn oversized_frame_is_skipped_without_buffering_it() {
        let f = textile();
        let small = fixture("progressive.jpg");
        let max = 10_000;
        assert!(f[0].1.len() > 2 * max && small.len() < max);
        let data = [&small[..], &f[0].1, &small, &f[1].1[..15_000]].concat();
        let mut src = MjpegReader::new(&data[..], max);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            let item = src.next(&mut buf).unwrap();
            assert!(buf.capacity() <= 2 * max, "capacity {}", buf.capacity());
            match item {
                Next::Frame { index, .. } => got.push(Item::Frame(index, buf.clone())),
                Next::Bad {
                    index,
                    what,
                    reason,
                } => got.push(Item::Bad(index, what, reason)),
                Next::End => break,
            }
        }
        let too_big = "frame larger than 10000 bytes: skipped";
        assert_eq!(
            got,
            vec![
                Item::Frame(0, small.clone()),
                bad(Some(1), "frame 1", too_big),
                Item::Frame(2, small),
                // Oversized before it was found truncated: reported once, as oversized.
                bad(Some(3), "frame 3", too_big),
            ]
        );
    }

    #[test]
    fn long_garbage_is_reported_in_pieces() {
        let p = fixture("progressive.jpg");
        let data = [&vec![0x55; 5000][..], &p].concat();
        let got = split(&data[..], 2048, Some(&data));
        assert_eq!(
            got,
            vec![
                bad(
                    None,
                    "bytes 0..2048",
                    "2048 bytes of garbage, no JPEG frame start yet"
                ),
                bad(
                    None,
                    "bytes 2048..4096",
                    "2048 bytes of garbage, no JPEG frame start yet"
                ),
                bad(
                    None,
                    "bytes 4096..5000",
                    "904 bytes of garbage before a JPEG frame"
                ),
                Item::Frame(0, p),
            ]
        );
    }

    #[test]
    fn no_reallocation_after_warm_up() {
        let data = fixture("testsrc_320x240_20.mjpeg");
        let twice = [&data[..], &data].concat();
        let mut src = MjpegReader::new(&twice[..], DEFAULT_MAX_FRAME_BYTES);
        let mut buf = Vec::new();
        for _ in 0..20 {
            assert!(matches!(src.next(&mut buf).unwrap(), Next::Frame { .. }));
        }
        let ptr = buf.as_ptr();
        for _ in 0..20 {
            assert!(matches!(src.next(&mut buf).unwrap(), Next::Frame { .. }));
            assert_eq!(buf.as_ptr(), ptr);
        }
        assert!(matches!(src.next(&mut buf).unwrap(), Next::End));
    }

    #[test]
    fn read_errors_end_the_stream_as_err() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("camera unplugged"));
                }
                self.0 -= 1;
                out[..3].copy_from_slice(&[0xFF, 0xD8, 0xFF]);
                Ok(3)
            }
        }
        let mut src = MjpegReader::new(Broken(1), DEFAULT_MAX_FRAME_BYTES);
        let e = src.next(&mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "camera unplugged");
    }

    /// Pieces of input for the property tests: random bytes biased towards marker bytes, and
    /// real frames, whole or cut anywhere.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => any::<u8>(),
            2 => Just(0xFF),
            2 => prop::sample::select(vec![0xD8, 0xD9, 0xDA, 0x00, 0xD0, 0x01, 0xC4, 0xE0]),
        ];
        let frame = prop::sample::select(vec![
            "progressive.jpg",
            "progressive_restart.jpg",
            "baseline_restart.jpg",
        ])
        .prop_map(fixture);
        prop_oneof![
            prop::collection::vec(byte, 0..64),
            frame.clone(),
            (
                frame,
                any::<prop::sample::Index>(),
                any::<prop::sample::Index>()
            )
                .prop_map(|(f, a, b)| {
                    let (a, b) = (a.index(f.len()), b.index(f.len()));
                    f[a.min(b)..a.max(b)].to_vec()
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Random garbage (with bits of real frames) never panics, ends, and yields only
        /// frames that are stream bytes from an SOI to an EOI; one-byte reads change nothing.
        #[test]
        fn garbage_never_panics_nor_yields_a_non_frame(pieces in prop::collection::vec(piece(), 0..8)) {
            let data = pieces.concat();
            let got = split(&data[..], 4096, Some(&data));
            let mut covered = 0u64;
            for item in &got {
                match item {
                    Item::Frame(_, f) => {
                        prop_assert!(f.starts_with(&[0xFF, 0xD8, 0xFF]));
                        prop_assert!(f.ends_with(&[0xFF, 0xD9]));
                        prop_assert!(f.len() <= 4096);
                    }
                    Item::Bad(None, what, _) => {
                        let (a, b) = what.strip_prefix("bytes ").unwrap().split_once("..").unwrap();
                        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                        prop_assert!(covered <= a && a < b && b <= data.len() as u64);
                        covered = b;
                    }
                    Item::Bad(Some(_), what, _) => prop_assert!(what.starts_with("frame ")),
                }
            }
            let indices: Vec<u64> = got.iter().filter_map(|i| match i {
                Item::Frame(i, _) | Item::Bad(Some(i), ..) => Some(*i),
                Item::Bad(None, ..) => None,
            }).collect();
            prop_assert_eq!(indices, (0..).take(got.iter().filter(|i| !matches!(i, Item::Bad(None, ..))).count()).collect::<Vec<u64>>());
            prop_assert_eq!(split(OneByte(&data), 4096, Some(&data)), got);
        }

        /// Real frames with garbage (no FF byte) between them come out exactly, and each run of
        /// garbage is reported once with its byte range.
        #[test]
        fn frames_between_garbage_come_out_exactly(
            parts in prop::collection::vec(
                (prop::collection::vec(0u8..0xFF, 0..40), 0usize..3), 0..6),
            tail in prop::collection::vec(0u8..0xFF, 0..40),
        ) {
            let pool = [fixture("progressive.jpg"), fixture("baseline_restart.jpg"), tricky_frame()];
            let mut data = Vec::new();
            let mut want = Vec::new();
            for (i, (garbage, which)) in parts.iter().enumerate() {
                if !garbage.is_empty() {
                    let what = format!("bytes {}..{}", data.len(), data.len() + garbage.len());
                    want.push(bad(None, &what, &format!("{} bytes of garbage before a JPEG frame", garbage.len())));
                }
                data.extend_from_slice(garbage);
                data.extend_from_slice(&pool[*which]);
                want.push(Item::Frame(i as u64, pool[*which].clone()));
            }
            if !tail.is_empty() {
                let what = format!("bytes {}..{}", data.len(), data.len() + tail.len());
                want.push(bad(None, &what, &format!("{} bytes of garbage after the last JPEG frame", tail.len())));
            }
            data.extend_from_slice(&tail);
            prop_assert_eq!(split(&data[..], DEFAULT_MAX_FRAME_BYTES, Some(&data)), want);
        }
    }
}
