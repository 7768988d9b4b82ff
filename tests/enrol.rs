//! Enrolment on a device: `tipedge enrol` from image files, the control socket of a running
//! `tipedge stream --state DIR --control` taking frames as shots, kill -9 during enrolments, and
//! a full disk during a flash.
#![cfg(feature = "cli")]

mod common;
#[path = "common/device.rs"]
mod device_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use device_util::{bin, flash, leftovers, model, random_pack, text};
use tipedge::device::StateDir;
use tipedge::pack::Pack;

fn textile(rel: &str) -> PathBuf {
    common::repo("examples/textile").join(rel)
}

/// The first `n` images of a query class of the bundled textile example.
fn query_images(class: &str, n: usize) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(textile("query").join(class))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.truncate(n);
    v
}

fn sha(bytes: &[u8]) -> String {
    tipedge::sidecar::sha256_hex(bytes)
}

/// `cache build` of the clip-tiny model over `shots` (plain keys, so a key is the image's
/// feature): a pack with a zero-shot W.
fn build(shots: &Path, out: &Path, k: &str) {
    let o = bin()
        .args([
            "cache",
            "build",
            "--augment-epochs",
            "0",
            "-k",
            k,
            "--created",
            "1",
        ])
        .arg("-m")
        .arg(model())
        .arg("--shots")
        .arg(shots)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

fn enrol(state: &Path, class: &str, extra: &[&str], images: &[PathBuf]) -> Output {
    bin()
        .args(["enrol", "--json", "--class", class])
        .args(extra)
        .arg("--state")
        .arg(state)
        .args(images)
        .output()
        .unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(text(&o.stdout).trim()).unwrap()
}

/// The f32 keys of class `name`, as stored.
fn class_keys(p: &Pack, name: &str) -> Vec<f32> {
    let c = p.class_names().iter().position(|n| n == name).unwrap();
    let o = p.contents().class_offsets;
    let all = p.key_data().to_f32(p.dim());
    all[o[c] as usize * p.dim()..o[c + 1] as usize * p.dim()].to_vec()
}

fn w_row(p: &Pack, name: &str) -> Vec<f32> {
    let c = p.class_names().iter().position(|n| n == name).unwrap();
    p.text_classifier().unwrap()[c * p.dim()..(c + 1) * p.dim()].to_vec()
}

/// `tipedge embed` features (L2-normalised), one per image.
fn embed(images: &[PathBuf]) -> Vec<Vec<f32>> {
    let o = bin()
        .arg("embed")
        .arg("--model")
        .arg(model())
        .args(images)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    text(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["features"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// Enrol into an existing class and a new one from image files: the other keys and W rows
/// bit-identical, the new keys the images' features, the new class's W row the one `cache
/// build` makes for that name, every refusal one line with nothing changed, rollback undoing it.
#[test]
fn enrol_from_images_adds_shots_and_classes_through_the_slots() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let p0 = dir.path().join("p0.pack");
    build(&textile("shots"), &p0, "2");
    let o = flash(&p0, &state);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let sd = StateDir::open(&state).unwrap();
    let (_, before) = sd.active_pack().unwrap();

    // Two more shots of an existing class.
    let imgs = query_images("nominal", 2);
    let o = enrol(&state, "nominal", &[], &imgs);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let r = json(&o);
    assert_eq!(r["type"], "enrol");
    assert_eq!(r["added"], 2);
    assert_eq!(r["class_keys"], 4);
    assert_eq!(r["keys"], 8);
    assert_eq!(
        (r["previous"].as_str(), r["active"].as_str()),
        (Some("a"), Some("b"))
    );
    let (slot, after) = sd.active_pack().unwrap();
    assert_eq!(r["pack"], sd.label(slot, &after));
    for c in ["global defect", "local defect"] {
        assert_eq!(class_keys(&after, c), class_keys(&before, c));
        assert_eq!(w_row(&after, c), w_row(&before, c));
    }
    let nominal = class_keys(&after, "nominal");
    assert_eq!(&nominal[..64], class_keys(&before, "nominal").as_slice());
    for (i, f) in embed(&imgs).iter().enumerate() {
        let key = &nominal[(2 + i) * 32..(3 + i) * 32];
        let cos = common::cosine(key, f);
        assert!(
            cos > 0.9999,
            "enrolled key {i} vs its image's feature: cosine {cos}"
        );
    }
    assert_eq!(after.params(), before.params());

    // A class the pack does not have: refused without --new, nothing changes.
    let active_sha = sha(after.as_bytes());
    let stain = query_images("local_defect", 1);
    let o = enrol(&state, "oil stain", &[], &stain);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stdout);
    assert!(
        e.contains("'oil stain' is not in the active pack") && e.contains("--new"),
        "{e}"
    );
    assert_eq!(sha(sd.active_pack().unwrap().1.as_bytes()), active_sha);
    // Images that cannot be read: refused, naming the file, nothing changes.
    let junk = dir.path().join("junk.jpg");
    std::fs::write(&junk, b"not a jpeg").unwrap();
    let o = enrol(&state, "nominal", &[], std::slice::from_ref(&junk));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stdout).contains("junk.jpg"), "{}", text(&o.stdout));
    assert_eq!(sha(sd.active_pack().unwrap().1.as_bytes()), active_sha);

    // --new: the class comes last, with the W row `cache build` makes for that name; a bad
    // image beside a good one is skipped and listed (exit code 1).
    let o = enrol(
        &state,
        "oil stain",
        &["--new"],
        &[stain[0].clone(), junk.clone()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("skipped shot") && text(&o.stderr).contains("junk.jpg"));
    let r = json(&o);
    assert_eq!(
        (r["new_class"].as_bool(), r["added"].as_u64()),
        (Some(true), Some(1))
    );
    let (_, with_new) = sd.active_pack().unwrap();
    assert_eq!(with_new.class_names().last().unwrap(), "oil stain");
    let shots2 = dir.path().join("shots2");
    for (class, img) in [("oil_stain", &stain[0]), ("nominal", &imgs[0])] {
        std::fs::create_dir_all(shots2.join(class)).unwrap();
        std::fs::copy(img, shots2.join(class).join(img.file_name().unwrap())).unwrap();
    }
    let p2 = dir.path().join("p2.pack");
    build(&shots2, &p2, "1");
    let reference = Pack::open(&p2, &sd.expect()).unwrap();
    assert_eq!(
        w_row(&with_new, "oil stain"),
        w_row(&reference, "oil stain")
    );
    assert_eq!(
        class_keys(&with_new, "oil stain"),
        class_keys(&reference, "oil stain")
    );

    // The enrolled shots are stored with the pack: features, classes, sources (file + sha256).
    let stored = with_new.stored_shots().expect("stored shots");
    assert_eq!(stored.len(), 3);
    let names: Vec<&str> = stored
        .labels
        .iter()
        .map(|&c| with_new.class_names()[c as usize].as_str())
        .collect();
    assert_eq!(names, ["nominal", "nominal", "oil stain"]);
    let file_sha = sha(&std::fs::read(&imgs[0]).unwrap());
    assert!(
        stored.sources[0].contains(imgs[0].file_name().unwrap().to_str().unwrap())
            && stored.sources[0].contains(&file_sha[..16]),
        "{:?}",
        stored.sources
    );
    assert!(common::cosine(&stored.features[..32], &nominal[64..96]) > 0.999);
    assert_eq!(with_new.header().version, 3);
    // finetune trains on the drawn shots and the stored ones, and keeps them stored.
    let ft = dir.path().join("ft.pack");
    let finetune = |shots: Option<&Path>| {
        let mut cmd = bin();
        cmd.args(["finetune", "--json", "--epochs", "2", "--no-feature-store"])
            .arg("-m")
            .arg(model())
            .arg("--pack")
            .arg(sd.slot_path(sd.active().unwrap().unwrap()))
            .arg("--val")
            .arg(textile("val"))
            .arg("--out")
            .arg(&ft);
        if let Some(s) = shots {
            cmd.arg("--shots").arg(s);
        }
        cmd.output().unwrap()
    };
    let o = finetune(Some(&textile("shots")));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let r = json(&o);
    assert_eq!(
        (r["n_shots"].as_u64(), r["stored_shots"].as_u64()),
        (Some(9), Some(3))
    );
    let tuned = Pack::open(&ft, &sd.expect()).unwrap();
    assert_eq!(tuned.stored_shots(), with_new.stored_shots());
    // Without --shots, the drawn keys have nothing to train on: refused, saying so.
    let o = finetune(None);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stdout);
    assert!(e.contains("0 shots are drawn here and 0 are stored"), "{e}");

    // Rollback undoes the enrolment: the pack before it is active again.
    let o = bin()
        .arg("rollback")
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sha(sd.active_pack().unwrap().1.as_bytes()), active_sha);

    // Not a state directory.
    let o = enrol(&dir.path().join("nowhere"), "nominal", &[], &imgs);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stdout).contains("not a tipedge state directory"));
}

