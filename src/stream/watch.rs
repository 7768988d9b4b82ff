//! Image files dropped into a folder (industrial cameras, line-scan systems, an FTP drop
//! folder): each new complete file is delivered once, its bytes in the caller's buffer.
//!
//! How a file is known to be complete (the folder is watched with `notify`, inotify on Linux):
//! - written in place: when its writer closes it (`IN_CLOSE_WRITE`);
//! - renamed into the folder (the atomic writer's way: write `.name.tmp`, then rename): when it
//!   appears under its final name (`IN_MOVED_TO`);
//! - fallback for writers that keep a file open, or whose close is not seen (hard links, NFS
//!   exports, platforms without close events): a file that was created or written and whose
//!   size and mtime then stay unchanged for the settle time ([`DEFAULT_SETTLE`], 500 ms,
//!   [`FolderWatcher::with_settle`]) is taken as complete. Such files are checked by polling
//!   `stat` every 50 ms while they are pending.
//!
//! Besides, a read is checked: if the file's size or mtime changed while it was read, the read
//! is dropped and the file waits again.
//!
//! Delivered again? Each delivery is remembered per path with a hash of its bytes. A new close
//! or rename-in for a path is delivered only if the content differs from what was delivered
//! for that path: a camera overwriting `latest.jpg` with a new image is delivered each time,
//! `touch` or a second close of an unchanged file is not, and one close event is never
//! delivered twice. A delivered file renamed inside the folder keeps its record (not delivered
//! again under its new name). Records are dropped when a file is deleted or moved out, so the
//! memory is one record per file still in the folder.
//!
//! Ignored: names starting with `.`, ending (any case) in `.tmp`, `.part`, `.partial`;
//! anything that is not a regular file (folders, FIFOs, sockets); empty files (a file created
//! empty is taken when it is closed with content); subfolders' contents (not recursive).
//!
//! Reported as [`Next::Bad`] (named by its path; the index counts it): a file that vanished
//! before it was read, could not be read, or is larger than the cap
//! ([`DEFAULT_MAX_FILE_BYTES`], [`FolderWatcher::with_max_file_bytes`]). A file moved out of
//! the folder before it was read is dropped silently (it was renamed, not lost). `Err`: the
//! watched folder itself was removed, or the watcher failed.
//!
//! With `include_existing`, files already in the folder are delivered first, in name order,
//! except that one modified less than the settle time ago waits like a file being written.
//!
//! Limits:
//! - The settle fallback cannot tell a writer that keeps a file open and is done from one that
//!   stalls longer than the settle time mid-file: the latter is delivered early, and delivered
//!   again complete when it is closed (its content then differs). Raise the settle time for
//!   such writers, or disable the fallback (`with_settle(None)`) when every writer closes or
//!   renames its files.
//! - A file rewritten in place between its close and its read can be delivered in the new
//!   version only, or skipped until that rewrite's close; writers should use the rename way.
//! - Remote writers on a network mount (NFS/SMB client side) produce no inotify events at all;
//!   watch the folder on the machine that writes it.
//! - Order: files are delivered in the order they completed (existing ones in name order), not
//!   by name or timestamp.
//! - If events are lost (inotify queue overflow), the folder is listed again and every file
//!   not delivered in its current size and mtime waits the settle time as if being written.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, Metadata};
use std::hash::Hasher;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher};

use super::source::{FrameSource, Next};

/// Default settle time: a file unchanged this long without being closed is taken as complete.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(500);

/// Default cap on one file's size: 256 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;

/// How often the stop flag and the pending files are looked at while waiting.
const TICK: Duration = Duration::from_millis(50);

/// Size and mtime of a file, to see whether it changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Seen {
    len: u64,
    mtime: Option<SystemTime>,
}

impl Seen {
    fn of(m: &Metadata) -> Seen {
        Seen {
            len: m.len(),
            mtime: m.modified().ok(),
        }
    }
}

/// What was delivered for a path.
#[derive(Clone, Copy, Debug)]
struct Delivered {
    seen: Seen,
    hash: u64,
}

