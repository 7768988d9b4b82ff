//! A device's life cycle: `tipedge flash` / `rollback` / `status` on A/B slots, kill -9 during
//! flashes, and a running `tipedge stream --state` that follows the active pack.
#![cfg(feature = "cli")]

mod common;
#[path = "common/device.rs"]
mod device_util;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use device_util::{bin, flash, leftovers, model, random_pack, sha, text};
use tipedge::adapter::AdapterParams;
use tipedge::device::{Slot, StateDir};
use tipedge::encoder::ImageEncoder;
use tipedge::pack::{PackDraft, Provenance};

fn run(args: &[&str], state: &Path) -> Output {
    bin().args(args).arg("--state").arg(state).output().unwrap()
}

/// flash → status → flash → rollback, with the active slot alternating and each slot verified;
/// bad packs, a bad state directory and a broken `active` link refused in one line, the active
/// pack untouched.
#[test]
fn flash_status_rollback_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let v1 = random_pack(dir.path(), "v1.pack", 12, 1);
    let v2 = random_pack(dir.path(), "v2.pack", 15, 2);

    // Not a state directory yet, and no --model: refused.
    let out = run(&["status"], &state);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a tipedge state directory"),
        "{}",
        text(&out.stderr)
    );

    let out = flash(&v1, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&["status", "--json"], &state);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["active"], "a");
    assert_eq!(s["slots"][0]["verified"], true);
    assert_eq!(s["slots"][0]["pack"]["keys"], 12);
    assert_eq!(s["slots"][0]["flashed"]["sha256"], sha(&v1).as_str());
    assert_eq!(s["slots"][1]["present"], false);

    let out = run(&["flash", v2.to_str().unwrap(), "--json"], &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (f["active"].as_str(), f["previous"].as_str()),
        (Some("b"), Some("a"))
    );
    let out = run(&["rollback", "--json"], &state);
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["active"], "a");
    assert_eq!(f["sha256"], sha(&v1).as_str());
    let sd = StateDir::open(&state).unwrap();
    assert_eq!(sd.active().unwrap(), Some(Slot::A));

    // Bad packs: truncated, a flipped bit, another encoder's; each one line, nothing changes.
    let bytes = std::fs::read(&v2).unwrap();
    let truncated = dir.path().join("truncated.pack");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let flipped = dir.path().join("flipped.pack");
    let mut b = bytes.clone();
    let at = b.len() - 50;
    b[at] ^= 0x10;
    std::fs::write(&flipped, &b).unwrap();
    let other = dir.path().join("other.pack");
    {
        let e =
            ImageEncoder::expect_for(&common::fixture("efficientnet-lite0/image.onnx")).unwrap();
        let dim = e.dim.unwrap();
        let mut keys = vec![0.0f32; 3 * dim];
        for (i, k) in keys.chunks_mut(dim).enumerate() {
            k[i] = 1.0;
        }
        PackDraft::from_f32_keys(
            dim,
            keys,
            vec![0, 1, 2],
            vec!["a".into(), "b".into(), "c".into()],
            None,
            AdapterParams::default(),
            e.encoder.unwrap(),
            Provenance::default(),
        )
        .unwrap()
        .write(&other)
        .unwrap();
    }
    for bad in [&truncated, &flipped, &other] {
        let out = run(&["flash", bad.to_str().unwrap()], &state);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(bad.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
        assert_eq!(sd.active().unwrap(), Some(Slot::A), "{err}");
        assert_eq!(sha(&sd.slot_path(Slot::A)), sha(&v1));
    }
    // Another model for this state directory: refused.
    let out = bin()
        .arg("flash")
        .arg(&v1)
        .arg("--model")
        .arg(common::fixture("efficientnet-lite0"))
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("set up for another model"),
        "{}",
        text(&out.stderr)
    );

    // A garbage `active` link and a corrupt inactive slot: named, and rollback refuses.
    std::fs::write(sd.slot_path(Slot::B), b"garbage").unwrap();
    let out = run(&["rollback"], &state);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot roll back to slot b") && err.contains("slot a stays active"),
        "{err}"
    );
    let out = run(&["status"], &state);
    assert!(
        text(&out.stdout).contains("slot b  NOT USABLE"),
        "{}",
        text(&out.stdout)
    );
    std::fs::remove_file(sd.active_path()).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", sd.active_path()).unwrap();
    let out = run(&["status"], &state);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not at slots/a.pack or slots/b.pack"),
        "{}",
        text(&out.stderr)
    );
}

/// kill -9 of `tipedge flash` at random moments, 200 times, alternating two packs of a few MB:
/// after each, the active slot holds a complete pack that verifies (the old or the new one,
/// never a partial one), and the next flash is not blocked by anything left behind.
#[test]
fn kill_9_during_flash_never_leaves_a_partial_active_pack() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let packs = [
        random_pack(dir.path(), "p0.pack", 120_000, 3),
        random_pack(dir.path(), "p1.pack", 120_001, 4),
    ];
    let known = [sha(&packs[0]), sha(&packs[1])];
    let out = flash(&packs[0], &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sd = StateDir::open(&state).unwrap();
    let (mut killed, mut completed, mut mid_copy) = (0, 0, 0);
    let mut rng = 0x1234_5678u32;
    let t0 = Instant::now();
    for i in 0..200 {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let delay = Duration::from_micros(u64::from(rng % 40_000));
        let mut child = bin()
            .arg("flash")
            .arg(&packs[(i + 1) % 2])
            .arg("--state")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            completed += 1;
        } else {
            killed += 1;
        }
        // A temporary file left behind: this kill landed in the middle of writing a slot.
        mid_copy += usize::from(leftovers(&state) > 0);
        let slot = sd.active().unwrap().expect("an active slot");
        let p = sd
            .open_slot(slot)
            .unwrap_or_else(|e| panic!("kill {i}: active pack broken: {e}"));
        let s = tipedge::sidecar::sha256_hex(p.as_bytes());
        assert!(known.contains(&s), "kill {i}: active pack is neither");
    }
    eprintln!(
        "200 flashes: {killed} killed ({mid_copy} of them while a slot was being written, \
         leaving a temporary file), {completed} completed before the kill, in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        killed >= 50,
        "most kills should land inside a flash: {killed}"
    );
    assert!(
        mid_copy >= 5,
        "some kills must interrupt the copy itself: {mid_copy}"
    );
    // Nothing left blocks the next flash, and the flash cleans up what the kills left.
    let out = flash(&packs[0], &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(leftovers(&state), 0);
}

