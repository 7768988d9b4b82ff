//! Image files through a [`Session`]: what `tipedge classify` and `tipedge demo` do with the
//! paths they are given. Files are decoded (any format [`load_rgb`] reads, EXIF orientation
//! applied) and classified in runs of the encoder's batch size; a file that cannot be read or
//! classified is reported with its path and the others go on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::embed::ms;
use crate::error::{Error, Result};
use crate::preprocess::{load_rgb, FrameRef, PixelFormat};
use crate::record::PredictionRecord;
use crate::session::Session;

/// The class whose folder is the image's parent folder (`_` and space read alike), if any: the
/// image's true class when the inputs are a labelled folder tree.
pub fn class_of_path(path: &Path, class_folders: &[String]) -> Option<usize> {
    let parent = path.parent()?.file_name()?.to_str()?;
    class_folders
        .iter()
        .position(|c| c == parent || c.replace('_', " ") == parent.replace('_', " "))
}

/// Classifies `files` in order, calling `on_result` once per file with its record (the
/// session's classes, the file's decode time) or an error that names the file.
pub fn classify_files(
    session: &mut Session,
    files: &[PathBuf],
    mut on_result: impl FnMut(&Path, Result<PredictionRecord>),
) {
    let limits = session.options().limits;
    for run in files.chunks(session.encoder().batch()) {
        let mut decoded = Vec::with_capacity(run.len());
        for path in run {
            let t = Instant::now();
            match load_rgb(path, &limits) {
                Ok(img) => decoded.push((path, img, ms(t.elapsed()))),
                Err(e) => on_result(path, Err(e)),
            }
        }
        let mut frames = Vec::with_capacity(decoded.len());
        let mut good = Vec::with_capacity(decoded.len());
        for (path, img, decode_ms) in &decoded {
            match FrameRef::packed(img.as_raw(), img.width(), img.height(), PixelFormat::Rgb24) {
                Ok(f) => {
                    frames.push(f);
                    good.push((*path, *decode_ms));
                }
                Err(e) => on_result(path, Err(Error::image(path, e))),
            }
        }
        let results = session.classify_batch(&frames);
        for ((path, decode_ms), result) in good.into_iter().zip(results) {
            on_result(
                path,
                match result {
                    Ok(p) => Ok(PredictionRecord::new(&p).for_file(path, decode_ms)),
                    Err(Error::Frame { reason, .. }) => Err(Error::image(path, reason)),
                    Err(e) => Err(Error::image(path, e)),
                },
            );
        }
    }
}
