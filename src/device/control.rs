//! The control socket of a running `tipedge stream --state DIR --control`: a Unix domain socket
//! (`DIR/control.sock` by default, mode 0600, so only the service's user and root can use it)
//! through which an operator's button, a PLC script or `socat` talks to the stream without
//! stopping the camera. One JSON command per line, one JSON reply per line:
//!
//! ```text
//! {"cmd": "status"}                                   → {"ok": true, "type": "status", …}
//! {"cmd": "reload"}                                   → {"ok": true, "type": "reload"}
//! {"cmd": "enrol", "class": "hole", "frames": 5}      → {"ok": true, "type": "enrol", …}
//! {"cmd": "enrol", "class": "stain", "frames": 5, "new": true}
//! anything else                                       → {"ok": false, "error": "<one line>"}
//! ```
//!
//! `enrol` takes the next `frames` classified frames as shots of `class` (one key per frame,
//! its unit-norm feature) and answers once the new pack is flashed ([`StateDir::enrol`]); the
//! stream's follower then swaps it in between two frames. A class the active pack does not have
//! is refused unless `"new": true`. Commands are served one at a time; a client that sends
//! nothing for [`IO_TIMEOUT`] is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::enrol::Enrolment;
use super::StateDir;
use crate::error::{io_reason, Error, Result};
use crate::pack::Pack;

/// The longest command line accepted, in bytes.
pub const MAX_COMMAND_LEN: usize = 4096;
/// The most frames one `enrol` may take.
pub const MAX_ENROL_FRAMES: u32 = 1000;
/// The longest class name accepted, in bytes.
pub const MAX_CLASS_LEN: usize = 200;
/// How long a connection may stay silent, and a reply may take to write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A command on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// The state directory's status and the stream's counters.
    Status {},
    /// Re-read `active` now (as SIGHUP does).
    Reload {},
    /// Take the next `frames` frames as shots of `class`.
    Enrol {
        class: String,
        frames: u32,
        /// Create the class if the pack does not have it.
        #[serde(default)]
        new: bool,
    },
}

/// Parses one command line (without its newline). The error is one line saying what is wrong.
pub fn parse_command(line: &[u8]) -> std::result::Result<Command, String> {
    if line.len() > MAX_COMMAND_LEN {
        return Err(format!(
            "command of {} bytes, at most {MAX_COMMAND_LEN} are accepted",
            line.len()
        ));
    }
    let text = std::str::from_utf8(line).map_err(|_| "command is not UTF-8".to_string())?;
    let command: Command = serde_json::from_str(text).map_err(|e| {
        let what = if e.is_data() {
            "not a command"
        } else {
            "not JSON"
        };
        // serde_json quotes an unknown command or field name as sent: escape what it quotes
        // (a line break would split the reply and the log line) and bound its length.
        format!(
            "{what}: {} (commands: status, reload, enrol)",
            escaped(&e.to_string(), MAX_QUOTED)
        )
    })?;
    if let Command::Enrol { class, frames, .. } = &command {
        if class.is_empty() || class.len() > MAX_CLASS_LEN || class.chars().any(char::is_control) {
            return Err(format!(
                "enrol: \"{}\" is not a class name (1 to {MAX_CLASS_LEN} bytes, no control \
                 characters)",
                escaped(class, 60)
            ));
        }
        if !(1..=MAX_ENROL_FRAMES).contains(frames) {
            return Err(format!(
                "enrol: frames must be 1 to {MAX_ENROL_FRAMES}, not {frames}"
            ));
        }
    }
    Ok(command)
}

/// The most characters of an error from the JSON parser a refusal repeats.
const MAX_QUOTED: usize = 300;

