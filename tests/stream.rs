//! `tipedge stream` with real frames: ffmpeg makes raw NV12 / YUYV / RGB and MJPEG streams from
//! the bundled textile photos and from its `testsrc`, piped into the binary. Needs `ffmpeg` on
//! the PATH (`.ci/run` installs it); without it these tests are skipped with a note on stderr,
//! or fail where `TIPEDGE_REQUIRE_TOOLS` is set (as `.ci/run` sets it).
#![cfg(feature = "cli")]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tipedge"))
}

fn model() -> PathBuf {
    common::fixture("efficientnet-lite0")
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// ffmpeg's output for `args` (stdout bytes); fails the test with ffmpeg's message.
fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(args)
        .output()
        .expect("ffmpeg must be installed for the stream tests (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        text(&out.stderr)
    );
    out.stdout
}

/// A small pack of the bundled shots (no temperature: probabilities are plain softmax).
fn pack(dir: &Path) -> PathBuf {
    let out = dir.join("t.pack");
    let o = bin()
        .args([
            "cache",
            "build",
            "-k",
            "4",
            "--augment-epochs",
            "1",
            "--model",
        ])
        .arg(model())
        .arg("--shots")
        .arg(common::repo("examples/textile/shots"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    out
}

/// The query photos, in a fixed order.
fn photos(n: usize) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["global_defect", "local_defect", "nominal"]
        .iter()
        .flat_map(|c| {
            std::fs::read_dir(common::repo("examples/textile/query").join(c))
                .unwrap()
                .map(|e| e.unwrap().path())
        })
        .collect();
    v.sort();
    // Every class represented: take evenly spaced photos.
    let step = (v.len() / n).max(1);
    v.into_iter().step_by(step).take(n).collect()
}

/// `tipedge classify --json` on `photos`: one record each, in order.
fn classify(pack: &Path, photos: &[PathBuf]) -> Vec<serde_json::Value> {
    let o = bin()
        .args(["classify", "--json", "--model"])
        .arg(model())
        .arg("--pack")
        .arg(pack)
        .args(photos)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    json_lines(&o.stdout)
}

/// Runs `tipedge stream` with `stdin` bytes and arguments; its output.
fn stream(pack: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = bin()
        .arg("stream")
        .arg("--model")
        .arg(model())
        .arg("--pack")
        .arg(pack)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = wait_with_timeout(child, Duration::from_secs(120));
    writer.join().unwrap();
    out
}

fn wait_with_timeout(child: Child, limit: Duration) -> Output {
    common::Drained::new(child).finish(limit)
}

fn records<'a>(
    lines: &'a [serde_json::Value],
    kind: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    lines.iter().filter(move |l| l["type"] == kind)
}

