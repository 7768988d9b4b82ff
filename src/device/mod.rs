//! A device's state directory: two pack slots (A and B), an `active` pointer and the model the
//! packs belong to — flashing a pack as safely as a firmware update.
//!
//! ```text
//! DIR/model.json            the installed model: its image graph, encoder fingerprint, dimension
//! DIR/slots/a.pack          slot A's pack     DIR/slots/a.json   when and from what it was flashed
//! DIR/slots/b.pack          slot B's pack     DIR/slots/b.json
//! DIR/active -> slots/a.pack   a symbolic link, replaced by one atomic rename
//! ```
//!
//! [`StateDir::flash`] verifies the pack completely (format, every checksum, the encoder
//! fingerprint and dimension of the installed model), writes it into the *inactive* slot (a
//! temporary file, fsync, rename, fsync of the directory), verifies the copy as read back, and
//! only then points `active` at it (a new link renamed over the old one, then an fsync of the
//! directory). The active slot is never written. So whenever the process dies — power loss,
//! `kill -9` — `active` names a complete, verified pack: the old one until the rename, the new one
//! after. Leftover temporary files are removed by the next flash. [`StateDir::rollback`] points
//! `active` back at the other slot after verifying it.

pub mod control;
pub mod enrol;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::classifier::Classifier;
use crate::encoder::ImageEncoder;
use crate::error::{io_reason, Error, Result};
use crate::pack::{write_atomically, Expect, Pack};
use crate::session::Swapper;
use crate::sidecar::sha256_hex;

/// Where a device keeps its packs by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tipedge";

/// One of the two pack slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// `DIR/model.json`: the model the slots' packs are made for.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct InstalledModel {
    /// The image graph (absolute path).
    pub image: PathBuf,
    /// The encoder fingerprint packs must carry: the graph's sha256, hex.
    pub sha256: String,
    /// Its architecture name as packs record it.
    pub encoder: String,
    pub dim: usize,
}

/// `DIR/slots/<slot>.json`: where a slot's pack came from.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct FlashRecord {
    /// The pack file flashed, or what an enrolment added.
    pub source: String,
    /// The pack file's sha256, hex.
    pub sha256: String,
    pub flashed_unix: i64,
}

/// What a flash or a rollback did (`"type": "flash"`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "flash")]
pub struct FlashReport {
    pub state: PathBuf,
    pub active: Slot,
    /// The slot active before (`None` on the first flash).
    pub previous: Option<Slot>,
    pub sha256: String,
    pub classes: Vec<String>,
    pub keys: usize,
}

/// One slot as `tipedge status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    pub slot: Slot,
    pub active: bool,
    pub path: PathBuf,
    pub present: bool,
    /// Passed full verification against the installed model.
    pub verified: bool,
    /// Why not, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flashed: Option<FlashRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<PackSummary>,
}

/// The header fields a person checks after a flash.
#[derive(Debug, Clone, Serialize)]
pub struct PackSummary {
    pub classes: Vec<String>,
    pub keys: usize,
    pub dim: usize,
    pub key_dtype: &'static str,
    pub alpha: f32,
    pub beta: f32,
    pub temperature: Option<f32>,
    pub shots: u32,
    /// Shots enrolled on the device and stored in the pack.
    pub stored_shots: usize,
    pub seed: u64,
    pub created_unix: i64,
    pub tool_version: String,
}

impl PackSummary {
    fn of(p: &Pack) -> PackSummary {
        let prov = p.provenance();
        PackSummary {
            classes: p.class_names().to_vec(),
            keys: p.n_keys(),
            dim: p.dim(),
            key_dtype: p.key_dtype().name(),
            alpha: p.params().alpha,
            beta: p.params().beta,
            temperature: p.temperature(),
            shots: prov.shots,
            stored_shots: p.header().stored_shots,
            seed: prov.seed,
            created_unix: prov.created_unix,
            tool_version: prov.tool_version.clone(),
        }
    }
}

/// `tipedge status` (`"type": "status"`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "status")]
pub struct StatusReport {
    pub state: PathBuf,
    pub model: InstalledModel,
    pub active: Option<Slot>,
    pub slots: Vec<SlotStatus>,
}

/// An opened state directory (see the module documentation).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    model: InstalledModel,
}

fn state_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {reason}", path.display()))
}

