//! The feature store: encoded validation / test features kept on disk and reused, so that the
//! α/β search, fine-tuning and evaluation encode each image once (the official code's
//! `load_pre_feat`). Features are keyed by the encoder (graph sha256 + precision, in the file
//! name) and the image file's content (sha256 of its bytes), so a renamed file is still found
//! and an edited one is encoded again.
//!
//! One append-only file per encoder: a 16-byte header (`TIPEFEAT`, version, dim) then records
//! of `sha256 (32 bytes) | dim × f32 LE | crc32c of both (u32 LE)`. A torn or corrupt tail (an
//! interrupted run) is cut off at the first bad record when the store is opened; the records
//! before it are kept.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::dataset::LabelledSet;
use crate::embed::{Embedder, Skipped};
use crate::encoder::ImageEncoder;
use crate::error::{Error, Result};
use crate::preprocess::DecodeLimits;
use crate::progress::Progress;

const MAGIC: &[u8; 8] = b"TIPEFEAT";
const VERSION: u32 = 1;
const HEADER: usize = 16;

/// sha256 of an image file's bytes: the store's key.
pub type ContentKey = [u8; 32];

pub fn content_key(bytes: &[u8]) -> ContentKey {
    Sha256::digest(bytes).into()
}

#[derive(Debug)]
pub struct FeatureStore {
    path: PathBuf,
    dim: usize,
    index: HashMap<ContentKey, usize>,
    values: Vec<f32>,
    /// Records not yet written.
    pending: Vec<u8>,
    /// Records dropped from a corrupt tail when opening.
    dropped_tail: bool,
}

impl FeatureStore {
    /// `$TIPEDGE_FEATURES`, else `$XDG_CACHE_HOME/tipedge/features`, else
    /// `~/.cache/tipedge/features`, else `.tipedge-features` in the working directory.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("TIPEDGE_FEATURES") {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(d).join("tipedge/features");
        }
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(".cache/tipedge/features");
        }
        PathBuf::from(".tipedge-features")
    }

    /// Opens (or creates) the store of `encoder_sha256` (hex) run at `precision` in `dir`.
    pub fn open(
        dir: &Path,
        encoder_sha256: &str,
        precision: &str,
        dim: usize,
    ) -> Result<FeatureStore> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::dataset(
                dir,
                format!(
                    "cannot create the feature store folder: {}",
                    crate::error::io_reason(&e)
                ),
            )
        })?;
        let short = &encoder_sha256[..encoder_sha256.len().min(16)];
        let path = dir.join(format!("{short}-{precision}-{dim}.feat"));
        let mut store = FeatureStore {
            path,
            dim,
            index: HashMap::new(),
            values: Vec::new(),
            pending: Vec::new(),
            dropped_tail: false,
        };
        store.load()?;
        Ok(store)
    }

    fn record_len(&self) -> usize {
        32 + 4 * self.dim + 4
    }

    fn load(&mut self) -> Result<()> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(self.error(format!("cannot read: {}", crate::error::io_reason(&e))))
            }
        };
        if bytes.len() < HEADER
            || &bytes[..8] != MAGIC
            || u32::from_le_bytes(bytes[8..12].try_into().unwrap()) != VERSION
            || u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize != self.dim
        {
            return Err(self.error(
                "not a tipedge feature store of this version and dimension (delete it to start over)",
            ));
        }
        let rl = self.record_len();
        let mut good = HEADER;
        for rec in bytes[HEADER..].chunks(rl) {
            if rec.len() < rl
                || crc32c::crc32c(&rec[..rl - 4])
                    != u32::from_le_bytes(rec[rl - 4..].try_into().unwrap())
            {
                self.dropped_tail = true;
                break;
            }
            let key: ContentKey = rec[..32].try_into().unwrap();
            let at = self.values.len() / self.dim;
            self.values.extend(
                rec[32..rl - 4]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap())),
            );
            self.index.insert(key, at);
            good += rl;
        }
        if self.dropped_tail {
            let f = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(|e| self.error(crate::error::io_reason(&e)))?;
            f.set_len(good as u64)
                .map_err(|e| self.error(crate::error::io_reason(&e)))?;
        }
        Ok(())
    }

    fn error(&self, reason: impl std::fmt::Display) -> Error {
        Error::dataset(&self.path, format!("feature store: {reason}"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether opening found and cut off a corrupt tail.
    pub fn dropped_tail(&self) -> bool {
        self.dropped_tail
    }

    pub fn get(&self, key: &ContentKey) -> Option<&[f32]> {
        self.index
            .get(key)
            .map(|&i| &self.values[i * self.dim..(i + 1) * self.dim])
    }

    /// Adds a feature (kept in memory until [`FeatureStore::flush`]).
    pub fn insert(&mut self, key: ContentKey, feature: &[f32]) {
        assert_eq!(feature.len(), self.dim);
        if self.index.contains_key(&key) {
            return;
        }
        let start = self.pending.len();
        self.pending.extend_from_slice(&key);
        for v in feature {
            self.pending.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32c::crc32c(&self.pending[start..]);
        self.pending.extend_from_slice(&crc.to_le_bytes());
        self.index.insert(key, self.values.len() / self.dim);
        self.values.extend_from_slice(feature);
    }

    /// Appends the new records and syncs them to disk.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let io = |e: std::io::Error| {
            Error::dataset(
                &self.path,
                format!("feature store: {}", crate::error::io_reason(&e)),
            )
        };
        let mut f: File = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        let len = f.seek(SeekFrom::End(0)).map_err(io)?;
        if len == 0 {
            let mut header = Vec::with_capacity(HEADER);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&VERSION.to_le_bytes());
            header.extend_from_slice(&(self.dim as u32).to_le_bytes());
            f.write_all(&header).map_err(io)?;
        } else {
            // Another process may have created it meanwhile: check it is ours.
            let mut head = [0u8; 8];
            f.seek(SeekFrom::Start(0)).map_err(io)?;
            f.read_exact(&mut head).map_err(io)?;
            if &head != MAGIC {
                return Err(self.error("not a tipedge feature store"));
            }
        }
        f.write_all(&self.pending).map_err(io)?;
        f.sync_all().map_err(io)?;
        self.pending.clear();
        Ok(())
    }
}

