//! Helpers of the device tests (tests/device.rs, tests/enrol.rs): the binary, the clip-tiny
//! model, random packs for it, `tipedge flash`, temporary files left in a state directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tipedge::adapter::AdapterParams;
use tipedge::encoder::ImageEncoder;
use tipedge::kernel::KeyDtype;
use tipedge::pack::{PackDraft, Provenance};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tipedge"))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn model() -> PathBuf {
    crate::common::fixture("clip-tiny")
}

pub fn image() -> PathBuf {
    model().join("image.onnx")
}

/// A pack of `n` random int8 keys over 3 classes for the clip-tiny encoder; `seed` varies it.
pub fn random_pack(dir: &Path, name: &str, n: usize, seed: u32) -> PathBuf {
    let expect = ImageEncoder::expect_for(&image()).unwrap();
    let dim = expect.dim.unwrap();
    let mut s = seed.wrapping_mul(2654435761).max(1);
    let mut keys: Vec<f32> = (0..n * dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect();
    tipedge::kernel::l2_normalize_rows(&mut keys, dim);
    let labels: Vec<u32> = (0..n as u32).map(|i| i * 3 / n as u32).collect();
    let mut draft = PackDraft::from_f32_keys(
        dim,
        keys,
        labels,
        vec!["good".into(), "scratch".into(), "dent".into()],
        None,
        AdapterParams::default(),
        expect.encoder.unwrap(),
        Provenance {
            seed: u64::from(seed),
            ..Provenance::default()
        },
    )
    .unwrap();
    draft.convert_keys(KeyDtype::I8).unwrap();
    let path = dir.join(name);
    draft.write(&path).unwrap();
    path
}

/// `tipedge flash PACK --model clip-tiny --state STATE`.
pub fn flash(pack: &Path, state: &Path) -> Output {
    bin()
        .arg("flash")
        .arg(pack)
        .arg("--model")
        .arg(model())
        .arg("--state")
        .arg(state)
        .output()
        .unwrap()
}

/// A file's sha256, hex.
pub fn sha(path: &Path) -> String {
    tipedge::sidecar::sha256_hex(&std::fs::read(path).unwrap())
}

/// Temporary files an interrupted write left in the state directory or its slots.
pub fn leftovers(state: &Path) -> usize {
    std::fs::read_dir(state.join("slots"))
        .unwrap()
        .chain(std::fs::read_dir(state).unwrap())
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .count()
}