impl StateDir {
    /// Opens `root`, which must hold a `model.json` (see [`StateDir::init`]).
    pub fn open(root: &Path) -> Result<StateDir> {
        let file = root.join("model.json");
        let text = fs::read_to_string(&file).map_err(|e| {
            state_err(
                root,
                format!(
                    "not a tipedge state directory (model.json: {}); create it with \
                     `tipedge flash --model MODEL --state {} PACK`",
                    io_reason(&e),
                    root.display()
                ),
            )
        })?;
        let model: InstalledModel = serde_json::from_str(&text)
            .map_err(|e| state_err(&file, format!("not a model record: {e}")))?;
        Ok(StateDir {
            root: root.to_path_buf(),
            model,
        })
    }

    /// Creates (or re-opens) a state directory for the image graph `image`; refuses a directory
    /// already set up for another model.
    pub fn init(root: &Path, image: &Path) -> Result<StateDir> {
        let expect = ImageEncoder::expect_for(image)?;
        let encoder = expect.encoder.expect("expect_for names the encoder");
        let model = InstalledModel {
            image: fs::canonicalize(image).map_err(|e| Error::model(image, io_reason(&e)))?,
            sha256: encoder.sha256_hex(),
            encoder: encoder.name.clone(),
            dim: expect.dim.unwrap_or(0),
        };
        if let Ok(existing) = StateDir::open(root) {
            if existing.model.sha256 != model.sha256 {
                return Err(state_err(
                    root,
                    format!(
                        "set up for another model ({}, sha256 {}…), not {}",
                        existing.model.image.display(),
                        &existing.model.sha256[..12],
                        image.display()
                    ),
                ));
            }
            return Ok(existing);
        }
        fs::create_dir_all(root.join("slots"))
            .map_err(|e| state_err(root, format!("cannot create: {}", io_reason(&e))))?;
        let json = serde_json::to_vec_pretty(&model).expect("serialisable");
        write_atomically(&root.join("model.json"), &json)?;
        StateDir::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn model(&self) -> &InstalledModel {
        &self.model
    }

    /// What packs must match: the installed model's dimension and encoder fingerprint.
    pub fn expect(&self) -> Expect {
        let mut sha256 = [0u8; 32];
        for (i, b) in sha256.iter_mut().enumerate() {
            *b = u8::from_str_radix(self.model.sha256.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
                .unwrap_or(0);
        }
        Expect::model(
            self.model.dim,
            crate::pack::EncoderId {
                name: self.model.encoder.clone(),
                sha256,
            },
        )
    }

    /// The `active` link.
    pub fn active_path(&self) -> PathBuf {
        self.root.join("active")
    }
    pub fn slot_path(&self, slot: Slot) -> PathBuf {
        self.root
            .join("slots")
            .join(format!("{}.pack", slot.name()))
    }
    fn record_path(&self, slot: Slot) -> PathBuf {
        self.root
            .join("slots")
            .join(format!("{}.json", slot.name()))
    }

    /// The slot `active` points at; `None` before the first flash. A link to anything else is
    /// an error naming it.
    pub fn active(&self) -> Result<Option<Slot>> {
        let link = self.active_path();
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(state_err(
                    &link,
                    format!("not a link to a slot: {}", io_reason(&e)),
                ))
            }
        };
        match target.to_str() {
            Some("slots/a.pack") => Ok(Some(Slot::A)),
            Some("slots/b.pack") => Ok(Some(Slot::B)),
            _ => Err(state_err(
                &link,
                format!(
                    "points at {}, not at slots/a.pack or slots/b.pack",
                    target.display()
                ),
            )),
        }
    }

    /// What identifies the active pack's file cheaply: the slot, its inode and modification time.
    fn active_signature(&self) -> Option<(Slot, u64, std::time::SystemTime)> {
        use std::os::unix::fs::MetadataExt;
        let slot = self.active().ok()??;
        let m = fs::metadata(self.slot_path(slot)).ok()?;
        Some((slot, m.ino(), m.modified().ok()?))
    }

    /// Opens and verifies a slot's pack against the installed model.
    pub fn open_slot(&self, slot: Slot) -> Result<Pack> {
        Pack::open(self.slot_path(slot), &self.expect())
    }

    /// The label predictions carry: the slot and the first 12 hex digits of the pack's sha256.
    pub fn label(&self, slot: Slot, pack: &Pack) -> String {
        format!("{}:{}", slot.name(), &sha256_hex(pack.as_bytes())[..12])
    }