/// A live camera: ffmpeg's `-re` test source (`source` = the lavfi graph and any output
/// options) writing raw `format` frames of `size` into `tipedge stream`'s stdin.
fn live(pack: &Path, source: &[&str], format: &str, size: &str) -> (Child, Child) {
    let mut camera = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-f",
            "lavfi",
            "-i",
        ])
        .args(source)
        .args(["-f", "rawvideo", "-pix_fmt", format, "-"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg must be installed for the stream tests (apt-get install ffmpeg)");
    let tipedge = bin()
        .arg("stream")
        .arg("--model")
        .arg(model())
        .arg("--pack")
        .arg(pack)
        .args(["--format", format, "--size", size])
        .stdin(camera.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (camera, tipedge)
}

/// Raw frames (NV12, YUYV, RGB24) converted by ffmpeg from the query photos give the same top-1
/// as `tipedge classify` on the photos themselves, with probabilities close (the differences
/// are ffmpeg's JPEG decoder and the RGB → YUV → RGB round trip at 4:2:0 / 4:2:2).
#[test]
fn raw_frames_agree_with_classify_on_the_same_pictures() {
    if !common::needs("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pack = pack(dir.path());
    let photos = photos(12);
    let files = classify(&pack, &photos);
    for (format, tolerance) in [("rgb24", 0.02), ("yuyv422", 0.05), ("nv12", 0.05)] {
        let mut raw = Vec::new();
        for p in &photos {
            raw.extend(ffmpeg(&[
                "-i",
                p.to_str().unwrap(),
                "-f",
                "rawvideo",
                "-pix_fmt",
                format,
                "-",
            ]));
        }
        let out = stream(
            &pack,
            &["--format", format, "--size", "250x250", "--all-frames"],
            &raw,
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let lines = json_lines(&out.stdout);
        let frames: Vec<_> = records(&lines, "prediction").collect();
        assert_eq!(frames.len(), photos.len(), "{format}");
        let mut worst = 0f64;
        for (i, (f, c)) in frames.iter().zip(&files).enumerate() {
            assert_eq!(f["frame"], i as u64);
            assert_eq!(
                f["top"][0]["label"],
                c["top"][0]["label"],
                "{format}, {}: frame {f} vs file {c}",
                photos[i].display()
            );
            for (a, b) in f["top"]
                .as_array()
                .unwrap()
                .iter()
                .zip(c["top"].as_array().unwrap())
            {
                if a["class"] == b["class"] {
                    let d = (a["prob"].as_f64().unwrap() - b["prob"].as_f64().unwrap()).abs();
                    worst = worst.max(d);
                }
            }
            assert!(f["latency_ms"].as_f64().unwrap() > 0.0);
            assert!(f["arrival_unix"].as_f64().unwrap() > 1.7e9);
        }
        eprintln!("{format}: largest probability difference {worst:.4}");
        assert!(worst <= tolerance, "{format}: {worst}");
        let summary = records(&lines, "stream_summary").next().unwrap();
        assert_eq!(summary["classified"], photos.len());
        assert_eq!(summary["dropped"], 0);
        assert_eq!(summary["stopped"], false);
    }
}

/// MJPEG from ffmpeg's test source with garbage spliced between frames and a truncated last
/// frame: every good frame is classified, the garbage and the cut frame are reported on one
/// line each, the exit code is 1 and the stream reaches its end.
#[test]
fn mjpeg_with_garbage_and_a_cut_frame_goes_on() {
    if !common::needs("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pack = pack(dir.path());
    let mjpeg = ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=10",
        "-frames:v",
        "8",
        "-f",
        "mjpeg",
        "-",
    ]);
    // Split at the SOI markers ffmpeg wrote, and rebuild with garbage after frame 2.
    let starts: Vec<usize> = (0..mjpeg.len() - 2)
        .filter(|&i| mjpeg[i..i + 3] == [0xFF, 0xD8, 0xFF])
        .collect();
    assert_eq!(starts.len(), 8, "ffmpeg wrote 8 frames");
    let mut bytes = mjpeg[..starts[3]].to_vec();
    bytes.extend_from_slice(b"this is not a JPEG frame");
    bytes.extend_from_slice(&mjpeg[starts[3]..]);
    let cut = bytes.len() - 500;
    bytes.truncate(cut);
    let out = stream(&pack, &["--format", "mjpeg", "--all-frames"], &bytes);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines = json_lines(&out.stdout);
    let frames: Vec<u64> = records(&lines, "prediction")
        .map(|f| f["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(frames, [0, 1, 2, 3, 4, 5, 6], "{stderr}");
    let errors: Vec<_> = records(&lines, "error").collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(stderr.contains("garbage"), "{stderr}");
    assert!(
        stderr.contains("frame 7") && stderr.contains("truncated"),
        "{stderr}"
    );
    let summary = records(&lines, "stream_summary").next().unwrap();
    assert_eq!(summary["bad"], 2);
}

/// A camera faster than the classifier: ffmpeg's test source at 60 frames per second in real
/// time (4 s), 640×480 NV12, piped in; stale frames are dropped (counted), and the latency of
/// what is classified stays bounded: p99 under 2 s (a few encoder runs, with room for a loaded
/// CI machine), where a queue of every frame would have grown to about 8 s by the end.
#[test]
fn a_slow_classifier_drops_stale_frames_and_latency_stays_bounded() {
    if !common::needs("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pack = pack(dir.path());
    let (mut camera, tipedge) = live(
        &pack,
        &["testsrc=size=640x480:rate=60", "-frames:v", "240"],
        "nv12",
        "640x480",
    );
    let out = wait_with_timeout(tipedge, Duration::from_secs(60));
    let _ = camera.wait();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    let s = records(&lines, "stream_summary").next().unwrap().clone();
    eprintln!("{s}");
    assert_eq!(s["read"], 240);
    let (classified, dropped) = (
        s["classified"].as_u64().unwrap(),
        s["dropped"].as_u64().unwrap(),
    );
    assert!(dropped > 0, "{s}");
    assert!(classified >= 10, "{s}");
    assert_eq!(classified + dropped, 240, "{s}");
    assert!(s["latency_p99_ms"].as_f64().unwrap() < 2000.0, "{s}");
    // The frames classified are in order, and the last frame is among them (the slot keeps the
    // newest).
    let frames: Vec<u64> = records(&lines, "prediction")
        .map(|f| f["frame"].as_u64().unwrap())
        .collect();
    assert!(frames.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(frames.last(), Some(&239));

    // --every 10 with --all-frames: exactly frames 0, 10, …, 290.
    let raw = ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x480:rate=30",
        "-frames:v",
        "300",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "nv12",
        "-",
    ]);
    let out = stream(
        &pack,
        &[
            "--format",
            "nv12",
            "--size",
            "640x480",
            "--all-frames",
            "--every",
            "10",
        ],
        &raw,
    );
    let lines = json_lines(&out.stdout);
    let frames: Vec<u64> = records(&lines, "prediction")
        .map(|f| f["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(frames, (0..300).step_by(10).collect::<Vec<u64>>());
    let s = records(&lines, "stream_summary").next().unwrap();
    assert_eq!(
        (s["sampled_out"].as_u64(), s["dropped"].as_u64()),
        (Some(270), Some(0))
    );
}

/// Events: a "camera" that looks at a photo of one predicted class for a while, flickers to
/// another for two frames, comes back, then moves to the other for good; with --events a line
/// appears only for the changes that hold (--min-frames 3): at frame 2 (the first class) and
/// at frame 16 (the second), not for the flicker.
#[test]
fn events_only_when_the_class_changes_and_holds() {
    if !common::needs("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pack = pack(dir.path());
    let photos = photos(12);
    let files = classify(&pack, &photos);
    let label = |i: usize| files[i]["top"][0]["label"].as_str().unwrap().to_string();
    let a = 0;
    let b = (1..photos.len())
        .find(|&i| label(i) != label(a))
        .expect("two photos with different predictions");
    let frame = |i: usize| {
        ffmpeg(&[
            "-i",
            photos[i].to_str().unwrap(),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
    };
    let (fa, fb) = (frame(a), frame(b));
    let mut raw = Vec::new();
    for (f, n) in [(&fa, 6), (&fb, 2), (&fa, 6), (&fb, 6)] {
        for _ in 0..n {
            raw.extend_from_slice(f);
        }
    }
    let out = stream(
        &pack,
        &[
            "--format",
            "rgb24",
            "--size",
            "250x250",
            "--all-frames",
            "--events",
            "--min-frames",
            "3",
            "--min-score",
            "0.0",
        ],
        &raw,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(records(&lines, "prediction").count(), 0);
    let events: Vec<_> = records(&lines, "event").collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["frame"], 2);
    assert!(events[0]["from"].is_null());
    assert_eq!(events[0]["to"], label(a).as_str());
    assert_eq!(events[1]["frame"], 16);
    assert_eq!(events[1]["from"], label(a).as_str());
    assert_eq!(events[1]["to"], label(b).as_str());
    assert_eq!(
        records(&lines, "stream_summary").next().unwrap()["events"],
        2
    );
}

/// Bad sizes and formats are refused before anything is read, in one line.
#[test]
fn bad_stream_arguments_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let pack = pack(dir.path());
    for (args, needle) in [
        (vec!["--format", "nv12", "--size", "251x250"], "even"),
        (vec!["--format", "nv12"], "needs --size"),
        (vec!["--format", "nv13", "--size", "8x8"], "nv13"),
        (vec!["--format", "rgb24", "--size", "8"], "WIDTHxHEIGHT"),
        (vec!["--format", "mjpeg", "--max-fps", "0"], "max-fps"),
    ] {
        let out = stream(&pack, &args, b"");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        // The first line says it all (clap adds a usage hint below its own errors).
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(needle),
            "{args:?}: {err}"
        );
    }
}

/// SIGINT ends a live stream (ffmpeg's test source at real time, never ending) after the frame
/// in flight, with the summary, within a bounded time.
#[test]
fn sigint_finishes_the_frame_and_prints_the_summary() {
    if !common::needs("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pack = pack(dir.path());
    let (mut camera, tipedge) = live(
        &pack,
        &["testsrc=size=320x240:rate=25"],
        "yuyv422",
        "320x240",
    );
    std::thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    // SAFETY: kill(2) on a child's pid.
    unsafe {
        libc_kill(tipedge.id() as i32, 2);
    }
    let out = wait_with_timeout(tipedge, Duration::from_secs(10));
    let stopped_in = t0.elapsed();
    let _ = camera.kill();
    let _ = camera.wait();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    let s = records(&lines, "stream_summary").next().expect("a summary");
    assert_eq!(s["stopped"], true);
    assert!(s["classified"].as_u64().unwrap() > 2, "{s}");
    assert!(stopped_in < Duration::from_secs(2), "{stopped_in:?}");
    assert!(text(&out.stderr).contains("stopped by a signal"));
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[path = "common/mqtt.rs"]
mod mqtt_util;

/// `--mqtt` against a real Mosquitto: a subscriber receives every prediction line, byte for
/// byte as stdout printed it; with the broker unreachable the stream still runs to the end,
/// says so on one line, and counts what it could not deliver.
#[test]
fn mqtt_publishes_every_prediction_and_survives_a_missing_broker() {
    if !common::needs("ffmpeg") || !common::needs("mosquitto") {
        return;
    }
    use mqtt_util::{free_port, Broker, Subscriber, TempDir};
    let dir = tempfile::tempdir().unwrap();
    let pack = pack(dir.path());
    let raw = ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=10",
        "-frames:v",
        "12",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "nv12",
        "-",
    ]);
    let broker_dir = TempDir::new("stream");
    let port = free_port();
    let _broker = Broker::start(port, broker_dir.path(), false);
    let subscriber = Subscriber::start(port, "tipedge/line1", "sub-stream", false);
    subscriber.wait_subscribed(Duration::from_secs(5));
    let url = format!("mqtt://127.0.0.1:{port}/tipedge/line1");
    let out = stream(
        &pack,
        &[
            "--format",
            "nv12",
            "--size",
            "160x120",
            "--all-frames",
            "--mqtt",
            &url,
        ],
        &raw,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = text(&out.stdout);
    let printed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"type\":\"prediction\""))
        .collect();
    assert_eq!(printed.len(), 12);
    assert!(subscriber.wait_for(12, Duration::from_secs(5)), "{stderr}");
    let received: Vec<String> = subscriber
        .messages()
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(received, printed);
    let lines = json_lines(&out.stdout);
    let summary = records(&lines, "stream_summary").next().unwrap();
    assert_eq!(summary["mqtt"]["published"], 12, "{summary}");
    assert_eq!(summary["mqtt"]["dropped"], 0);

    // Nothing listening: the frames are classified all the same, one note says why nothing
    // was delivered, and the summary counts it.
    let nobody = format!("mqtt://127.0.0.1:{}/tipedge/line1", free_port());
    let out = stream(
        &pack,
        &[
            "--format",
            "nv12",
            "--size",
            "160x120",
            "--all-frames",
            "--mqtt",
            &nobody,
            "--mqtt-queue",
            "4",
        ],
        &raw,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines = json_lines(&out.stdout);
    assert_eq!(records(&lines, "prediction").count(), 12);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    let summary = records(&lines, "stream_summary").next().unwrap();
    assert_eq!(summary["mqtt"]["published"], 0, "{summary}");
    assert_eq!(summary["mqtt"]["dropped"], 8, "{summary}");
}

/// A watched folder: a JPEG renamed in (the atomic writer's way) and a PNG written slowly in
/// chunks are each classified once, when complete; a file that is not an image is reported by
/// name and the stream goes on; SIGTERM ends it with exit code 1 (one input was bad).
#[test]
fn watched_folder_classifies_each_complete_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let pack = pack(dir.path());
    let drop_dir = dir.path().join("drop");
    std::fs::create_dir(&drop_dir).unwrap();
    let child = bin()
        .arg("stream")
        .arg("--model")
        .arg(model())
        .arg("--pack")
        .arg(&pack)
        .arg("--watch")
        .arg(&drop_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let photos = photos(3);
    std::fs::copy(&photos[0], drop_dir.join(".a.tmp")).unwrap();
    std::fs::rename(drop_dir.join(".a.tmp"), drop_dir.join("a.jpg")).unwrap();
    let png = image::open(&photos[1]).unwrap();
    let mut bytes = Vec::new();
    png.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    {
        let mut f = std::fs::File::create(drop_dir.join("b.png")).unwrap();
        for chunk in bytes.chunks(bytes.len() / 4 + 1) {
            f.write_all(chunk).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::fs::write(drop_dir.join("notes.txt"), b"not an image").unwrap();
    // Time to classify the three (each well under a second here).
    std::thread::sleep(Duration::from_secs(4));
    // SAFETY: kill(2) on a child's pid.
    unsafe {
        libc_kill(child.id() as i32, 15);
    }
    let out = wait_with_timeout(child, Duration::from_secs(10));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines = json_lines(&out.stdout);
    let mut classified: Vec<String> = records(&lines, "prediction")
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    classified.sort();
    assert_eq!(
        classified,
        [drop_dir.join("a.jpg"), drop_dir.join("b.png")].map(|p| p.display().to_string())
    );
    let errors: Vec<_> = records(&lines, "error").collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]["error"].as_str().unwrap().contains("notes.txt"),
        "{errors:?}"
    );
    assert!(stderr.contains("notes.txt"), "{stderr}");
    assert_eq!(
        records(&lines, "stream_summary").next().unwrap()["stopped"],
        true
    );
}

/// A JPEG bomb inside an MJPEG stream: a frame whose header claims 40000 × 40000 pixels is
/// refused from its header by the pixel limit (one line naming the frame), and the frames
/// around it are classified.
#[test]
fn a_jpeg_bomb_in_the_stream_is_refused_and_the_stream_goes_on() {
    if !common::needs("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pack = pack(dir.path());
    let mjpeg = ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=10",
        "-frames:v",
        "3",
        "-f",
        "mjpeg",
        "-",
    ]);
    let starts: Vec<usize> = (0..mjpeg.len() - 2)
        .filter(|&i| mjpeg[i..i + 3] == [0xFF, 0xD8, 0xFF])
        .collect();
    assert_eq!(starts.len(), 3);
    // Frame 1's SOF0 (FF C0, length, precision, height, width): claim 40000 × 40000.
    let mut bytes = mjpeg.clone();
    let sof = (starts[1]..starts[2])
        .find(|&i| bytes[i] == 0xFF && bytes[i + 1] == 0xC0)
        .expect("a baseline JPEG has SOF0");
    bytes[sof + 5..sof + 7].copy_from_slice(&40000u16.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&40000u16.to_be_bytes());
    let t0 = Instant::now();
    let out = stream(&pack, &["--format", "mjpeg", "--all-frames"], &bytes);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines = json_lines(&out.stdout);
    let frames: Vec<u64> = records(&lines, "prediction")
        .map(|f| f["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(frames, [0, 2]);
    let errors: Vec<_> = records(&lines, "error").collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["frame"], 1);
    let e = errors[0]["error"].as_str().unwrap();
    assert!(e.contains("frame 1") && e.contains("40000"), "{e}");
    // Refused from the header: no 1.6-gigapixel decode was attempted.
    assert!(t0.elapsed() < Duration::from_secs(30));
}
