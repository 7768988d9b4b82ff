//! Bad input: every failure is one line naming the file and the reason; batches go on.
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use tipedge::encoder::{ImageEncoder, RunOptions};
use tipedge::preprocess::{decode_rgb_bytes, load_rgb, DecodeLimits};
use tipedge::sidecar::{sha256_hex, Sidecar};

fn clip_tiny_image() -> PathBuf {
    common::fixture("clip-tiny/image.onnx")
}

fn photo() -> PathBuf {
    common::fixture("images/chelsea.jpg")
}

fn expect_image_err(bytes: &[u8], needle: &str) {
    let err = decode_rgb_bytes(bytes, Path::new("x.img"), &DecodeLimits::default())
        .expect_err("must be refused");
    let msg = err.to_string();
    assert!(msg.starts_with("x.img: "), "{msg}");
    assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    assert!(!msg.contains('\n'), "one line: {msg:?}");
}

#[test]
fn empty_garbage_and_truncated_images_are_refused() {
    expect_image_err(b"", "empty file");
    expect_image_err(
        b"hello, this is not an image at all",
        "not a recognised image",
    );
    let jpeg = std::fs::read(photo()).unwrap();
    // Only the header survives: no scan data at all.
    expect_image_err(&jpeg[..200], "cannot decode");
    let png = {
        let img = image::RgbImage::from_pixel(64, 64, image::Rgb([1, 2, 3]));
        let mut v = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png)
            .unwrap();
        v
    };
    expect_image_err(&png[..png.len() / 2], "cannot decode");
}

/// A PNG whose header declares `w × h` pixels, followed by a token IDAT: a decompression bomb
/// must be refused from its header, before any allocation of that size.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn decompression_bomb_is_refused_from_its_header() {
    expect_image_err(
        &png_header_only(100_000, 100_000),
        "exceeds the 64.0 MP limit",
    );
    let small = DecodeLimits { max_pixels: 1000 };
    let err = load_rgb(&photo(), &small).unwrap_err().to_string();
    assert!(
        err.contains("chelsea.jpg") && err.contains("MP limit"),
        "{err}"
    );
}

#[test]
fn missing_file_names_the_file() {
    let err = load_rgb(Path::new("/nonexistent/cat.jpg"), &DecodeLimits::default()).unwrap_err();
    assert_eq!(err.to_string(), "/nonexistent/cat.jpg: no such file");
}

/// Copies the tiny CLIP image tower into a temp folder so that it can be damaged.
fn model_copy() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("image.onnx");
    let sidecar = dir.path().join("image.json");
    std::fs::copy(clip_tiny_image(), &graph).unwrap();
    std::fs::copy(Sidecar::path_for(&clip_tiny_image()), &sidecar).unwrap();
    (dir, graph, sidecar)
}

fn load_err(graph: &Path) -> String {
    match ImageEncoder::load(graph, &RunOptions::default()) {
        Ok(_) => panic!("{} loaded but must be refused", graph.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_sidecar(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn model_faults_are_one_clear_line() {
    // The intact copy loads.
    let (_d, graph, sidecar) = model_copy();
    ImageEncoder::load(&graph, &RunOptions::default()).expect("intact model loads");

    // A changed graph no longer matches its sidecar's sha256.
    let (_d, graph, _) = model_copy();
    let mut bytes = std::fs::read(&graph).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&graph, &bytes).unwrap();
    let msg = load_err(&graph);
    assert!(
        msg.contains("image.onnx: sha256") && msg.contains("does not match"),
        "{msg}"
    );

    // No sidecar.
    let (_d, graph, sidecar_path) = model_copy();
    std::fs::remove_file(&sidecar_path).unwrap();
    let msg = load_err(&graph);
    assert!(
        msg.contains("image.json: cannot read the model sidecar: no such file"),
        "{msg}"
    );

    // A sidecar whose input size disagrees with the graph's declared input.
    let (_d, graph, sidecar_path) = model_copy();
    edit_sidecar(&sidecar_path, |v| {
        v["preprocess"]["crop_size"] = 256.into();
        v["preprocess"]["resize"] = 256.into();
        v["input"]["shape"] = serde_json::json!([null, 3, 256, 256]);
    });
    let msg = load_err(&graph);
    assert!(
        msg.contains("image.onnx: graph input axis 2 is 224, its sidecar says 256"),
        "{msg}"
    );

    // A sidecar that claims a text tower's rank for the image graph.
    let (_d, graph, sidecar_path) = model_copy();
    edit_sidecar(&sidecar_path, |v| v["embed_dim"] = 7.into());
    let msg = load_err(&graph);
    assert!(
        msg.contains("image.json") && msg.contains("embed_dim 7"),
        "{msg}"
    );

    // A graph of another rank (the text tower's [batch, 77] tokens) behind an image sidecar.
    let (_d, graph, sidecar_path) = model_copy();
    std::fs::copy(common::fixture("clip-tiny/text.onnx"), &graph).unwrap();
    let sha = sha256_hex(&std::fs::read(&graph).unwrap());
    edit_sidecar(&sidecar_path, |v| v["sha256"] = sha.into());
    let msg = load_err(&graph);
    assert!(
        msg.contains("image.onnx: graph input has rank 2, its sidecar implies rank 4"),
        "{msg}"
    );

    // Garbage that matches its sidecar's hash is still not an ONNX graph.
    let (_d, graph, sidecar_path) = model_copy();
    std::fs::write(&graph, b"definitely not protobuf \xff\xff\xff").unwrap();
    let sha = sha256_hex(&std::fs::read(&graph).unwrap());
    edit_sidecar(&sidecar_path, |v| v["sha256"] = sha.into());
    let msg = load_err(&graph);
    assert!(
        msg.contains("image.onnx: not a loadable ONNX graph"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    drop(sidecar);
}

#[test]
fn batch_continues_past_bad_files_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("query");
    std::fs::create_dir_all(&q).unwrap();
    std::fs::copy(photo(), q.join("good.jpg")).unwrap();
    std::fs::write(q.join("empty.jpg"), b"").unwrap();
    std::fs::write(q.join("garbage.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tipedge"))
        .args(["classify", "--json", "--model"])
        .arg(common::fixture("clip-tiny"))
        .args(["--classes", "cat,dog"])
        .arg(&q)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout {stdout}\nstderr {stderr}"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let good = lines
        .iter()
        .find(|v| v["path"].as_str().unwrap().ends_with("good.jpg"))
        .unwrap();
    assert_eq!(good["top"].as_array().unwrap().len(), 2);
    let empty = lines
        .iter()
        .find(|v| v["path"].as_str().unwrap().ends_with("empty.jpg"))
        .unwrap();
    assert!(empty["error"]
        .as_str()
        .unwrap()
        .ends_with("empty.jpg: empty file (0 bytes)"));
    assert!(stderr.contains("garbage.png: cannot decode"), "{stderr}");
    assert!(stderr.contains("1 images classified, 2 failed"), "{stderr}");
}

#[test]
fn missing_model_is_fatal_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_tipedge"))
        .args([
            "classify",
            "--model",
            "/nonexistent/model",
            "--classes",
            "a,b",
            "x.jpg",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: /nonexistent/model: no such model file or folder"
    );
}