    /// The active pack, verified, as a classifier labelled with [`StateDir::label`]: what a
    /// session on this device runs (`tipedge stream --state`, the bindings, the hot swap).
    pub fn active_classifier(&self) -> Result<Classifier> {
        let (slot, pack) = self.active_pack()?;
        let label = self.label(slot, &pack);
        Ok(Classifier::from_pack(Arc::new(pack)).with_label(&label))
    }

    /// Flashes `source` (see the module documentation); `now` is the flash time, Unix seconds.
    pub fn flash(&self, source: &Path, now: i64) -> Result<FlashReport> {
        let bytes = fs::read(source).map_err(|e| Error::pack(source, io_reason(&e)))?;
        let _lock = self.lock()?;
        let name = fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
        self.flash_bytes_locked(&bytes, &name.display().to_string(), now)
            .map_err(|e| match e {
                Error::Pack { path, reason } if path.as_os_str() == MEMORY => {
                    Error::pack(source, reason)
                }
                e => e,
            })
    }

    /// The pack `bytes` (read from `source`, which the slot's record keeps) into the inactive
    /// slot, then made active; the caller holds [`StateDir::lock`].
    fn flash_bytes_locked(&self, bytes: &[u8], source: &str, now: i64) -> Result<FlashReport> {
        // Full verification before anything is written.
        let pack = Pack::from_bytes(bytes, &self.expect())?;
        let previous = self.active()?;
        let target = previous.map_or(Slot::A, Slot::other);
        self.remove_leftovers();
        let path = self.slot_path(target);
        write_atomically(&path, bytes)?;
        // Read back what the disk holds and verify it again.
        let copy = self.open_slot(target)?;
        if copy.as_bytes() != bytes {
            return Err(Error::pack(&path, "the copy differs from the source"));
        }
        let sha256 = sha256_hex(bytes);
        let record = FlashRecord {
            source: source.to_string(),
            sha256: sha256.clone(),
            flashed_unix: now,
        };
        write_atomically(
            &self.record_path(target),
            &serde_json::to_vec_pretty(&record).expect("serialisable"),
        )?;
        self.point_at(target)?;
        Ok(FlashReport {
            state: self.root.clone(),
            active: target,
            previous,
            sha256,
            classes: pack.class_names().to_vec(),
            keys: pack.n_keys(),
        })
    }

    /// The active slot and its pack, verified.
    pub fn active_pack(&self) -> Result<(Slot, Pack)> {
        let slot = self
            .active()?
            .ok_or_else(|| state_err(&self.root, "nothing flashed yet: no active pack"))?;
        Ok((slot, self.open_slot(slot)?))
    }