/// `s` on one line — control characters escaped (`\n`, `\u{1b}`) — cut after `n` characters.
fn escaped(s: &str, n: usize) -> String {
    let mut out = String::with_capacity(s.len().min(n) + 8);
    for (i, c) in s.chars().enumerate() {
        if i == n {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a frame tap hands back: the features of the frames taken, and their indices.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub features: Vec<f32>,
    pub frames: Vec<u64>,
}

struct TapState {
    want: usize,
    captured: Captured,
    done: Option<mpsc::SyncSender<Captured>>,
}

/// Where the frame thread offers each frame's feature while an `enrol` waits for frames: when
/// nothing waits, [`FrameTap::offer`] is one atomic load.
pub struct FrameTap {
    armed: AtomicBool,
    state: Mutex<TapState>,
}

impl Default for FrameTap {
    fn default() -> Self {
        FrameTap {
            armed: AtomicBool::new(false),
            state: Mutex::new(TapState {
                want: 0,
                captured: Captured::default(),
                done: None,
            }),
        }
    }
}

impl FrameTap {
    /// Called by the frame thread with every classified frame's unit-norm feature.
    pub fn offer(&self, frame: u64, feature: &[f32]) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.done.is_none() {
            return;
        }
        s.captured.features.extend_from_slice(feature);
        s.captured.frames.push(frame);
        if s.captured.frames.len() >= s.want {
            self.armed.store(false, Ordering::Release);
            let captured = std::mem::take(&mut s.captured);
            if let Some(tx) = s.done.take() {
                let _ = tx.try_send(captured);
            }
        }
    }

    /// Takes the next `n` frames; the receiver gets them all at once.
    fn arm(&self, n: usize) -> mpsc::Receiver<Captured> {
        let (tx, rx) = mpsc::sync_channel(1);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.want = n;
        s.captured = Captured::default();
        s.done = Some(tx);
        self.armed.store(true, Ordering::Release);
        rx
    }

    /// Stops taking frames; returns how many had been taken.
    fn disarm(&self) -> usize {
        self.armed.store(false, Ordering::Release);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.done = None;
        std::mem::take(&mut s.captured).frames.len()
    }
}

/// Makes a new class's row of the active pack's W from its name (made as the pack's other
/// rows were: see [`super::enrol::new_class_prompts`]).
pub type WRowFn = dyn Fn(&Pack, &str) -> Result<Option<Vec<f32>>> + Send;

/// What the control server needs from the running stream.
pub struct ControlContext {
    pub state: StateDir,
    pub tap: Arc<FrameTap>,
    /// Raised by `reload`; the state follower re-reads `active` when it sees it.
    pub reload: Arc<AtomicBool>,
    /// Ends the server.
    pub stop: Arc<AtomicBool>,
    /// The stream's counters for `status`.
    pub stream_status: Box<dyn Fn() -> serde_json::Value + Send>,
    /// The W row of a new class (CLIP packs; `None` for image-only backbones).
    pub w_row: Box<WRowFn>,
    /// How long an `enrol` waits for its frames (per frame, at least 10 s in all).
    pub frame_wait: Duration,
    /// One line per command served and per failure.
    pub note: Box<dyn Fn(&str) + Send>,
}

/// The socket path used when `--control` names none.
pub fn default_socket(state: &StateDir) -> PathBuf {
    state.root().join("control.sock")
}

/// Binds `socket` (mode 0600: bound under a temporary name, restricted, then renamed into place,
/// so it is never reachable with wider permissions) and serves commands on a thread until
/// `context.stop`. A stale socket file from an earlier run is replaced; a live one (another
/// stream answers on it), or a path that is not a socket, is an error.
pub fn serve(socket: &Path, context: ControlContext) -> Result<std::thread::JoinHandle<()>> {
    let err = |reason: String| Error::Invalid(format!("{}: {reason}", socket.display()));
    if UnixStream::connect(socket).is_ok() {
        return Err(err("another process is serving this control socket".into()));
    }
    // Only a stale socket is replaced: never a file that happens to have that name.
    if let Ok(m) = std::fs::symlink_metadata(socket) {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() {
            return Err(err(
                "exists and is not a socket; choose another --control path".into(),
            ));
        }
    }
    let dir = socket.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".control.sock.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)
        .and_then(|l| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, socket)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(format!("cannot listen: {}", io_reason(&e)))
        })?;
    let socket = socket.to_path_buf();
    std::thread::Builder::new()
        .name("tipedge-control".into())
        .spawn(move || {
            while !context.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => serve_connection(conn, &context),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => {
                        (context.note)(&format!("control: accept: {}", io_reason(&e)));
                        std::thread::sleep(Duration::from_millis(200))
                    }
                }
            }
            let _ = std::fs::remove_file(&socket);
        })
        .map_err(|e| Error::Invalid(format!("cannot start the control thread: {e}")))
}