/// Unit-norm eval-recipe features of a labelled split.
#[derive(Debug, Clone, Default)]
pub struct EncodedSplit {
    /// `n × dim`, in the order of `paths`.
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub paths: Vec<PathBuf>,
    /// Unreadable images, left out of the above.
    pub skipped: Vec<Skipped>,
    /// How many features came from the store.
    pub from_store: usize,
}

/// Encodes every image of `set` (class by class), taking what `store` already has and adding
/// what it lacks. Unreadable images are skipped and reported; the rest go on. `progress` is
/// called with the number of images handled.
pub fn encode_split(
    encoder: &ImageEncoder,
    set: &LabelledSet,
    mut store: Option<&mut FeatureStore>,
    limits: DecodeLimits,
    mut progress: impl FnMut(usize),
) -> Result<EncodedSplit> {
    let dim = encoder.dim();
    let items = set.items();
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; items.len()];
    let mut keys: Vec<Option<ContentKey>> = vec![None; items.len()];
    let mut failed: Vec<Option<Skipped>> = vec![None; items.len()];
    let mut todo = Vec::new();
    let mut from_store = 0;
    let mut done = 0;
    for (i, (path, _)) in items.iter().enumerate() {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key = content_key(&bytes);
                keys[i] = Some(key);
                if let Some(f) = store.as_deref().and_then(|s| s.get(&key)) {
                    slots[i] = Some(f.to_vec());
                    from_store += 1;
                    done += 1;
                    progress(done);
                } else {
                    todo.push(i);
                }
            }
            // The embedder reports the reason in its own words for unreadable files.
            Err(_) => todo.push(i),
        }
    }
    let paths: Vec<PathBuf> = todo.iter().map(|&i| items[i].0.clone()).collect();
    Embedder::new(encoder, limits)?.embed_all(&paths, |e| {
        let i = todo[e.index];
        match e.result {
            Ok(f) => {
                if let (Some(s), Some(k)) = (store.as_deref_mut(), keys[i]) {
                    s.insert(k, f);
                }
                slots[i] = Some(f.to_vec());
            }
            Err(err) => {
                failed[i] = Some(Skipped {
                    path: e.path,
                    reason: err.to_string(),
                })
            }
        }
        done += 1;
        progress(done);
    });
    if let Some(s) = store {
        s.flush()?;
    }
    let mut out = EncodedSplit {
        from_store,
        ..Default::default()
    };
    for (i, (path, class)) in items.into_iter().enumerate() {
        match slots[i].take() {
            Some(f) => {
                debug_assert_eq!(f.len(), dim);
                out.features.extend_from_slice(&f);
                out.labels.push(class as u32);
                out.paths.push(path);
            }
            None => out.skipped.extend(failed[i].take()),
        }
    }
    Ok(out)
}

/// The unit-norm features of a labelled split (a folder per class or a split file), through
/// the feature store in `store_dir` (`None`: encode everything, keep nothing), with the labels
/// mapped onto `classes` (a pack's class names): a split class the pack does not know is an
/// error. Unreadable images are reported through `progress` and left out; a split of which
/// nothing could be encoded is an error. `what` names the split in messages ("val", "test").
pub fn encode_labelled(
    encoder: &ImageEncoder,
    split: &Path,
    classes: &[String],
    store_dir: Option<&Path>,
    limits: DecodeLimits,
    what: &str,
    progress: &mut dyn Progress,
) -> Result<EncodedSplit> {
    let set = LabelledSet::read(split)?;
    let map = class_map(&set, split, classes)?;
    let mut store = match store_dir {
        None => None,
        Some(dir) => {
            let s = FeatureStore::open(
                dir,
                encoder.fingerprint(),
                encoder.precision().name(),
                encoder.dim(),
            )?;
            if s.dropped_tail() {
                progress.note(&format!(
                    "{}: cut off a damaged tail (an interrupted run); the damaged features will be encoded again",
                    s.path().display()
                ));
            }
            Some(s)
        }
    };
    progress.start(what, set.len());
    let out = encode_split(encoder, &set, store.as_mut(), limits, |n| progress.set(n));
    progress.finish();
    let mut out = out?;
    for s in &out.skipped {
        progress.note(&format!("skipped {what} image: {}", s.reason));
    }
    if out.labels.is_empty() {
        return Err(Error::dataset(split, "no image could be encoded"));
    }
    for l in &mut out.labels {
        *l = map[*l as usize];
    }
    Ok(out)
}

/// For each class of `set`, its index among `classes`; a class `classes` lacks is an error
/// naming its folder.
pub fn class_map(set: &LabelledSet, root: &Path, classes: &[String]) -> Result<Vec<u32>> {
    set.classes
        .iter()
        .map(|c| {
            classes
                .iter()
                .position(|n| *n == c.name)
                .map(|i| i as u32)
                .ok_or_else(|| {
                    Error::dataset(
                        root.join(&c.folder),
                        format!(
                            "class '{}' is not one of the pack's classes ({})",
                            c.name,
                            classes.join(", ")
                        ),
                    )
                })
        })
        .collect()
}