    /// `DIR/.lock`, held exclusively while a flash, an enrolment or a rollback changes the
    /// slots (two at once would write the same inactive slot); the kernel releases it when the
    /// process dies.
    fn lock(&self) -> Result<fs::File> {
        let path = self.root.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| state_err(&path, format!("cannot open the lock: {}", io_reason(&e))))?;
        file.lock()
            .map_err(|e| state_err(&path, format!("cannot lock: {}", io_reason(&e))))?;
        Ok(file)
    }

    /// Points `active` back at the other slot, after verifying its pack.
    pub fn rollback(&self) -> Result<FlashReport> {
        let Some(current) = self.active()? else {
            return Err(state_err(
                &self.root,
                "nothing flashed yet: no slot to roll back to",
            ));
        };
        let _lock = self.lock()?;
        let target = current.other();
        let pack = self.open_slot(target).map_err(|e| {
            state_err(
                &self.root,
                format!(
                    "cannot roll back to slot {}: {e}; slot {} stays active",
                    target.name(),
                    current.name()
                ),
            )
        })?;
        self.point_at(target)?;
        Ok(FlashReport {
            state: self.root.clone(),
            active: target,
            previous: Some(current),
            sha256: sha256_hex(pack.as_bytes()),
            classes: pack.class_names().to_vec(),
            keys: pack.n_keys(),
        })
    }

    /// Both slots, verified, and which is active.
    pub fn status(&self) -> Result<StatusReport> {
        let active = self.active()?;
        let slots = [Slot::A, Slot::B]
            .into_iter()
            .map(|slot| {
                let path = self.slot_path(slot);
                let present = path.exists();
                let (verified, problem, pack) = match self.open_slot(slot) {
                    Ok(p) => (true, None, Some(PackSummary::of(&p))),
                    Err(_) if !present => (false, None, None),
                    Err(e) => (false, Some(e.to_string()), None),
                };
                let flashed = fs::read_to_string(self.record_path(slot))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
                SlotStatus {
                    slot,
                    active: active == Some(slot),
                    path,
                    present,
                    verified,
                    problem,
                    flashed,
                    pack,
                }
            })
            .collect();
        Ok(StatusReport {
            state: self.root.clone(),
            model: self.model.clone(),
            active,
            slots,
        })
    }

    /// A new link renamed over `active`, then the directory synced.
    fn point_at(&self, slot: Slot) -> Result<()> {
        let link = self.active_path();
        let tmp = self
            .root
            .join(format!(".active.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let target = format!("slots/{}.pack", slot.name());
        std::os::unix::fs::symlink(&target, &tmp)
            .and_then(|()| fs::rename(&tmp, &link))
            .and_then(|()| fs::File::open(&self.root)?.sync_all())
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                state_err(
                    &link,
                    format!(
                        "cannot switch to slot {}: {} (the previous slot stays active)",
                        slot.name(),
                        io_reason(&e)
                    ),
                )
            })
    }

    /// Temporary files an interrupted flash left behind.
    fn remove_leftovers(&self) {
        for dir in [self.root.clone(), self.root.join("slots")] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.contains(".tmp-") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

/// How `Pack::from_bytes` names the file; `flash` names the real one instead.
const MEMORY: &str = "<memory>";

/// Keeps a running [`crate::session::Session`] on the state directory's active pack: when
/// `active` changes (a file watch on the directory, `hup` raised by SIGHUP, and a look every
/// two seconds in case an event was missed), the new pack is mapped and verified on this
/// thread and handed to the session's [`Swapper`], which installs it at the next frame
/// boundary; frames in flight finish on the old pack. A pack that fails verification is refused
/// with one line through `note` and the old one stays. Ends when `stop` is raised.
pub fn follow_active(
    state: StateDir,
    current: String,
    swapper: Swapper,
    stop: Arc<std::sync::atomic::AtomicBool>,
    hup: Arc<std::sync::atomic::AtomicBool>,
    note: impl Fn(&str) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    use notify::Watcher;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            if e.paths
                .iter()
                .any(|p| p.file_name() == Some("active".as_ref()))
            {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| state_err(&state.root, format!("cannot watch: {e}")))?;
    watcher
        .watch(&state.root, notify::RecursiveMode::NonRecursive)
        .map_err(|e| state_err(&state.root, format!("cannot watch: {e}")))?;
    std::thread::Builder::new()
        .name("tipedge-follow".into())
        .spawn(move || {
            let _watcher = watcher; // kept alive with the thread
            let mut current = current;
            let mut refused: Option<String> = None;
            let mut last_look = Instant::now();
            let mut seen = state.active_signature();
            while !stop.load(Ordering::Relaxed) {
                let event = rx.recv_timeout(Duration::from_millis(100)).is_ok();
                let signal = hup.swap(false, Ordering::Relaxed);
                let look = last_look.elapsed() > Duration::from_secs(2);
                if !(event || signal || look) {
                    continue;
                }
                last_look = Instant::now();
                // The periodic look opens the pack only if the link or the file changed.
                let signature = state.active_signature();
                if !(event || signal) && signature == seen {
                    continue;
                }
                seen = signature;
                match state.active_classifier() {
                    Ok(classifier) => {
                        let label = classifier.label().unwrap_or_default().to_string();
                        if label == current {
                            continue;
                        }
                        match swapper.swap(Arc::new(classifier)) {
                            Ok(()) => {
                                note(&format!(
                                    "{}: now using pack {label} (was {current})",
                                    state.root.display()
                                ));
                                current = label;
                                refused = None;
                            }
                            Err(e) => note(&format!(
                                "{}: pack {label} refused: {e}; {current} stays active",
                                state.root.display()
                            )),
                        }
                    }
                    Err(e) => {
                        let line = format!("{e}; {current} stays active");
                        if refused.as_deref() != Some(line.as_str()) {
                            note(&line);
                            refused = Some(line);
                        }
                    }
                }
            }
        })
        .map_err(|e| Error::Invalid(format!("cannot start the state watcher: {e}")))
}