fn serve_connection(conn: UnixStream, context: &ControlContext) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(writer) = conn.try_clone() else {
        return;
    };
    let mut writer = writer;
    // At most one byte more than a command may have: a longer line is refused, not buffered.
    let mut reader = BufReader::new(conn).take(0);
    let mut line = Vec::with_capacity(256);
    loop {
        if context.stop.load(Ordering::Relaxed) {
            return;
        }
        line.clear();
        reader.set_limit(MAX_COMMAND_LEN as u64 + 2);
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let complete = line.last() == Some(&b'\n');
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) && complete {
            continue;
        }
        let reply = match parse_command(&line) {
            Ok(command) => handle(command, context),
            Err(e) => Err(e),
        };
        let value = match reply {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("ok".into(), true.into());
                }
                v
            }
            Err(e) => {
                (context.note)(&format!("control: refused: {e}"));
                serde_json::json!({"ok": false, "type": "error", "error": e})
            }
        };
        let mut text = serde_json::to_vec(&value).expect("serialisable");
        text.push(b'\n');
        if writer.write_all(&text).is_err() || !complete {
            // A line too long to be a command (or cut by the end of input) ends the connection.
            return;
        }
    }
}

fn handle(command: Command, c: &ControlContext) -> std::result::Result<serde_json::Value, String> {
    match command {
        Command::Status {} => {
            let status = c.state.status().map_err(|e| e.to_string())?;
            let mut v = to_value(&status);
            v["stream"] = (c.stream_status)();
            Ok(v)
        }
        Command::Reload {} => {
            c.reload.store(true, Ordering::Relaxed);
            (c.note)("control: reload");
            Ok(serde_json::json!({"type": "reload"}))
        }
        Command::Enrol { class, frames, new } => {
            // Refuse what cannot succeed before taking frames.
            let (_, pack) = c.state.active_pack().map_err(|e| e.to_string())?;
            let exists = pack.class_names().contains(&class);
            if !exists && !new {
                return Err(format!(
                    "enrol: class '{class}' is not in the active pack (classes: {}); send \
                     \"new\": true to create it",
                    pack.class_names().join(", ")
                ));
            }
            let w_row = if exists || pack.text_classifier().is_none() {
                None
            } else {
                (c.w_row)(&pack, &class).map_err(|e| e.to_string())?
            };
            drop(pack);
            let n = frames as usize;
            let rx = c.tap.arm(n);
            let wait = (c.frame_wait * frames).max(Duration::from_secs(10));
            let t0 = Instant::now();
            let captured = loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(captured) => break captured,
                    Err(mpsc::RecvTimeoutError::Timeout)
                        if t0.elapsed() < wait && !c.stop.load(Ordering::Relaxed) => {}
                    Err(_) => {
                        let got = c.tap.disarm();
                        return Err(format!(
                            "enrol: {got} of {n} frames arrived in {:.0} s; nothing enrolled",
                            t0.elapsed().as_secs_f64()
                        ));
                    }
                }
            };
            let at = crate::record::now_unix();
            let sources: Vec<String> = captured
                .frames
                .iter()
                .map(|f| format!("stream frame {f}, unix {at}"))
                .collect();
            let summary = format!(
                "enrol '{class}': {n} frames of the stream ({}..={})",
                captured.frames.first().copied().unwrap_or(0),
                captured.frames.last().copied().unwrap_or(0)
            );
            let report = c
                .state
                .enrol(
                    &Enrolment {
                        class: &class,
                        features: &captured.features,
                        sources: &sources,
                        new_class: new,
                        w_row: w_row.as_deref(),
                        summary: &summary,
                    },
                    at,
                )
                .map_err(|e| e.to_string())?;
            (c.note)(&format!(
                "control: enrolled {} frames as '{class}' ({} keys now); pack {} flashed",
                report.added, report.class_keys, report.pack
            ));
            let mut v = to_value(&report);
            v["frames"] = serde_json::json!(captured.frames);
            Ok(v)
        }
    }
}