/// A running stream follows the state directory: 1,200 frames while good packs are flashed
/// every few frames, corrupt ones offered to `flash` (refused) and a corrupt pack put in the
/// inactive slot and made active by hand (refused by the stream): no frame dropped or failed,
/// every prediction names exactly one of the good packs, several of them are used.
#[test]
fn hot_swap_under_load_loses_no_frame_and_never_uses_a_bad_pack() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let good: Vec<PathBuf> = (0..4)
        .map(|i| random_pack(dir.path(), &format!("g{i}.pack"), 30 + i, 10 + i as u32))
        .collect();
    let corrupt = dir.path().join("corrupt.pack");
    let mut b = std::fs::read(&good[0]).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0xFF;
    std::fs::write(&corrupt, &b).unwrap();
    let out = flash(&good[0], &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let labels: Vec<String> = good
        .iter()
        .map(|p| {
            let sd = StateDir::open(&state).unwrap();
            let pk = tipedge::pack::Pack::open(p, &sd.expect()).unwrap();
            sd.label(Slot::A, &pk)[2..].to_string() // the sha prefix; the slot varies
        })
        .collect();

    let (w, h, frames) = (64u32, 48u32, 1200usize);
    let mut spawned = bin()
        .arg("stream")
        .arg("--model")
        .arg(model())
        .arg("--state")
        .arg(&state)
        .args(["--format", "rgb24", "--size", "64x48", "--all-frames"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = spawned.stdin.take().unwrap();
    // stdout read here: the swaps start once the stream classifies (a stream starting while
    // the active link points at a corrupt slot refuses to start, which is not what this tests).
    let stdout = spawned.stdout.take().unwrap();
    let (first, started) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if lines.is_empty() {
                let _ = first.send(());
            }
            lines.push(line);
        }
        lines
    });
    let child = common::Drained::new(spawned);
    let writer = std::thread::spawn(move || {
        let frame: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
        for i in 0..frames {
            // A stream that died closes the pipe: stop writing; its exit status and stderr
            // (below) say why.
            if let Err(e) = input.write_all(&frame) {
                return Err(format!("frame {i}: {e}"));
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        Ok(())
    });
    let sd = StateDir::open(&state).unwrap();
    let _ = started.recv_timeout(Duration::from_secs(60));
    let t0 = Instant::now();
    let mut n = 0;
    while !writer.is_finished() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(25));
        n += 1;
        match n % 4 {
            0 => {
                let out = run(&["flash", corrupt.to_str().unwrap()], &state);
                assert_eq!(out.status.code(), Some(2));
            }
            3 => {
                // By hand: garbage into the inactive slot, then the link switched to it.
                let active = sd.active().unwrap().unwrap();
                let other = active.other();
                std::fs::write(sd.slot_path(other), &b).unwrap();
                let tmp = state.join(".by-hand");
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(format!("slots/{}.pack", other.name()), &tmp).unwrap();
                std::fs::rename(&tmp, sd.active_path()).unwrap();
                std::thread::sleep(Duration::from_millis(25));
                // Repair: a good flash makes a good pack active again.
                let out = run(&["flash", good[n % good.len()].to_str().unwrap()], &state);
                assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            }
            _ => {
                let out = run(&["flash", good[n % good.len()].to_str().unwrap()], &state);
                assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            }
        }
    }
    let written = writer.join().unwrap();
    let out = child.finish(Duration::from_secs(60));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{written:?}; {stderr}");
    written.unwrap();
    let lines: Vec<serde_json::Value> = reader
        .join()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let predictions: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["type"] == "prediction").collect();
    assert_eq!(predictions.len(), frames, "{stderr}");
    assert!(lines.iter().all(|l| l["type"] != "error"));
    let mut used = std::collections::BTreeSet::new();
    for (i, p) in predictions.iter().enumerate() {
        assert_eq!(p["frame"], i);
        let pack = p["pack"].as_str().expect("every prediction names its pack");
        let (slot, prefix) = pack.split_once(':').unwrap();
        assert!(slot == "a" || slot == "b");
        assert!(
            labels.iter().any(|l| l == prefix),
            "frame {i}: unknown pack {pack}"
        );
        used.insert(prefix.to_string());
    }
    eprintln!(
        "{} state changes over {} frames; packs used: {}; stderr lines: {}",
        n,
        frames,
        used.len(),
        stderr.lines().count()
    );
    assert!(used.len() >= 2, "{used:?}");
    assert!(
        stderr.contains("stays active"),
        "a corrupt active pack must be refused: {stderr}"
    );
}