/// A file being written (or that may be): when it last changed.
struct Pending {
    seen: Option<Seen>,
    since: Instant,
}

/// Why a file is queued for reading.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Why {
    /// Closed after writing, renamed in, or settled.
    Complete,
    /// Already in the folder at start.
    Existing,
}

/// Watches one folder (not recursively) and delivers each new complete file (see the module
/// doc for how completeness is told, and the limits).
pub struct FolderWatcher {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    rx: Receiver<notify::Result<Event>>,
    /// Kept alive: dropping it ends the watch.
    _watcher: RecommendedWatcher,
    /// Files to read, in order; an entry counts only while `queued` has its path.
    ready: VecDeque<PathBuf>,
    queued: HashMap<PathBuf, Why>,
    pending: HashMap<PathBuf, Pending>,
    delivered: HashMap<PathBuf, Delivered>,
    /// The record of a delivered file just renamed away, with the rename's cookie, for the
    /// rename-in that follows.
    moved_away: Option<(usize, Delivered)>,
    settle: Option<Duration>,
    max_file_bytes: u64,
    index: u64,
    last_poll: Instant,
    settled: Vec<PathBuf>,
}

impl FolderWatcher {
    /// Starts watching `dir`. With `include_existing`, the files already there are delivered
    /// first, in name order. `next` returns `End` once `stop` is set.
    ///
    /// The error is one line naming the folder.
    pub fn new(
        dir: &Path,
        stop: Arc<AtomicBool>,
        include_existing: bool,
    ) -> Result<FolderWatcher, String> {
        let fail = |what: &dyn std::fmt::Display| format!("folder {}: {what}", dir.display());
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(fail(&"not a folder")),
            Err(e) => return Err(fail(&e)),
        }
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx).map_err(|e| fail(&e))?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| fail(&format_args!("cannot watch it: {e}")))?;
        let mut w = FolderWatcher {
            dir: dir.to_path_buf(),
            stop,
            rx,
            _watcher: watcher,
            ready: VecDeque::new(),
            queued: HashMap::new(),
            pending: HashMap::new(),
            delivered: HashMap::new(),
            moved_away: None,
            settle: Some(DEFAULT_SETTLE),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            index: 0,
            last_poll: Instant::now(),
            settled: Vec::new(),
        };
        if include_existing {
            // Listed after the watch started, so a file arriving now is not missed (if it is
            // seen twice, the content check keeps it to one delivery).
            let mut files = w
                .list()
                .map_err(|e| fail(&format_args!("cannot list it: {e}")))?;
            files.sort();
            for path in files {
                w.enqueue(path, Why::Existing);
            }
        }
        Ok(w)
    }

    /// Sets the settle time of the fallback for writers that keep files open; `None` turns the
    /// fallback off (then only closed or renamed-in files are delivered).
    pub fn with_settle(mut self, settle: Option<Duration>) -> Self {
        self.settle = settle;
        self
    }

    /// Sets the cap on a file's size; larger files are reported and skipped.
    pub fn with_max_file_bytes(mut self, max: u64) -> Self {
        self.max_file_bytes = max;
        self
    }

    /// The watched folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Regular files in the folder whose names are not ignored.
    fn list(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            // file_type() does not follow symlinks; metadata() does (a link to a file counts).
            if wanted_name(&path) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                files.push(path);
            }
        }
        Ok(files)
    }

    fn enqueue(&mut self, path: PathBuf, why: Why) {
        self.pending.remove(&path);
        if self.queued.insert(path.clone(), why).is_none() {
            self.ready.push_back(path);
        }
    }

    /// The file is (again) being written: wait for its close or for it to settle.
    fn mark_pending(&mut self, path: PathBuf) {
        self.queued.remove(&path);
        self.pending.insert(
            path,
            Pending {
                seen: None,
                since: Instant::now(),
            },
        );
    }

    fn handle(&mut self, event: notify::Result<Event>) -> std::io::Result<()> {
        let event = event.map_err(|e| {
            std::io::Error::other(format!("watching folder {}: {e}", self.dir.display()))
        })?;
        if event.need_rescan() {
            return self.rescan();
        }
        let tracker = event.tracker();
        for path in event.paths {
            if path == self.dir {
                if matches!(event.kind, EventKind::Remove(_))
                    || matches!(event.kind, EventKind::Modify(ModifyKind::Name(_)))
                {
                    return Err(std::io::Error::new(
                        ErrorKind::NotFound,
                        format!("watched folder {} was removed or moved", self.dir.display()),
                    ));
                }
                continue;
            }
            match event.kind {
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                    // Renamed away: if it comes back under another name, it keeps its record.
                    self.pending.remove(&path);
                    self.queued.remove(&path);
                    let record = self.delivered.remove(&path);
                    self.moved_away = tracker.zip(record);
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {} // From + To did it
                EventKind::Remove(_) => {
                    // A queued file stays queued: its read fails and it is reported.
                    self.pending.remove(&path);
                    self.delivered.remove(&path);
                }
                _ if !wanted_name(&path) => {}
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    self.enqueue(path, Why::Complete)
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                    if let Some((cookie, record)) = self.moved_away.take() {
                        if Some(cookie) == tracker {
                            self.delivered.insert(path.clone(), record);
                        }
                    }
                    self.enqueue(path, Why::Complete);
                }
                EventKind::Create(CreateKind::Folder) => {}
                EventKind::Create(_)
                | EventKind::Modify(ModifyKind::Data(_))
                | EventKind::Modify(ModifyKind::Any)
                | EventKind::Modify(ModifyKind::Name(_)) => self.mark_pending(path),
                _ => {}
            }
        }
        Ok(())
    }

    /// Events were lost: every file not delivered as it is now waits to settle.
    fn rescan(&mut self) -> std::io::Result<()> {
        for path in self.list()? {
            let unchanged = match (self.delivered.get(&path), std::fs::metadata(&path)) {
                (Some(d), Ok(m)) => d.seen == Seen::of(&m),
                _ => false,
            };
            if !unchanged && !self.queued.contains_key(&path) {
                self.mark_pending(path);
            }
        }
        Ok(())
    }

    /// Moves pending files whose size and mtime held still for the settle time to the queue.
    fn poll_pending(&mut self) {
        self.last_poll = Instant::now();
        let Some(settle) = self.settle else { return };
        let now = Instant::now();
        let mut settled = std::mem::take(&mut self.settled);
        self.pending
            .retain(|path, p| match std::fs::metadata(path) {
                Ok(m) if m.is_file() => {
                    let seen = Some(Seen::of(&m));
                    if seen != p.seen {
                        p.seen = seen;
                        p.since = now;
                    } else if now.duration_since(p.since) >= settle {
                        settled.push(path.clone());
                        return false;
                    }
                    true
                }
                // Gone or not a file: it was never complete, forget it.
                _ => false,
            });
        for path in settled.drain(..) {
            self.enqueue(path, Why::Complete);
        }
        self.settled = settled;
    }

    /// Reads a queued file into `buf`: the item to hand out, or `None` if there is nothing to
    /// deliver (unchanged, empty, not a file, still being written).
    fn read(&mut self, path: PathBuf, why: Why, buf: &mut Vec<u8>) -> Option<Next> {
        buf.clear();
        // Looked at before opening: opening a FIFO would block until someone writes to it.
        let meta = match std::fs::metadata(&path) {
            Ok(m) if !m.is_file() => return None,
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Some(self.bad(&path, "vanished before it was read".into()))
            }
            Err(e) => return Some(self.bad(&path, format!("cannot be read: {e}"))),
        };
        if let (Why::Existing, Some(settle)) = (why, self.settle) {
            let age = meta.modified().ok().and_then(|t| t.elapsed().ok());
            if age.is_some_and(|age| age < settle) {
                self.mark_pending(path);
                return None;
            }
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Some(self.bad(&path, "vanished before it was read".into()))
            }
            Err(e) => return Some(self.bad(&path, format!("cannot be read: {e}"))),
        };
        let before = match file.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => return None,
            Err(e) => return Some(self.bad(&path, format!("cannot be read: {e}"))),
        };
        let max = self.max_file_bytes;
        let too_big = || format!("larger than {max} bytes: skipped");
        if before.len() > max {
            return Some(self.bad(&path, too_big()));
        }
        if let Err(e) = (&file).take(max.saturating_add(1)).read_to_end(buf) {
            buf.clear();
            return Some(self.bad(&path, format!("cannot be read: {e}")));
        }
        if buf.len() as u64 > max {
            buf.clear();
            return Some(self.bad(&path, too_big()));
        }
        let seen = Seen::of(&before);
        let torn = file
            .metadata()
            .map_or(true, |after| Seen::of(&after) != seen)
            || buf.len() as u64 != seen.len;
        if torn {
            buf.clear();
            self.mark_pending(path);
            return None;
        }
        if buf.is_empty() {
            return None;
        }
        let mut h = std::hash::DefaultHasher::new();
        h.write(buf);
        let hash = h.finish();
        if self
            .delivered
            .get(&path)
            .is_some_and(|d| d.hash == hash && d.seen.len == seen.len)
        {
            buf.clear();
            return None;
        }
        self.delivered
            .insert(path.clone(), Delivered { seen, hash });
        let index = self.index;
        self.index += 1;
        Some(Next::Frame {
            index,
            arrival: SystemTime::now(),
            path: Some(path),
        })
    }

    fn bad(&mut self, path: &Path, reason: String) -> Next {
        let index = self.index;
        self.index += 1;
        Next::Bad {
            index: Some(index),
            what: path.display().to_string(),
            reason,
        }
    }

    fn disconnected(&self) -> std::io::Error {
        std::io::Error::other(format!(
            "the watcher of folder {} stopped",
            self.dir.display()
        ))
    }
}