/// A line-oriented client of the control socket.
struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }
    fn send(&mut self, line: &[u8]) -> serde_json::Value {
        self.writer.write_all(line).unwrap();
        self.writer.write_all(b"\n").unwrap();
        let mut reply = String::new();
        self.reader.read_line(&mut reply).unwrap();
        assert!(reply.ends_with('\n'), "{reply:?}");
        serde_json::from_str(&reply).unwrap()
    }
}

/// A running stream taught from its control socket: status, refusals (not JSON, not UTF-8,
/// unknown command or class, a line too long), enrolment of the next frames as a new class, and
/// the stream switching to the new pack between two frames without losing one.
#[test]
fn the_control_socket_enrols_frames_of_a_running_stream() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let p0 = dir.path().join("p0.pack");
    build(&textile("shots"), &p0, "2");
    assert_eq!(flash(&p0, &state).status.code(), Some(0));
    let socket = state.join("control.sock");

    let (w, h) = (64u32, 48u32);
    let frame: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let mut spawned = bin()
        .arg("stream")
        .arg("--model")
        .arg(model())
        .arg("--state")
        .arg(&state)
        .arg("--control")
        .args(["--format", "rgb24", "--size", "64x48", "--all-frames"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = spawned.stdin.take().unwrap();
    let child = common::Drained::new(spawned);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (done, frame) = (Arc::clone(&done), frame.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) && n < 20_000 {
                input.write_all(&frame).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    let t0 = Instant::now();
    while !socket.exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let mut c = Client::connect(&socket);
    let s = c.send(br#"{"cmd":"status"}"#);
    assert_eq!(
        (s["ok"].as_bool(), s["type"].as_str()),
        (Some(true), Some("status"))
    );
    assert_eq!(s["active"], "a");
    assert!(s["stream"]["classified"].is_u64());
    for (line, why) in [
        (&b"hello"[..], "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (br#"{"cmd":"reboot"}"#, "not a command"),
        (
            br#"{"cmd":"enrol","class":"blob","frames":3}"#,
            "not in the active pack",
        ),
        (
            br#"{"cmd":"enrol","class":"blob","frames":0,"new":true}"#,
            "frames must be",
        ),
    ] {
        let r = c.send(line);
        assert_eq!(r["ok"], false);
        let e = r["error"].as_str().unwrap();
        assert!(e.contains(why), "{}: {e}", text(line));
    }
    assert_eq!(c.send(br#"{"cmd":"reload"}"#)["ok"], true);
    let r = c.send(br#"{"cmd":"enrol","class":"blob","frames":4,"new":true}"#);
    assert_eq!(r["ok"], true, "{r}");
    let frames: Vec<u64> = r["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_u64().unwrap())
        .collect();
    assert_eq!(frames.len(), 4);
    assert!(frames.windows(2).all(|w| w[1] == w[0] + 1), "{frames:?}");
    let new_label = r["pack"].as_str().unwrap().to_string();
    // A line too long to be a command: refused, then the connection is closed.
    let mut long = br#"{"cmd":"status","x":""#.to_vec();
    long.extend(std::iter::repeat_n(b'x', 5000));
    let r = c.send(&long);
    assert!(r["error"].as_str().unwrap().contains("at most"), "{r}");
    let mut rest = String::new();
    assert_eq!(c.reader.read_to_string(&mut rest).unwrap_or(0), 0);

    // Let the stream run on the new pack for a while, then end it.
    std::thread::sleep(Duration::from_millis(1500));
    done.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    let out = child.finish(Duration::from_secs(60));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!socket.exists(), "the socket is removed at the end");
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let predictions: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["type"] == "prediction").collect();
    assert_eq!(predictions.len() as u64, written, "{stderr}");
    let first_new = predictions
        .iter()
        .position(|p| p["pack"] == new_label.as_str())
        .expect("the stream switched to the enrolled pack");
    for (i, p) in predictions.iter().enumerate() {
        assert_eq!(p["frame"], i);
        let expected = if i < first_new {
            "a:"
        } else {
            new_label.as_str()
        };
        assert!(
            p["pack"].as_str().unwrap().starts_with(expected),
            "frame {i}: {p}"
        );
    }
    assert!(
        first_new as u64 > frames[3],
        "a frame was classified with a pack made from it"
    );
    // The enrolled keys are the frames' features: the frame as a PNG through `tipedge embed`.
    let png = dir.path().join("frame.png");
    image::RgbImage::from_raw(w, h, frame)
        .unwrap()
        .save(&png)
        .unwrap();
    let f = &embed(&[png])[0];
    let sd = StateDir::open(&state).unwrap();
    let (_, pack) = sd.active_pack().unwrap();
    let keys = class_keys(&pack, "blob");
    assert_eq!(keys.len(), 4 * 32);
    for k in keys.chunks(32) {
        assert!(common::cosine(k, f) > 0.9999, "{}", common::cosine(k, f));
    }
    // The most recent frames say "blob" (they are the enrolled frame, again).
    let last = predictions.last().unwrap();
    assert_eq!(last["top"][0]["label"], "blob", "{last}");
    eprintln!(
        "{} frames; enrolled frames {frames:?}; first frame on the new pack: {first_new}",
        predictions.len()
    );
}

/// 200 enrolments killed with SIGKILL at random moments (over the whole run: loading the
/// model, encoding, building and writing a 4 MB pack): every time the active pack verifies and
/// is the one before or the one with the new shot, and the next enrolment cleans up.
#[test]
fn kill_9_during_enrol_never_leaves_a_partial_active_pack() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let p = random_pack(dir.path(), "big.pack", 120_000, 5);
    assert_eq!(flash(&p, &state).status.code(), Some(0));
    let sd = StateDir::open(&state).unwrap();
    let img = query_images("local_defect", 1);
    let args = ["--augment-epochs", "0"];
    // The fastest of three whole enrolments sets the range of the kill delays.
    let mut whole = (0..3)
        .map(|_| {
            let t = Instant::now();
            let o = enrol(&state, "scratch", &args, &img);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
            t.elapsed()
        })
        .min()
        .unwrap();
    let (mut killed, mut completed, mut mid_write) = (0, 0, 0);
    let mut rng = 0x9E37_79B9u32;
    let t0 = Instant::now();
    for i in 0..200 {
        let (_, before) = sd.active_pack().unwrap();
        let (before_sha, before_keys) = (sha(before.as_bytes()), before.n_keys());
        drop(before);
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        // Half the kills anywhere in the run, half in its second half, where the pack is
        // built and written (loading the model comes first).
        let at = f64::from(rng % 1000) / 1000.0;
        let delay = whole.mul_f64(0.9 * if i % 2 == 0 { at } else { 0.5 + 0.5 * at });
        let mut child = bin()
            .args(["enrol", "--class", "scratch"])
            .args(args)
            .arg("--state")
            .arg(&state)
            .args(&img)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        // The window follows the machine's speed (other tests share it): shorter after an
        // enrolment that finished before its kill, longer after one that did not.
        if child.wait().unwrap().success() {
            completed += 1;
            whole = whole.mul_f64(0.85);
        } else {
            killed += 1;
            whole = whole.mul_f64(1.03);
        }
        mid_write += usize::from(leftovers(&state) > 0);
        let (_, now) = sd
            .active_pack()
            .unwrap_or_else(|e| panic!("kill {i}: active pack broken: {e}"));
        if sha(now.as_bytes()) != before_sha {
            assert_eq!(now.n_keys(), before_keys + 1, "kill {i}");
        }
    }
    eprintln!(
        "200 enrolments (kill window at the end {:.0} ms): {killed} killed ({mid_write} while a \
         slot was being written), {completed} completed, in {:.1} s",
        whole.as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        killed >= 60,
        "kills should land inside enrolments: {killed}"
    );
    assert!(
        mid_write >= 5,
        "some kills must interrupt the write: {mid_write}"
    );
    let o = enrol(&state, "scratch", &args, &img);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(leftovers(&state), 0);
}

/// A flash onto a full file system (a 3 MB tmpfs in a private mount namespace): a clear error,
/// the active pack untouched, no temporary file left, and the next flash that fits succeeds.
#[test]
fn a_full_disk_during_flash_leaves_the_active_pack() {
    let dir = tempfile::tempdir().unwrap();
    // About 0.4 MB, 0.4 MB and 3.2 MB (32 int8 values, a scale and a label per key).
    let small = random_pack(dir.path(), "small.pack", 10_000, 1);
    let small2 = random_pack(dir.path(), "small2.pack", 10_001, 2);
    let big = random_pack(dir.path(), "big.pack", 80_000, 3);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let state = mnt.join("state");
    // Root needs only a mount namespace; anyone else maps to root in a user namespace.
    let root = is_root();
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=3m tmpfs "{mnt}" || {{ echo "MOUNT FAILED"; exit 3; }}
"{bin}" flash --model "{model}" --state "{state}" "{small}"; echo "first=$?"
"{bin}" flash --state "{state}" "{big}"; echo "big=$?"
"{bin}" status --json --state "{state}"; echo
echo "leftovers=$(find "{state}" -name '*.tmp-*' | wc -l)"
"{bin}" flash --state "{state}" "{small2}"; echo "second=$?"
"{bin}" status --json --state "{state}"; echo
"#,
        mnt = mnt.display(),
        bin = env!("CARGO_BIN_EXE_tipedge"),
        model = model().display(),
        state = state.display(),
        small = small.display(),
        small2 = small2.display(),
        big = big.display(),
    );
    let mut cmd = Command::new("unshare");
    if !root {
        cmd.arg("--map-root-user");
    }
    let o = cmd
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) runs the test in a private mount namespace");
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert!(
        !out.contains("MOUNT FAILED") && o.status.success(),
        "cannot mount a tmpfs in a private namespace here: {out}{err}"
    );
    eprintln!("{out}{err}");
    assert!(
        out.contains("first=0") && out.contains("big=2") && out.contains("second=0"),
        "{out}{err}"
    );
    let big_error = err
        .lines()
        .find(|l| l.contains("big.pack") || l.contains("space"));
    let big_error = big_error.expect("the failed flash says why");
    assert!(
        big_error.to_lowercase().contains("no space left on device"),
        "{big_error}"
    );
    let statuses: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let active_sha = |s: &serde_json::Value| {
        let slot = s["active"].as_str().unwrap().to_string();
        let st = s["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["slot"] == slot.as_str())
            .unwrap()
            .clone();
        assert_eq!(st["verified"], true, "{st}");
        st["flashed"]["sha256"].as_str().unwrap().to_string()
    };
    assert_eq!(
        active_sha(&statuses[0]),
        sha(&std::fs::read(&small).unwrap())
    );
    assert!(out.contains("leftovers=0"), "{out}");
    assert_eq!(
        active_sha(&statuses[1]),
        sha(&std::fs::read(&small2).unwrap())
    );
}

fn is_root() -> bool {
    // The effective uid from /proc (no libc dependency in the tests).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `--control PATH` never replaces a file that is not a socket: refused in one line, the file
/// untouched.
#[test]
fn the_control_socket_never_replaces_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let p = random_pack(dir.path(), "p.pack", 6, 1);
    assert_eq!(flash(&p, &state).status.code(), Some(0));
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, b"keep me").unwrap();
    let o = bin()
        .arg("stream")
        .arg("--model")
        .arg(model())
        .arg("--state")
        .arg(&state)
        .arg("--control")
        .arg(&precious)
        .args(["--format", "rgb24", "--size", "64x48"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(
        e.contains("precious.txt: exists and is not a socket"),
        "{e}"
    );
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
}

/// A new class enrolled on a pack built with a CoOp context gets its W row from that context
/// (as `classes add` makes it), not from prompt templates.
#[test]
fn enrolling_a_new_class_on_a_coop_pack_takes_its_row_from_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let p0 = dir.path().join("coop.pack");
    let ctx = common::fixture("coop/ctx_middle_generic.safetensors");
    let o = bin()
        .args(["cache", "build", "--augment-epochs", "0", "-k", "2"])
        .arg("-m")
        .arg(model())
        .arg("--shots")
        .arg(textile("shots"))
        .arg("--coop")
        .arg(&ctx)
        .arg("--out")
        .arg(&p0)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let reference = dir.path().join("added.pack");
    let o = bin()
        .args(["classes", "add", "--name", "oil stain"])
        .arg("--model")
        .arg(model())
        .arg("--pack")
        .arg(&p0)
        .arg("--out")
        .arg(&reference)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = flash(&p0, &state);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = enrol(
        &state,
        "oil stain",
        &["--new"],
        &query_images("local_defect", 1),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let sd = StateDir::open(&state).unwrap();
    let (_, enrolled) = sd.active_pack().unwrap();
    assert!(enrolled.prompt_context().is_some());
    let reference = Pack::open(&reference, &sd.expect()).unwrap();
    let d = common::max_abs_diff(
        &w_row(&enrolled, "oil stain"),
        &w_row(&reference, "oil stain"),
    );
    assert!(d <= 1e-6, "enrolled row vs classes add's: {d:e}");
}