fn to_value(record: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(record).expect("serialisable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_command(br#"{"cmd":"status"}"#),
            Ok(Command::Status {})
        );
        assert_eq!(
            parse_command(br#" {"cmd": "reload"} "#),
            Ok(Command::Reload {})
        );
        assert_eq!(
            parse_command(br#"{"cmd":"enrol","class":"oil stain","frames":5}"#),
            Ok(Command::Enrol {
                class: "oil stain".into(),
                frames: 5,
                new: false
            })
        );
        assert_eq!(
            parse_command(br#"{"frames":1,"new":true,"class":"x","cmd":"enrol"}"#),
            Ok(Command::Enrol {
                class: "x".into(),
                frames: 1,
                new: true
            })
        );
        let bad: [(&[u8], &str); 12] = [
            (b"status", "not JSON"),
            (b"", "not JSON"),
            (b"\xff\xfe", "not UTF-8"),
            (br#"{"cmd":"reboot"}"#, "not a command"),
            (br#"{"cmd":"status","x":1}"#, "not a command"),
            (br#"{"class":"x","frames":1}"#, "not a command"),
            (br#"{"cmd":"enrol","class":"x"}"#, "not a command"),
            (
                br#"{"cmd":"enrol","class":"x","frames":-1}"#,
                "not a command",
            ),
            (
                br#"{"cmd":"enrol","class":"x","frames":0}"#,
                "frames must be",
            ),
            (
                br#"{"cmd":"enrol","class":"x","frames":1001}"#,
                "frames must be",
            ),
            (
                br#"{"cmd":"enrol","class":"","frames":1}"#,
                "not a class name",
            ),
            (
                br#"{"cmd":"enrol","class":"a\tb","frames":1}"#,
                "not a class name",
            ),
        ];
        for (line, why) in bad {
            let e = parse_command(line).unwrap_err();
            assert!(e.contains(why), "{}: {e}", String::from_utf8_lossy(line));
            assert!(!e.contains('\n'));
        }
        let long = format!(
            r#"{{"cmd":"status","pad":"{}"}}"#,
            "x".repeat(MAX_COMMAND_LEN)
        );
        assert!(parse_command(long.as_bytes())
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn the_tap_hands_over_exactly_the_frames_asked_for() {
        let tap = FrameTap::default();
        tap.offer(0, &[1.0, 2.0]); // nothing waits: ignored
        let rx = tap.arm(2);
        tap.offer(1, &[1.0, 0.0]);
        assert!(rx.try_recv().is_err());
        tap.offer(2, &[0.0, 1.0]);
        tap.offer(3, &[5.0, 5.0]);
        let c = rx.try_recv().unwrap();
        assert_eq!(c.frames, [1, 2]);
        assert_eq!(c.features, [1.0, 0.0, 0.0, 1.0]);
        let _rx = tap.arm(3);
        tap.offer(4, &[1.0, 1.0]);
        assert_eq!(tap.disarm(), 1);
        tap.offer(5, &[1.0, 1.0]);
    }
}