impl FrameSource for FolderWatcher {
    /// Blocks until a file is complete (or `stop` is set: `End`), checking `stop` every 50 ms.
    fn next(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Next> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                buf.clear();
                return Ok(Next::End);
            }
            loop {
                match self.rx.try_recv() {
                    Ok(event) => self.handle(event)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(self.disconnected()),
                }
            }
            if self.last_poll.elapsed() >= TICK {
                self.poll_pending();
            }
            if let Some(path) = self.ready.pop_front() {
                if let Some(why) = self.queued.remove(&path) {
                    if let Some(item) = self.read(path, why, buf) {
                        return Ok(item);
                    }
                }
                continue;
            }
            match self.rx.recv_timeout(TICK) {
                Ok(event) => self.handle(event)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(self.disconnected()),
            }
        }
    }
}

/// Whether a file name may be delivered: not hidden, not a temporary name.
fn wanted_name(path: &Path) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    let name = name.to_string_lossy().to_ascii_lowercase();
    !(name.starts_with('.')
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with(".partial"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::thread;

    /// Real image bytes: the textile query JPEGs.
    fn jpeg(i: usize) -> Vec<u8> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/textile/query/nominal");
        let mut names: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        std::fs::read(&names[i]).unwrap()
    }

    fn watcher(dir: &Path, existing: bool) -> (FolderWatcher, Arc<AtomicBool>) {
        let stop = Arc::new(AtomicBool::new(false));
        (
            FolderWatcher::new(dir, stop.clone(), existing).unwrap(),
            stop,
        )
    }

    /// `next`, with the stop flag raised after `limit` (then `End` comes back). The flag is
    /// left lowered if `next` returned before.
    fn next_within(w: &mut FolderWatcher, stop: &Arc<AtomicBool>, limit: Duration) -> Next {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let flag = stop.clone();
        let guard = thread::spawn(move || {
            if done_rx.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
                flag.store(true, Ordering::Relaxed);
            }
        });
        let mut buf = Vec::new();
        let item = w.next(&mut buf).unwrap();
        done_tx.send(()).ok();
        guard.join().unwrap();
        if let Next::Frame { .. } = item {
            LAST.with(|l| *l.borrow_mut() = buf);
        }
        item
    }

    thread_local! {
        static LAST: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// The next item must be this file with these bytes, within 3 s.
    fn expect_file(
        w: &mut FolderWatcher,
        stop: &Arc<AtomicBool>,
        index: u64,
        path: &Path,
        bytes: &[u8],
    ) {
        match next_within(w, stop, Duration::from_secs(3)) {
            Next::Frame {
                index: i, path: p, ..
            } => {
                assert_eq!((i, p.as_deref()), (index, Some(path)));
                LAST.with(|l| {
                    assert!(
                        l.borrow().as_slice() == bytes,
                        "bytes of {} differ",
                        path.display()
                    )
                });
            }
            other => panic!("expected {}, got {other:?}", path.display()),
        }
    }

    /// Nothing may come within `quiet` (then `End`, as the stop flag is raised).
    fn expect_nothing(w: &mut FolderWatcher, stop: &Arc<AtomicBool>, quiet: Duration) {
        let item = next_within(w, stop, quiet);
        assert!(matches!(item, Next::End), "expected nothing, got {item:?}");
    }

    #[test]
    fn slow_writer_is_delivered_only_complete_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, stop) = watcher(dir.path(), false);
        let data = jpeg(0);
        let path = dir.path().join("slow.jpg");
        let (p, d) = (path.clone(), data.clone());
        let writer = thread::spawn(move || {
            let mut f = File::create(&p).unwrap();
            for chunk in d.chunks(d.len() / 8 + 1) {
                f.write_all(chunk).unwrap();
                f.flush().unwrap();
                thread::sleep(Duration::from_millis(40)); // well under the 500 ms settle time
            }
        });
        expect_file(&mut w, &stop, 0, &path, &data);
        writer.join().unwrap();
        // Longer than the settle time: the fallback must not deliver it a second time.
        expect_nothing(&mut w, &stop, Duration::from_millis(700));
    }

    #[test]
    fn atomic_rename_is_delivered_and_the_temp_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, stop) = watcher(dir.path(), false);
        let data = jpeg(1);
        let tmp = dir.path().join(".x.tmp");
        let path = dir.path().join("x.jpg");
        std::fs::write(&tmp, &data[..data.len() / 2]).unwrap();
        thread::sleep(Duration::from_millis(30));
        let mut f = std::fs::OpenOptions::new().append(true).open(&tmp).unwrap();
        f.write_all(&data[data.len() / 2..]).unwrap();
        drop(f);
        std::fs::rename(&tmp, &path).unwrap();
        expect_file(&mut w, &stop, 0, &path, &data);
        expect_nothing(&mut w, &stop, Duration::from_millis(300));
    }

    #[test]
    fn burst_of_two_files_each_delivered_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, stop) = watcher(dir.path(), false);
        let (a, b) = (jpeg(2), jpeg(3));
        let (pa, pb) = (dir.path().join("a.jpg"), dir.path().join("b.jpg"));
        std::fs::write(&pa, &a).unwrap();
        std::fs::write(&pb, &b).unwrap();
        expect_file(&mut w, &stop, 0, &pa, &a);
        expect_file(&mut w, &stop, 1, &pb, &b);
        expect_nothing(&mut w, &stop, Duration::from_millis(700));
    }

    #[test]
    fn hidden_temporary_names_and_folders_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, stop) = watcher(dir.path(), false);
        let data = jpeg(4);
        for name in [".hidden.jpg", "x.tmp", "y.part", "z.PARTIAL", "w.jpg.Tmp"] {
            std::fs::write(dir.path().join(name), &data).unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.jpg")).unwrap();
        std::fs::write(dir.path().join("sub.jpg/inner.jpg"), &data).unwrap();
        std::fs::write(dir.path().join("empty.jpg"), b"").unwrap();
        let path = dir.path().join("real.jpg");
        std::fs::write(&path, &data).unwrap();
        expect_file(&mut w, &stop, 0, &path, &data);
        expect_nothing(&mut w, &stop, Duration::from_millis(700));
    }

    #[test]
    fn a_fifo_closed_after_writing_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, stop) = watcher(dir.path(), false);
        let fifo = dir.path().join("pipe.jpg");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opened for writing and closed: inotify reports IN_CLOSE_WRITE for it.
        drop(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .unwrap(),
        );
        thread::sleep(Duration::from_millis(50));
        let path = dir.path().join("real.jpg");
        std::fs::write(&path, jpeg(5)).unwrap();
        // In a thread: a regression would block in open(), and this test must fail, not hang.
        let (tx, rx) = mpsc::channel();
        let (p, flag) = (path.clone(), stop.clone());
        thread::spawn(move || {
            expect_file(&mut w, &flag, 0, &p, &jpeg(5));
            expect_nothing(&mut w, &flag, Duration::from_millis(200));
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the watcher blocked on the FIFO");
    }

    #[test]
    fn stop_flag_ends_next_within_200_ms() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, stop) = watcher(dir.path(), false);
        let flag = stop.clone();
        let raiser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            flag.store(true, Ordering::Relaxed);
            Instant::now()
        });
        let item = w.next(&mut Vec::new()).unwrap();
        let returned = Instant::now();
        let raised = raiser.join().unwrap();
        assert!(matches!(item, Next::End), "{item:?}");
        let late = returned.saturating_duration_since(raised);
        assert!(
            late < Duration::from_millis(200),
            "End {late:?} after the stop flag"
        );
    }

    #[test]
    fn existing_files_first_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        for (i, name) in ["c.jpg", "a.jpg", "b.jpg", ".h.jpg", "d.part"]
            .iter()
            .enumerate()
        {
            let f = File::create(dir.path().join(name)).unwrap();
            (&f).write_all(&jpeg(i)).unwrap();
            f.set_modified(old).unwrap();
        }
        // Without include_existing they are not delivered.
        let (mut w, stop) = watcher(dir.path(), false);
        expect_nothing(&mut w, &stop, Duration::from_millis(200));

        let (mut w, stop) = watcher(dir.path(), true);
        expect_file(&mut w, &stop, 0, &dir.path().join("a.jpg"), &jpeg(1));
        expect_file(&mut w, &stop, 1, &dir.path().join("b.jpg"), &jpeg(2));
        expect_file(&mut w, &stop, 2, &dir.path().join("c.jpg"), &jpeg(0));
        // A new file after them.
        std::fs::write(dir.path().join("e.jpg"), jpeg(5)).unwrap();
        expect_file(&mut w, &stop, 3, &dir.path().join("e.jpg"), &jpeg(5));
        expect_nothing(&mut w, &stop, Duration::from_millis(200));
    }

    #[test]
    fn existing_file_written_just_now_waits_to_settle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.jpg");
        std::fs::write(&path, jpeg(3)).unwrap();
        let written = Instant::now();
        let (w, stop) = watcher(dir.path(), true);
        let mut w = w.with_settle(Some(Duration::from_millis(300)));
        expect_file(&mut w, &stop, 0, &path, &jpeg(3));
        let waited = written.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "taken after {waited:?}"
        );
    }

    #[test]
    fn vanished_file_is_bad_and_the_stream_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, stop) = watcher(dir.path(), false);
        let gone = dir.path().join("gone.jpg");
        std::fs::write(&gone, jpeg(0)).unwrap();
        thread::sleep(Duration::from_millis(50));
        std::fs::remove_file(&gone).unwrap();
        let kept = dir.path().join("kept.jpg");
        std::fs::write(&kept, jpeg(1)).unwrap();
        match next_within(&mut w, &stop, Duration::from_secs(3)) {
            Next::Bad {
                index,
                what,
                reason,
            } => {
                assert_eq!(index, Some(0));
                assert_eq!(what, gone.display().to_string());
                assert_eq!(reason, "vanished before it was read");
            }
            other => panic!("{other:?}"),
        }
        expect_file(&mut w, &stop, 1, &kept, &jpeg(1));
    }

    #[test]
    fn oversized_file_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let (w, stop) = watcher(dir.path(), false);
        let mut w = w.with_max_file_bytes(1000);
        let big = dir.path().join("big.jpg");
        std::fs::write(&big, jpeg(0)).unwrap();
        match next_within(&mut w, &stop, Duration::from_secs(3)) {
            Next::Bad {
                index: Some(0),
                what,
                reason,
            } => {
                assert_eq!(what, big.display().to_string());
                assert_eq!(reason, "larger than 1000 bytes: skipped");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writer_that_keeps_the_file_open_is_taken_after_settling() {
        let dir = tempfile::tempdir().unwrap();
        let (w, stop) = watcher(dir.path(), false);
        let mut w = w.with_settle(Some(Duration::from_millis(200)));
        let path = dir.path().join("open.jpg");
        let data = jpeg(6);
        let mut f = File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        let written = Instant::now();
        expect_file(&mut w, &stop, 0, &path, &data);
        let waited = written.elapsed();
        assert!(
            waited >= Duration::from_millis(200),
            "taken after {waited:?}"
        );
        // Its close, content unchanged: not delivered again.
        drop(f);
        expect_nothing(&mut w, &stop, Duration::from_millis(400));

        // Rewritten with other content: delivered again; rewritten the same: not.
        stop.store(false, Ordering::Relaxed);
        let other = jpeg(7);
        std::fs::write(&path, &other).unwrap();
        expect_file(&mut w, &stop, 1, &path, &other);
        std::fs::write(&path, &other).unwrap();
        expect_nothing(&mut w, &stop, Duration::from_millis(400));
    }

    #[test]
    fn without_the_fallback_an_open_file_waits_for_its_close() {
        let dir = tempfile::tempdir().unwrap();
        let (w, stop) = watcher(dir.path(), false);
        let mut w = w.with_settle(None);
        let path = dir.path().join("open.jpg");
        let data = jpeg(8);
        let mut f = File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        expect_nothing(&mut w, &stop, Duration::from_millis(700));
        stop.store(false, Ordering::Relaxed);
        drop(f);
        expect_file(&mut w, &stop, 0, &path, &data);
    }

    #[test]
    fn delivered_file_renamed_in_the_folder_is_not_delivered_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, stop) = watcher(dir.path(), false);
        let (a, b) = (dir.path().join("a.jpg"), dir.path().join("b.jpg"));
        std::fs::write(&a, jpeg(9)).unwrap();
        expect_file(&mut w, &stop, 0, &a, &jpeg(9));
        std::fs::rename(&a, &b).unwrap();
        expect_nothing(&mut w, &stop, Duration::from_millis(700));
    }

    #[test]
    fn errors_name_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let missing = dir.path().join("missing");
        let e = FolderWatcher::new(&missing, stop.clone(), false)
            .err()
            .unwrap();
        assert!(
            e.starts_with(&format!("folder {}: ", missing.display())),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let file = dir.path().join("f.jpg");
        std::fs::write(&file, b"x").unwrap();
        let e = FolderWatcher::new(&file, stop, false).err().unwrap();
        assert_eq!(e, format!("folder {}: not a folder", file.display()));
    }

    #[test]
    fn removing_the_watched_folder_ends_with_err() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("drop");
        std::fs::create_dir(&sub).unwrap();
        let (mut w, stop) = watcher(&sub, false);
        std::fs::remove_dir(&sub).unwrap();
        let flag = stop.clone();
        let guard = thread::spawn(move || {
            thread::sleep(Duration::from_secs(3));
            flag.store(true, Ordering::Relaxed);
        });
        let e = w.next(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("was removed"), "{e}");
        stop.store(true, Ordering::Relaxed);
        drop(guard); // detached; it only sets a flag nobody reads any more
    }

    #[test]
    fn sources_are_send() {
        fn send<T: FrameSource>() {}
        send::<FolderWatcher>();
        send::<super::super::raw::RawReader<std::process::ChildStdout>>();
        send::<super::super::mjpeg::MjpegReader<std::io::Stdin>>();
    }
}
