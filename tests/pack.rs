//! The adapter pack: round trips, determinism, atomic writes, and refusal of every kind of
//! corruption with a one-line message naming the section. Runs without the `runtime` feature:
//! `cargo test --no-default-features --test pack`.
//!
//! Corrupt files are made with this file's own reading of FORMAT.md (offsets, crc32c coverage),
//! not with the library's internals, so the tests also check the specification.

use half::f16;
use proptest::prelude::*;
use std::ops::Range;
use std::path::Path;
use tipedge::adapter::{GdaTerm, Head};
use tipedge::kernel::{self, Kernel, KeyData, KeyDtype, Keys, Scratch};
use tipedge::pack::{
    self, encode, inspect, inspect_bytes, write_pack, write_with_alpha_beta, ChecksumStatus,
    EncoderId, Expect, OwnedKeys, Pack, PackContents, PackDraft, Provenance, StoredShots,
};

// ---------------------------------------------------------------------------------------------
// Fixtures

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn clip_tiny() -> EncoderId {
    EncoderId {
        name: "clip-tiny".into(),
        sha256: [0x1a; 32],
    }
}

fn lite0() -> EncoderId {
    let mut sha256 = [0x9f; 32];
    sha256[1] = 0x8e;
    EncoderId {
        name: "efficientnet-lite0".into(),
        sha256,
    }
}

struct Fixture {
    dim: usize,
    f32_keys: Vec<f32>,
    keys: OwnedKeys,
    offsets: Vec<u32>,
    labels: Vec<u32>,
    names: Vec<String>,
    w: Option<Vec<f32>>,
    encoder: EncoderId,
    provenance: Provenance,
}

impl Fixture {
    fn new(dtype: KeyDtype, dim: usize, class_sizes: &[usize], with_w: bool) -> Fixture {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (dim as u64) << 8 ^ class_sizes.len() as u64);
        let n: usize = class_sizes.iter().sum();
        let mut f32_keys: Vec<f32> = (0..n * dim).map(|_| rng.unit()).collect();
        kernel::l2_normalize_rows(&mut f32_keys, dim);
        let keys = OwnedKeys::from_f32(dtype, dim, &f32_keys).unwrap();
        let mut offsets = vec![0u32];
        let mut labels = Vec::new();
        for (c, &s) in class_sizes.iter().enumerate() {
            labels.extend(std::iter::repeat_n(c as u32, s));
            offsets.push(labels.len() as u32);
        }
        let names = (0..class_sizes.len())
            .map(|c| format!("class-{c}"))
            .collect();
        let w = with_w.then(|| {
            let mut w: Vec<f32> = (0..class_sizes.len() * dim).map(|_| rng.unit()).collect();
            kernel::l2_normalize_rows(&mut w, dim);
            w
        });
        Fixture {
            dim,
            f32_keys,
            keys,
            offsets,
            labels,
            names,
            w,
            encoder: clip_tiny(),
            provenance: Provenance {
                shots: 16,
                augment_epochs: 10,
                seed: 42,
                tool_version: "tipedge 0.1.0".into(),
                created_unix: 1_700_000_000,
            },
        }
    }

    /// The small pack most corruption tests use: int8, dim 7, classes of 2, 0 and 3 keys, W.
    fn small() -> Fixture {
        Fixture::new(KeyDtype::I8, 7, &[2, 0, 3], true)
    }

    fn contents(&self) -> PackContents<'_> {
        PackContents {
            dim: self.dim,
            key_data: self.keys.as_key_data(),
            class_offsets: &self.offsets,
            labels: &self.labels,
            class_names: &self.names,
            text_classifier: self.w.as_deref(),
            logit_scale: 100.0,
            alpha: 1.0,
            beta: 5.5,
            temperature: None,
            stored_shots: None,
            head: Head::Tip,
            gda: None,
            choice: None,
            prompt_context: None,
            encoder: &self.encoder,
            provenance: &self.provenance,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        encode(&self.contents()).unwrap()
    }

    fn expect(&self) -> Expect {
        Expect::model(self.dim, self.encoder.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// FORMAT.md, read independently of the library

const HEADER_LEN: usize = 256;
const ENTRY_LEN: usize = 32;
const HEADER_CRC_AT: usize = 252;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn section_name(id: u32) -> &'static str {
    match id {
        1 => "keys",
        2 => "key_scales",
        3 => "class_offsets",
        4 => "labels",
        5 => "class_names",
        6 => "text_classifier",
        7 => "shot_features",
        8 => "shot_labels",
        9 => "shot_sources",
        10 => "gda_weights",
        11 => "gda_bias",
        12 => "choice",
        13 => "prompt_context",
        _ => panic!("no section id {id}"),
    }
}

fn section_count(b: &[u8]) -> usize {
    u32_at(b, 20) as usize
}

fn table_end(b: &[u8]) -> usize {
    HEADER_LEN + section_count(b) * ENTRY_LEN
}

/// (id, table entry offset, byte range) of every section.
fn sections(b: &[u8]) -> Vec<(u32, usize, Range<usize>)> {
    (0..section_count(b))
        .map(|i| {
            let e = HEADER_LEN + i * ENTRY_LEN;
            let off = u64_at(b, e + 8);
            let end = off.saturating_add(u64_at(b, e + 16)).min(usize::MAX as u64);
            (u32_at(b, e), e, off as usize..end as usize)
        })
        .collect()
}

fn section(b: &[u8], name: &str) -> (usize, Range<usize>) {
    sections(b)
        .into_iter()
        .find(|(id, _, _)| section_name(*id) == name)
        .map(|(_, e, r)| (e, r))
        .unwrap_or_else(|| panic!("no section {name}"))
}

/// Makes every checksum valid again: each section's crc32c, then the header's (bytes 0..252
/// followed by the section table).
fn recrc(b: &mut [u8]) {
    for (_, e, r) in sections(b) {
        if r.end <= b.len() {
            let crc = crc32c::crc32c(&b[r]);
            put_u32(b, e + 4, crc);
        }
    }
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&b[..HEADER_CRC_AT]),
        &b[HEADER_LEN..table_end(b)],
    );
    put_u32(b, HEADER_CRC_AT, crc);
}

/// The one-line refusal of `bytes`; fails the test if they are accepted.
fn refusal(bytes: &[u8], expect: &Expect) -> String {
    match Pack::from_bytes(bytes, expect) {
        Ok(_) => panic!("corrupt pack accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "message spans lines: {msg:?}");
            assert!(
                msg.starts_with("<memory>: "),
                "message names no file: {msg}"
            );
            msg
        }
    }
}

fn assert_refused(bytes: &[u8], expect: &Expect, needles: &[&str]) -> String {
    let msg = refusal(bytes, expect);
    for n in needles {
        assert!(msg.contains(n), "expected {n:?} in: {msg}");
    }
    msg
}

/// Patches section `name` through `f`, then fixes every checksum, so that only the semantic
/// check can refuse the result.
fn patched(b: &[u8], name: &str, f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut b = b.to_vec();
    let (_, r) = section(&b, name);
    f(&mut b[r]);
    recrc(&mut b);
    b
}

// ---------------------------------------------------------------------------------------------
// Round trips

fn check_round_trip(fx: &Fixture, pack: &Pack) {
    let h = pack.header();
    let n = fx.labels.len();
    assert_eq!(h.version, 1);
    assert_eq!((h.dim, h.n_keys, h.n_classes), (fx.dim, n, fx.names.len()));
    assert_eq!(h.key_dtype, fx.keys.dtype());
    assert_eq!(h.file_len as usize, pack.as_bytes().len());
    assert_eq!(
        (
            pack.params().logit_scale,
            pack.params().alpha,
            pack.params().beta
        ),
        (100.0, 1.0, 5.5)
    );
    assert_eq!(pack.encoder(), &fx.encoder);
    assert_eq!(pack.provenance(), &fx.provenance);
    match (pack.key_data(), fx.keys.as_key_data()) {
        (KeyData::F32(a), KeyData::F32(b)) => {
            assert!(a
                .iter()
                .map(|x| x.to_bits())
                .eq(b.iter().map(|x| x.to_bits())))
        }
        (KeyData::F16(a), KeyData::F16(b)) => {
            assert!(a
                .iter()
                .map(|x| x.to_bits())
                .eq(b.iter().map(|x| x.to_bits())))
        }
        (
            KeyData::I8 { values, scales },
            KeyData::I8 {
                values: v2,
                scales: s2,
            },
        ) => {
            assert_eq!(values, v2);
            assert!(scales
                .iter()
                .map(|x| x.to_bits())
                .eq(s2.iter().map(|x| x.to_bits())));
        }
        _ => panic!("dtype changed"),
    }
    assert_eq!(pack.class_offsets(), &fx.offsets[..]);
    assert_eq!(pack.labels(), &fx.labels[..]);
    assert_eq!(pack.class_names(), &fx.names[..]);
    assert_eq!(pack.text_classifier(), fx.w.as_deref());
    let keys = pack.keys();
    assert_eq!(
        (keys.len(), keys.dim(), keys.n_classes()),
        (n, fx.dim, fx.names.len())
    );
}

/// The keys are slices of the mapping itself, not a heap copy.
fn assert_borrowed_from_mapping(pack: &Pack) {
    assert!(pack.is_mapped());
    let file = pack.as_bytes().as_ptr_range();
    let p = match pack.key_data() {
        KeyData::F32(v) => v.as_ptr() as *const u8,
        KeyData::F16(v) => v.as_ptr() as *const u8,
        KeyData::I8 { values, scales } => {
            assert!(file.contains(&(scales.as_ptr() as *const u8)) || scales.is_empty());
            values.as_ptr() as *const u8
        }
    };
    assert!(file.contains(&p) || pack.n_keys() == 0);
    assert!(file.contains(&(pack.labels().as_ptr() as *const u8)) || pack.n_keys() == 0);
    assert!(file.contains(&(pack.class_offsets().as_ptr() as *const u8)));
    if let Some(w) = pack.text_classifier() {
        assert!(file.contains(&(w.as_ptr() as *const u8)));
    }
}

#[test]
fn round_trip_every_dtype_dim_and_class_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = 0;
    for dtype in [KeyDtype::F32, KeyDtype::F16, KeyDtype::I8] {
        for dim in [1, 7, 512] {
            for (layout, sizes) in [&[3][..], &[2, 0, 3], &[0, 4], &[1, 1, 1, 1, 1], &[0]]
                .into_iter()
                .enumerate()
            {
                for with_w in [true, false] {
                    let fx = Fixture::new(dtype, dim, sizes, with_w);
                    let path = dir
                        .path()
                        .join(format!("{dtype}-{dim}-{layout}-{with_w}.pack"));
                    write_pack(&path, &fx.contents()).unwrap();
                    let pack = Pack::open(&path, &fx.expect()).unwrap();
                    check_round_trip(&fx, &pack);
                    assert_borrowed_from_mapping(&pack);
                    let mem =
                        Pack::from_bytes(&std::fs::read(&path).unwrap(), &fx.expect()).unwrap();
                    check_round_trip(&fx, &mem);
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 90);
}

#[test]
fn sections_are_64_byte_aligned_and_listed_in_id_order() {
    for with_w in [true, false] {
        let b = Fixture::new(KeyDtype::F16, 7, &[2, 0, 3], with_w).bytes();
        let s = sections(&b);
        let ids: Vec<u32> = s.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(
            ids,
            if with_w {
                vec![1, 3, 4, 5, 6]
            } else {
                vec![1, 3, 4, 5]
            }
        );
        for (_, _, r) in &s {
            assert_eq!(r.start % 64, 0);
        }
        assert_eq!(&b[..8], b"TIPEPACK");
        assert_eq!(&b[12..16], &[0x4d, 0x3c, 0x2b, 0x1a]);
        assert_eq!(u64_at(&b, 24) as usize, b.len());
    }
}

#[test]
fn owned_keys_quantise_like_the_kernel() {
    let fx = Fixture::new(KeyDtype::F32, 7, &[2, 3], false);
    match OwnedKeys::from_f32(KeyDtype::I8, 7, &fx.f32_keys).unwrap() {
        OwnedKeys::I8 { values, scales } => {
            for (i, key) in fx.f32_keys.chunks_exact(7).enumerate() {
                let mut q = [0i8; 7];
                let s = kernel::quantize_key_i8(key, &mut q);
                assert_eq!(&values[i * 7..i * 7 + 7], &q);
                assert_eq!(scales[i], s);
            }
        }
        other => panic!("{other:?}"),
    }
    match OwnedKeys::from_f32(KeyDtype::F16, 7, &fx.f32_keys).unwrap() {
        OwnedKeys::F16(v) => {
            assert!(v
                .iter()
                .zip(&fx.f32_keys)
                .all(|(a, b)| *a == f16::from_f32(*b)))
        }
        other => panic!("{other:?}"),
    }
    assert!(OwnedKeys::from_f32(KeyDtype::F32, 7, &fx.f32_keys[1..]).is_err());
    assert!(OwnedKeys::from_f32(KeyDtype::F32, 0, &[]).is_err());
}

#[test]
fn kernel_scores_a_mapped_pack_like_the_keys_it_was_made_from() {
    let fx = Fixture::new(KeyDtype::F16, 7, &[2, 0, 3], true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pack");
    write_pack(&path, &fx.contents()).unwrap();
    let pack = Pack::open(&path, &Expect::any()).unwrap();
    let direct = Keys::new(7, fx.keys.as_key_data(), &fx.offsets).unwrap();
    let k = Kernel::scalar();
    let mut scratch = Scratch::new(7);
    let q = &fx.f32_keys[..7];
    let (mut a, mut b) = (vec![0.0; 3], vec![0.0; 3]);
    k.class_affinity(q, &pack.keys(), 5.5, &mut scratch, &mut a)
        .unwrap();
    k.class_affinity(q, &direct, 5.5, &mut scratch, &mut b)
        .unwrap();
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------------------------
// Determinism and atomic writes

#[test]
fn same_inputs_give_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in [KeyDtype::F32, KeyDtype::F16, KeyDtype::I8] {
        let (a, b) = (
            Fixture::new(dtype, 7, &[2, 0, 3], true),
            Fixture::new(dtype, 7, &[2, 0, 3], true),
        );
        assert_eq!(a.bytes(), b.bytes());
        let (pa, pb) = (dir.path().join("a.pack"), dir.path().join("b.pack"));
        write_pack(&pa, &a.contents()).unwrap();
        write_pack(&pb, &b.contents()).unwrap();
        let (fa, fb) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
        assert_eq!(fa, fb);
        assert_eq!(fa, a.bytes());
    }
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn failed_write_into_read_only_directory_leaves_old_pack_and_no_temp_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.pack");
    let old = Fixture::small();
    write_pack(&path, &old.contents()).unwrap();
    let before = std::fs::read(&path).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let new = Fixture::new(KeyDtype::F32, 7, &[4], false);
    let result = write_pack(&path, &new.contents());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    match result {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(
                msg.contains("temporary file") && !msg.contains('\n'),
                "{msg}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), before);
            assert_eq!(dir_entries(dir.path()), vec!["keys.pack".to_string()]);
        }
        // root ignores directory permissions; the rename-failure test covers the cleanup.
        Ok(()) => eprintln!("running as root: a read-only directory does not stop writes here"),
    }
}

#[test]
fn failed_rename_removes_the_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pack");
    write_pack(&good, &Fixture::small().contents()).unwrap();
    let before = std::fs::read(&good).unwrap();
    // The target is a non-empty directory: the temp file is written and synced, the rename fails.
    let target = dir.path().join("target.pack");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"x").unwrap();
    let e = write_pack(&target, &Fixture::small().contents()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("renaming") && msg.contains("unchanged"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert_eq!(dir_entries(dir.path()), vec!["good.pack", "target.pack"]);
    assert_eq!(std::fs::read(&good).unwrap(), before);
}

#[test]
fn refused_contents_leave_the_existing_pack_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.pack");
    let fx = Fixture::small();
    write_pack(&path, &fx.contents()).unwrap();
    let before = std::fs::read(&path).unwrap();
    let mut c = fx.contents();
    c.alpha = f32::NAN;
    let msg = write_pack(&path, &c).unwrap_err().to_string();
    assert!(
        msg.contains("refusing to write") && msg.contains("alpha"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(dir_entries(dir.path()), vec!["keys.pack"]);
}

#[test]
fn rewrite_with_new_alpha_beta_over_the_open_pack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.pack");
    let fx = Fixture::small();
    write_pack(&path, &fx.contents()).unwrap();
    let old = Pack::open(&path, &fx.expect()).unwrap();
    write_with_alpha_beta(&old, &path, 2.5, 7.0, None).unwrap();
    // The old mapping still reads the old file.
    check_round_trip(&fx, &old);
    let new = Pack::open(&path, &fx.expect()).unwrap();
    assert_eq!((new.params().alpha, new.params().beta), (2.5, 7.0));
    let mut c = fx.contents();
    c.alpha = 2.5;
    c.beta = 7.0;
    assert_eq!(new.as_bytes(), &encode(&c).unwrap()[..]);
    assert_eq!(dir_entries(dir.path()), vec!["keys.pack"]);
}

#[test]
fn writer_refuses_garbage() {
    let fx = Fixture::small();
    let good = fx.contents();
    let refuse = |c: PackContents<'_>, needles: &[&str]| {
        let msg = encode(&c).unwrap_err().to_string();
        assert!(!msg.contains('\n'), "{msg}");
        for n in needles {
            assert!(msg.contains(n), "expected {n:?} in: {msg}");
        }
    };
    let unsorted = [0u32, 2, 0, 2, 2];
    refuse(
        PackContents {
            labels: &unsorted,
            ..good
        },
        &["section 'labels'", "sorted"],
    );
    refuse(
        PackContents {
            labels: &fx.labels[1..],
            ..good
        },
        &["section 'labels'", "4 labels for 5 keys"],
    );
    let out_of_range = [0u32, 0, 3, 2, 2];
    refuse(
        PackContents {
            labels: &out_of_range,
            ..good
        },
        &["section 'labels'", "label 3"],
    );
    refuse(
        PackContents {
            class_offsets: &fx.offsets[1..],
            ..good
        },
        &["section 'class_offsets'"],
    );
    let overlapping = [0u32, 3, 2, 5];
    refuse(
        PackContents {
            class_offsets: &overlapping,
            ..good
        },
        &["section 'class_offsets'", "overlap"],
    );
    refuse(PackContents { dim: 0, ..good }, &["dim is 0"]);
    refuse(
        PackContents {
            dim: 70_000,
            ..good
        },
        &["dim 70000 exceeds the limit 65536"],
    );
    refuse(
        PackContents { dim: 6, ..good },
        &["section 'keys'", "whole number"],
    );
    let nan_keys: Vec<f32> = (0..35)
        .map(|i| if i == 9 { f32::NAN } else { 0.1 })
        .collect();
    refuse(
        PackContents {
            key_data: KeyData::F32(&nan_keys),
            ..good
        },
        &["section 'keys'", "value 2 of key 1 is NaN"],
    );
    let OwnedKeys::I8 { values, scales } = &fx.keys else {
        unreachable!()
    };
    refuse(
        PackContents {
            key_data: KeyData::I8 {
                values,
                scales: &scales[1..],
            },
            ..good
        },
        &["section 'key_scales'", "4 scales for 5 keys"],
    );
    let mut bad_scales = scales.clone();
    bad_scales[4] = f32::INFINITY;
    refuse(
        PackContents {
            key_data: KeyData::I8 {
                values,
                scales: &bad_scales,
            },
            ..good
        },
        &["section 'key_scales'", "key 4 is inf"],
    );
    let dup: Vec<String> = ["a", "b", "a"].map(String::from).to_vec();
    refuse(
        PackContents {
            class_names: &dup,
            ..good
        },
        &[
            "section 'class_names'",
            "'a' names both class 0 and class 2",
        ],
    );
    let empty: Vec<String> = ["a", "", "c"].map(String::from).to_vec();
    refuse(
        PackContents {
            class_names: &empty,
            ..good
        },
        &["section 'class_names'", "name 1 is empty"],
    );
    let newline: Vec<String> = ["a", "b\nc", "d"].map(String::from).to_vec();
    refuse(
        PackContents {
            class_names: &newline,
            ..good
        },
        &["section 'class_names'", "control character"],
    );
    let two: Vec<String> = ["a", "b"].map(String::from).to_vec();
    refuse(
        PackContents {
            class_names: &two,
            ..good
        },
        &["section 'class_offsets'"],
    );
    refuse(
        PackContents {
            text_classifier: Some(&[0.0; 20]),
            ..good
        },
        &["section 'text_classifier'"],
    );
    let mut w = fx.w.clone().unwrap();
    w[15] = f32::NEG_INFINITY;
    refuse(
        PackContents {
            text_classifier: Some(&w),
            ..good
        },
        &[
            "section 'text_classifier'",
            "value 1 of the row of class 2 is -inf",
        ],
    );
    let long = EncoderId {
        name: "x".repeat(65),
        sha256: [0; 32],
    };
    refuse(
        PackContents {
            encoder: &long,
            ..good
        },
        &["encoder name", "at most 64"],
    );
    let prov = Provenance {
        tool_version: "v".repeat(33),
        ..fx.provenance.clone()
    };
    refuse(
        PackContents {
            provenance: &prov,
            ..good
        },
        &["tool version"],
    );
    refuse(
        PackContents {
            beta: f32::INFINITY,
            ..good
        },
        &["header: beta is inf"],
    );
    refuse(
        PackContents {
            logit_scale: f32::NAN,
            ..good
        },
        &["logit scale"],
    );
    refuse(
        PackContents {
            class_names: &[],
            class_offsets: &[0],
            labels: &[],
            key_data: KeyData::F32(&[]),
            text_classifier: None,
            ..good
        },
        &["0 classes"],
    );
}

// ---------------------------------------------------------------------------------------------
// Corruption: every byte position, every refusal named

#[test]
fn truncation_at_every_length_is_refused() {
    let b = Fixture::small().bytes();
    let expect = Fixture::small().expect();
    for len in 0..b.len() {
        let msg = assert_refused(&b[..len], &expect, &["truncated"]);
        if len >= table_end(&b) {
            assert!(
                msg.contains(&format!("header says {} bytes, file has {len}", b.len())),
                "{msg}"
            );
        }
    }
}

#[test]
fn truncated_large_pack_is_refused_at_sampled_lengths() {
    let fx = Fixture::new(KeyDtype::F32, 512, &[16, 16, 16], true);
    let b = fx.bytes();
    let mut lens = vec![
        0,
        1,
        7,
        8,
        100,
        255,
        256,
        257,
        table_end(&b) - 1,
        table_end(&b),
        b.len() - 1,
    ];
    for (_, _, r) in sections(&b) {
        lens.extend([r.start, r.start + 1, (r.start + r.end) / 2, r.end - 1]);
    }
    for len in lens {
        assert_refused(&b[..len], &fx.expect(), &["truncated"]);
    }
}

/// Which part of the file byte `i` belongs to, as the refusal must name it.
fn region_of(b: &[u8], i: usize) -> String {
    if i < table_end(b) {
        return "header".into();
    }
    let mut secs = sections(b);
    secs.sort_by_key(|(_, _, r)| r.start);
    for (id, _, r) in &secs {
        if i < r.end {
            // Inside a section, or in the padding before it.
            return format!("section '{}'", section_name(*id));
        }
    }
    "section table".into()
}

#[test]
fn every_bit_flip_anywhere_in_a_small_pack_is_refused_with_its_section_named() {
    for fx in [
        Fixture::small(),
        Fixture::new(KeyDtype::F16, 3, &[1, 2], false),
        Fixture::new(KeyDtype::F32, 5, &[2, 1], true),
    ] {
        let b = fx.bytes();
        let expect = fx.expect();
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                let msg = refusal(&c, &expect);
                let region = region_of(&b, i);
                assert!(
                    msg.contains(&region),
                    "byte {i} bit {bit}: expected {region} in: {msg}"
                );
            }
        }
    }
}

#[test]
fn sampled_bit_flips_in_every_section_of_a_large_pack_are_refused() {
    for dtype in [KeyDtype::F32, KeyDtype::F16, KeyDtype::I8] {
        let fx = Fixture::new(dtype, 512, &[8, 0, 8], true);
        let b = fx.bytes();
        let mut rng = Rng(7);
        for (id, _, r) in sections(&b) {
            for _ in 0..64 {
                let i = r.start + (rng.next() as usize) % r.len();
                let mut c = b.clone();
                c[i] ^= 1 << (rng.next() % 8);
                let name = section_name(id);
                assert_refused(
                    &c,
                    &fx.expect(),
                    &[&format!("section '{name}': crc32c mismatch (stored 0x")],
                );
            }
        }
    }
}

#[test]
fn wrong_magic_is_refused() {
    let mut b = Fixture::small().bytes();
    b[..8].copy_from_slice(b"GARBAGE!");
    assert_refused(
        &b,
        &Expect::any(),
        &["header: not an adapter pack", "GARBAGE!", "TIPEPACK"],
    );
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    assert_refused(png, &Expect::any(), &["header: not an adapter pack"]);
}

#[test]
fn other_versions_are_refused_even_with_valid_checksums() {
    for v in [0u32, 6, 0x0100_0000] {
        let mut b = Fixture::small().bytes();
        put_u32(&mut b, 8, v);
        recrc(&mut b);
        assert_refused(
            &b,
            &Expect::any(),
            &["header: format version", "this build reads versions 1 to 5"],
        );
    }
}

/// Version 2 carries the temperature of calibrated probabilities at offset 60 (reserved zero in
/// version 1): a pack without one is still written as version 1, byte for byte; a pack with one
/// is version 2 and round-trips it; a version 1 pack with bytes at 60, or a version 2 pack whose
/// temperature is not a finite positive number, is refused.
#[test]
fn version_2_carries_the_temperature() {
    let fx = Fixture::small();
    let v1 = fx.bytes();
    assert_eq!(u32::from_le_bytes(v1[8..12].try_into().unwrap()), 1);
    assert_eq!(&v1[60..64], &[0, 0, 0, 0]);
    let pack = Pack::from_bytes(&v1, &Expect::any()).unwrap();
    assert_eq!(pack.temperature(), None);

    let mut c = fx.contents();
    c.temperature = Some(0.0125);
    let v2 = encode(&c).unwrap();
    assert_eq!(u32::from_le_bytes(v2[8..12].try_into().unwrap()), 2);
    let pack = Pack::from_bytes(&v2, &Expect::any()).unwrap();
    assert_eq!(pack.temperature(), Some(0.0125));
    assert_eq!(pack.header().version, 2);
    assert_eq!(pack.class_names(), &fx.names[..]);
    assert_eq!(pack.labels(), &fx.labels[..]);
    // Only the version, the temperature and the header checksum differ from version 1.
    let differing: Vec<usize> = (0..v1.len()).filter(|&i| v1[i] != v2[i]).collect();
    assert!(
        differing
            .iter()
            .all(|&i| (8..12).contains(&i) || (60..64).contains(&i) || (252..256).contains(&i)),
        "{differing:?}"
    );

    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let mut c = fx.contents();
        c.temperature = Some(bad);
        let err = encode(&c).unwrap_err().to_string();
        assert!(err.contains("temperature"), "{err}");
        let mut b = v2.clone();
        b[60..64].copy_from_slice(&bad.to_le_bytes());
        recrc(&mut b);
        assert_refused(&b, &Expect::any(), &["header: temperature is"]);
    }
    let mut b = v1.clone();
    b[60..64].copy_from_slice(&1.5f32.to_le_bytes());
    recrc(&mut b);
    assert_refused(&b, &Expect::any(), &["header: reserved bytes are not zero"]);
}

/// Version 3 stores the shots a device enrolled (features, classes, sources) in sections 7–9,
/// with their count at offset 216 (reserved zero before): written only when there are stored
/// shots, with or without a temperature (0 = none in version 3), read back as written, and every
/// inconsistency refused with its section named.
#[test]
fn version_3_stores_enrolled_shots() {
    let fx = Fixture::small(); // dim 7, classes of 2, 0 and 3 keys
    let features: Vec<f32> = (0..3 * 7).map(|i| i as f32 * 0.01).collect();
    let labels = [0u32, 2, 2];
    let sources = vec![
        "a.jpg sha256 0011".to_string(),
        String::new(),
        "stream frame 7, unix 1".into(),
    ];
    let mut c = fx.contents();
    c.stored_shots = Some(StoredShots {
        features: &features,
        labels: &labels,
        sources: &sources,
    });
    let v3 = encode(&c).unwrap();
    assert_eq!(u32_at(&v3, 8), 3);
    assert_eq!(u32_at(&v3, 216), 3);
    assert_eq!(u32_at(&v3, 60), 0, "no temperature: 0");
    let pack = Pack::from_bytes(&v3, &Expect::any()).unwrap();
    assert_eq!(pack.temperature(), None);
    let stored = pack.stored_shots().unwrap();
    assert_eq!(stored.features, &features[..]);
    assert_eq!(stored.labels, &labels[..]);
    assert_eq!(stored.sources, &sources[..]);
    assert_eq!(pack.labels(), &fx.labels[..]);
    // With a temperature too.
    c.temperature = Some(0.5);
    let with_t = Pack::from_bytes(&encode(&c).unwrap(), &Expect::any()).unwrap();
    assert_eq!(
        (with_t.header().version, with_t.temperature()),
        (3, Some(0.5))
    );
    // Empty stored shots are no stored shots: version 1.
    let mut c0 = fx.contents();
    c0.stored_shots = Some(StoredShots {
        features: &[],
        labels: &[],
        sources: &[],
    });
    assert_eq!(encode(&c0).unwrap(), fx.bytes());

    // The writer refuses what the reader would.
    for (f, l, why) in [
        (&features[..14], &labels[..], "shot_features"),
        (
            &features[..],
            &[0u32, 1, 2][..],
            "more stored shots of class 1",
        ),
        (&features[..], &[0u32, 0, 9][..], "label 9"),
        (
            &features[..],
            &[0u32, 0, 0][..],
            "more stored shots of class 0",
        ),
    ] {
        let mut c = fx.contents();
        c.stored_shots = Some(StoredShots {
            features: f,
            labels: l,
            sources: &sources,
        });
        let e = encode(&c).unwrap_err().to_string();
        assert!(e.contains(why), "{why}: {e}");
    }
    // The reader, with every checksum valid.
    let b = patched(&v3, "shot_features", |s| {
        s[8..12].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'shot_features': value 2 of shot 0 is NaN"],
    );
    let b = patched(&v3, "shot_labels", |s| {
        s[4..8].copy_from_slice(&3u32.to_le_bytes())
    });
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'shot_labels': shot 1 has label 3"],
    );
    let b = patched(&v3, "shot_sources", |s| s[0] = b'\n');
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'shot_sources': source 0 contains a control"],
    );
    let b = patched(&v3, "shot_sources", |s| {
        let n = s.len();
        s[n - 2] = 0; // one NUL too many: four sources
    });
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'shot_sources': more than 3 sources"],
    );
    // The count at 216: reserved before version 3, at least 1 in version 3, and the sections'
    // lengths follow it.
    let mut b = fx.bytes();
    put_u32(&mut b, 216, 1);
    recrc(&mut b);
    assert_refused(&b, &Expect::any(), &["header: reserved bytes are not zero"]);
    let mut b = v3.clone();
    put_u32(&mut b, 216, 0);
    recrc(&mut b);
    assert_refused(&b, &Expect::any(), &["version 3 without stored shots"]);
    let mut b = v3.clone();
    put_u32(&mut b, 216, 2);
    recrc(&mut b);
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'shot_features'", "2 × 7 f32 shot features take 56"],
    );
    // A version 2 reader's view: the shots sections are unknown to it, and the version says so.
    let mut b = v3.clone();
    put_u32(&mut b, 8, 2);
    recrc(&mut b);
    assert!(refusal(&b, &Expect::any()).contains("header:"));
}

/// Version 4 adds the head (code at offset 220: 1 tip, 2 gda, 3 both), the GDA α (224), the GDA
/// layer (sections 10 and 11) and the choice record (12); written only when a pack has a GDA
/// layer or a choice record, read back as written, every inconsistency refused with its
/// section named.
#[test]
fn version_4_carries_the_head_and_the_choice() {
    let fx = Fixture::small(); // dim 7, 3 classes
    let weights: Vec<f32> = (0..3 * 7).map(|i| i as f32 * 0.5 - 3.0).collect();
    let bias = [0.25f32, -1.0, 2.0];
    let choice = r#"{"rows":[{"recipe":"plain","head":"gda","val_top1":70.0}]}"#;
    let gda = GdaTerm {
        weights: &weights,
        bias: &bias,
        alpha: 0.1,
    };
    for head in [Head::Gda, Head::Both] {
        let mut c = fx.contents();
        c.head = head;
        c.gda = Some(gda);
        c.choice = Some(choice);
        let b = encode(&c).unwrap();
        assert_eq!(u32_at(&b, 8), 4);
        assert_eq!(u32_at(&b, 220), if head == Head::Gda { 2 } else { 3 });
        let pack = Pack::from_bytes(&b, &Expect::any()).unwrap();
        assert_eq!(pack.head(), head);
        assert_eq!(pack.gda(), Some(gda));
        assert_eq!(pack.choice(), Some(choice));
        assert_eq!(pack.model().head(), head);
        // A copy through a draft writes the same bytes.
        assert_eq!(encode(&PackDraft::from_pack(&pack).contents()).unwrap(), b);
    }
    // A choice record alone (head tip) is version 4 too; no GDA layer means α 0.
    let mut c = fx.contents();
    c.choice = Some(choice);
    let tip4 = encode(&c).unwrap();
    assert_eq!(
        (u32_at(&tip4, 8), u32_at(&tip4, 220), u32_at(&tip4, 224)),
        (4, 1, 0)
    );
    let pack = Pack::from_bytes(&tip4, &Expect::any()).unwrap();
    assert_eq!((pack.head(), pack.gda()), (Head::Tip, None));

    // The writer refuses what the reader would.
    let mut c = fx.contents();
    c.head = Head::Gda;
    assert!(encode(&c)
        .unwrap_err()
        .to_string()
        .contains("needs a GDA layer"));
    c.gda = Some(GdaTerm {
        weights: &weights[..14],
        ..gda
    });
    assert!(encode(&c).unwrap_err().to_string().contains("gda_weights"));
    let mut c = fx.contents();
    c.gda = Some(gda);
    assert!(encode(&c)
        .unwrap_err()
        .to_string()
        .contains("has no GDA layer"));
    let mut c = fx.contents();
    c.choice = Some("line\nbreak");
    c.choice = Some(
        "line
break",
    );
    assert!(encode(&c)
        .unwrap_err()
        .to_string()
        .contains("control character"));

    // The reader, with every checksum valid.
    let mut c = fx.contents();
    c.head = Head::Both;
    c.gda = Some(gda);
    let v4 = encode(&c).unwrap();
    let b = patched(&v4, "gda_weights", |s| {
        s[4..8].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'gda_weights': value 1 of the row of class 0 is NaN"],
    );
    let b = patched(&v4, "gda_bias", |s| {
        s[8..12].copy_from_slice(&f32::INFINITY.to_le_bytes())
    });
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'gda_bias'", "class 2 is inf"],
    );
    for (code, why) in [(0u32, "unknown head code 0"), (4, "unknown head code 4")] {
        let mut b = v4.clone();
        put_u32(&mut b, 220, code);
        recrc(&mut b);
        assert_refused(&b, &Expect::any(), &[why]);
    }
    // Head tip, but the GDA sections are there.
    let mut b = v4.clone();
    put_u32(&mut b, 220, 1);
    put_u32(&mut b, 224, 0);
    recrc(&mut b);
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'gda_weights': present, but the pack's head is 'tip'"],
    );
    let mut b = v4.clone();
    b[224..228].copy_from_slice(&f32::NAN.to_le_bytes());
    recrc(&mut b);
    assert_refused(&b, &Expect::any(), &["header: GDA alpha is NaN"]);
    let mut b = tip4.clone();
    b[224..228].copy_from_slice(&0.5f32.to_le_bytes());
    recrc(&mut b);
    assert_refused(&b, &Expect::any(), &["head 'tip' has no GDA layer"]);
    // Before version 4 the head bytes are reserved, and the sections unknown to that version.
    let mut b = fx.bytes();
    put_u32(&mut b, 220, 1);
    recrc(&mut b);
    assert_refused(&b, &Expect::any(), &["header: reserved bytes are not zero"]);
    let mut b = tip4.clone();
    put_u32(&mut b, 8, 1);
    put_u32(&mut b, 220, 0);
    recrc(&mut b);
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'choice': present, but version 1"],
    );
    // A GDA layer of another dimension: its length disagrees with the header's.
    let mut b = v4.clone();
    let (e, _) = section(&b, "gda_weights");
    put_u64(&mut b, e + 16, 3 * 8 * 4);
    recrc(&mut b);
    assert!(refusal(&b, &Expect::any()).contains("gda_weights"));
    let b = patched(&tip4, "choice", |s| s[0] = 0xff);
    assert_refused(&b, &Expect::any(), &["section 'choice': not valid UTF-8"]);
}

/// The framing of a context file (the pack layer checks no more of it): u64 header length, a
/// JSON object padded to 8 bytes, the data.
fn context_frame() -> Vec<u8> {
    let mut header = br#"{"ctx":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}}"#.to_vec();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut context = (header.len() as u64).to_le_bytes().to_vec();
    context.extend_from_slice(&header);
    context.extend_from_slice(&0.5f32.to_le_bytes());
    context
}

#[test]
fn version_5_carries_the_prompt_context() {
    let fx = Fixture::small(); // dim 7, 3 classes, with W
    let context = context_frame();
    let mut c = fx.contents();
    c.prompt_context = Some(&context);
    let v5 = encode(&c).unwrap();
    assert_eq!(u32_at(&v5, 8), 5);
    let pack = Pack::from_bytes(&v5, &Expect::any()).unwrap();
    assert_eq!(pack.prompt_context(), Some(&context[..]));
    assert_eq!(encode(&PackDraft::from_pack(&pack).contents()).unwrap(), v5);
    // Without it the same contents stay version 1, byte for byte.
    assert_eq!(u32_at(&encode(&fx.contents()).unwrap(), 8), 1);
    // With a GDA layer and a choice record as well: still one version, 5.
    let weights: Vec<f32> = (0..3 * 7).map(|i| i as f32 * 0.25).collect();
    let mut c = fx.contents();
    c.prompt_context = Some(&context);
    c.head = Head::Both;
    c.gda = Some(GdaTerm {
        weights: &weights,
        bias: &[0.0; 3],
        alpha: 1.0,
    });
    c.choice = Some("{}");
    let both = encode(&c).unwrap();
    assert_eq!(u32_at(&both, 8), 5);
    assert_eq!(
        Pack::from_bytes(&both, &Expect::any()).unwrap().head(),
        Head::Both
    );

    // Refusals, by the writer and the reader (every checksum valid).
    let no_w = Fixture::new(KeyDtype::F32, 7, &[2, 1, 2], false);
    let mut c = no_w.contents();
    c.prompt_context = Some(&context);
    assert!(encode(&c)
        .unwrap_err()
        .to_string()
        .contains("section 'prompt_context': present, but the pack has no text classifier W"));
    let b = patched(&v5, "prompt_context", |s| s[0] = 0xff);
    assert_refused(&b, &Expect::any(), &["section 'prompt_context': header of"]);
    let b = patched(&v5, "prompt_context", |s| s[8] = b'[');
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'prompt_context': header is not a JSON object"],
    );
    // A version 4 pack may not hold one; a version 5 pack must.
    let mut b = v5.clone();
    put_u32(&mut b, 8, 4);
    recrc(&mut b);
    assert_refused(
        &b,
        &Expect::any(),
        &["section 'prompt_context': present, but version 4 has no prompt context"],
    );
    let mut b = encode(&fx.contents()).unwrap();
    put_u32(&mut b, 8, 5);
    put_u32(&mut b, 220, 1);
    recrc(&mut b);
    assert_refused(
        &b,
        &Expect::any(),
        &["header: version 5 without a prompt context"],
    );
    // An older reader's view: version 6 is not supported.
    let mut b = v5.clone();
    put_u32(&mut b, 8, 6);
    recrc(&mut b);
    assert_refused(&b, &Expect::any(), &["format version 6 is not supported"]);
}

#[test]
fn big_endian_pack_is_refused() {
    let mut b = Fixture::small().bytes();
    b[12..16].copy_from_slice(&[0x1a, 0x2b, 0x3c, 0x4d]);
    recrc(&mut b);
    assert_refused(&b, &Expect::any(), &["header: written big-endian"]);
}

#[test]
fn feature_dim_of_another_model_is_refused() {
    let fx = Fixture::new(KeyDtype::I8, 512, &[2, 2], false);
    let b = fx.bytes();
    let expect = Expect {
        dim: Some(768),
        encoder: None,
    };
    assert_refused(
        &b,
        &expect,
        &["built for feature dim 512, this model's features have dim 768"],
    );
    assert!(Pack::from_bytes(
        &b,
        &Expect {
            dim: Some(512),
            encoder: None
        }
    )
    .is_ok());
}

#[test]
fn pack_of_another_encoder_is_refused() {
    let fx = Fixture::small();
    let b = fx.bytes();
    let msg = assert_refused(
        &b,
        &Expect::model(7, lite0()),
        &["built for encoder 'clip-tiny' (sha256 1a1a1a1a1a1a…), this model is 'efficientnet-lite0' (sha256 9f8e9f9f9f9f…)"],
    );
    assert!(!msg.contains("section"), "{msg}");
    // Names do not matter, the fingerprint does.
    let renamed = EncoderId {
        name: "renamed".into(),
        ..clip_tiny()
    };
    assert!(Pack::from_bytes(&b, &Expect::model(7, renamed)).is_ok());
}

#[test]
fn non_finite_and_negative_scales_are_refused() {
    let b = Fixture::small().bytes();
    for (v, shown) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
        (-0.5, "-0.5"),
    ] {
        let c = patched(&b, "key_scales", |s| {
            s[8..12].copy_from_slice(&v.to_le_bytes())
        });
        assert_refused(
            &c,
            &Expect::any(),
            &[
                "section 'key_scales'",
                &format!("scale of key 2 is {shown}"),
            ],
        );
    }
}

#[test]
fn non_finite_float_keys_and_weights_are_refused() {
    let f32b = Fixture::new(KeyDtype::F32, 7, &[2, 0, 3], true).bytes();
    let c = patched(&f32b, "keys", |s| {
        s[4 * 10..4 * 11].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'keys'", "value 3 of key 1 is NaN"],
    );
    let f16b = Fixture::new(KeyDtype::F16, 7, &[2, 0, 3], true).bytes();
    let c = patched(&f16b, "keys", |s| {
        s[0..2].copy_from_slice(&f16::INFINITY.to_bits().to_le_bytes())
    });
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'keys'", "value 0 of key 0 is inf"],
    );
    let c = patched(&f16b, "text_classifier", |s| {
        s[4 * 8..4 * 9].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    assert_refused(
        &c,
        &Expect::any(),
        &[
            "section 'text_classifier'",
            "value 1 of the row of class 1 is NaN",
        ],
    );
}

#[test]
fn int8_value_minus_128_is_refused() {
    let b = Fixture::small().bytes();
    let c = patched(&b, "keys", |s| s[9] = 0x80);
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'keys'", "value 2 of key 1 is -128"],
    );
}

#[test]
fn labels_out_of_range_or_out_of_order_are_refused() {
    let b = Fixture::small().bytes();
    let c = patched(&b, "labels", |s| {
        s[4..8].copy_from_slice(&9u32.to_le_bytes())
    });
    assert_refused(
        &c,
        &Expect::any(),
        &[
            "section 'labels'",
            "key 1 has label 9, but the pack has 3 classes",
        ],
    );
    let c = patched(&b, "labels", |s| {
        s[4..8].copy_from_slice(&2u32.to_le_bytes())
    });
    assert_refused(
        &c,
        &Expect::any(),
        &[
            "section 'labels'",
            "key 1 has label 2 but lies in class 0's range",
        ],
    );
}

#[test]
fn overlapping_or_incomplete_class_offsets_are_refused() {
    let b = Fixture::small().bytes(); // offsets 0, 2, 2, 5
    let set = |vals: [u32; 4]| {
        patched(&b, "class_offsets", |s| {
            for (i, v) in vals.iter().enumerate() {
                s[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
        })
    };
    assert_refused(
        &set([0, 3, 2, 5]),
        &Expect::any(),
        &[
            "section 'class_offsets'",
            "class 2 starts at key 2, before class 1 at key 3 (classes overlap)",
        ],
    );
    assert_refused(
        &set([1, 2, 2, 5]),
        &Expect::any(),
        &["section 'class_offsets'", "class 0 starts at key 1"],
    );
    assert_refused(
        &set([0, 2, 2, 4]),
        &Expect::any(),
        &[
            "section 'class_offsets'",
            "ends at key 4, but there are 5 keys",
        ],
    );
}

#[test]
fn bad_class_names_are_refused() {
    let b = Fixture::small().bytes(); // "class-0\0class-1\0class-2\0"
    let c = patched(&b, "class_names", |s| s[7] = b'x');
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'class_names'", "2 names for 3 classes"],
    );
    let c = patched(&b, "class_names", |s| s[2] = 0xff);
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'class_names'", "name 0 is not valid UTF-8"],
    );
    let c = patched(&b, "class_names", |s| s[6] = b'1');
    assert_refused(
        &c,
        &Expect::any(),
        &[
            "section 'class_names'",
            "'class-1' names both class 0 and class 1",
        ],
    );
    let c = patched(&b, "class_names", |s| s[3] = 0);
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'class_names'", "more than 3 names"],
    );
    let c = patched(&b, "class_names", |s| *s.last_mut().unwrap() = b'z');
    assert_refused(&c, &Expect::any(), &["section 'class_names'", "NUL"]);
}

#[test]
fn bad_section_tables_are_refused_even_with_valid_checksums() {
    let b = Fixture::small().bytes();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut c = b.clone();
        f(&mut c);
        recrc(&mut c);
        c
    };
    let (labels_e, labels_r) = section(&b, "labels");
    let (names_e, _) = section(&b, "class_names");
    let (keys_e, keys_r) = section(&b, "keys");
    // Labels moved onto the keys.
    let c = with(&|c| put_u64(c, labels_e + 8, keys_r.start as u64));
    assert_refused(&c, &Expect::any(), &["overlap"]);
    // Not aligned.
    let c = with(&|c| put_u64(c, labels_e + 8, labels_r.start as u64 + 4));
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'labels': offset", "not a multiple of 64"],
    );
    // Into the table.
    let c = with(&|c| put_u64(c, keys_e + 8, 256));
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'keys'", "outside the data area"],
    );
    // Beyond the end; and an offset + length that overflows.
    let c = with(&|c| put_u64(c, labels_e + 16, 1 << 40));
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'labels'", "outside the data area"],
    );
    let c = with(&|c| put_u64(c, labels_e + 8, u64::MAX - 63));
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'labels'", "outside the data area"],
    );
    // Length the header does not imply.
    let c = with(&|c| put_u64(c, labels_e + 16, labels_r.len() as u64 - 4));
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'labels': 16 bytes, but 5 u32 labels take 20"],
    );
    // Unknown id, duplicate, missing.
    let c = with(&|c| put_u32(c, names_e, 77));
    assert_refused(
        &c,
        &Expect::any(),
        &["section table: entry", "unknown section id 77"],
    );
    let c = with(&|c| put_u32(c, names_e, 4));
    assert_refused(
        &c,
        &Expect::any(),
        &["section table: section 'labels' appears twice"],
    );
    // Labels dropped: the last entry (text_classifier) takes its place in a shorter table.
    let last = HEADER_LEN + (section_count(&b) - 1) * ENTRY_LEN;
    let c = with(&|c| {
        c.copy_within(last..last + ENTRY_LEN, labels_e);
        c[last..last + ENTRY_LEN].fill(0);
        put_u32(c, 20, section_count(&b) as u32 - 1);
    });
    assert_refused(&c, &Expect::any(), &["section 'labels': missing"]);
    // Scales on f16 keys.
    let c = with(&|c| put_u32(c, 44, 2));
    assert_refused(&c, &Expect::any(), &["section 'keys'"]);
    // A dimension beyond the limit; a key count far beyond the file.
    let c = with(&|c| put_u32(c, 32, u32::MAX));
    assert_refused(
        &c,
        &Expect::any(),
        &["header: feature dim 4294967295 exceeds the limit 65536"],
    );
    let c = with(&|c| put_u32(c, 36, u32::MAX));
    assert_refused(
        &c,
        &Expect::any(),
        &["section 'keys': 35 bytes, but 4294967295 int8 keys of dim 7 take 30064771065"],
    );
    // Unknown dtype; zero dim; zero classes.
    let c = with(&|c| put_u32(c, 44, 9));
    assert_refused(&c, &Expect::any(), &["header: unknown key dtype code 9"]);
    let c = with(&|c| put_u32(c, 32, 0));
    assert_refused(&c, &Expect::any(), &["header: feature dim is 0"]);
    let c = with(&|c| put_u32(c, 40, 0));
    assert_refused(&c, &Expect::any(), &["header: the pack has 0 classes"]);
    // Too many sections for the file.
    let c = with(&|c| put_u32(c, 20, 16));
    assert_refused(&c, &Expect::any(), &["section"]);
    let c = with(&|c| put_u32(c, 20, 17));
    assert_refused(&c, &Expect::any(), &["header: 17 sections"]);
    // NaN alpha with a valid checksum.
    let c = with(&|c| put_u32(c, 52, f32::NAN.to_bits()));
    assert_refused(&c, &Expect::any(), &["header: alpha is NaN"]);
}

#[test]
fn data_after_the_end_is_refused() {
    let mut b = Fixture::small().bytes();
    b.extend_from_slice(&[0; 64]);
    assert_refused(
        &b,
        &Expect::any(),
        &["header: header says", "data after the end"],
    );
}

// ---------------------------------------------------------------------------------------------
// Files and inspection

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pack");
    let msg = Pack::open(&missing, &Expect::any())
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&missing.display().to_string()) && msg.contains("cannot open"),
        "{msg}"
    );
    let empty = dir.path().join("keys.pack");
    std::fs::write(&empty, b"").unwrap();
    let msg = Pack::open(&empty, &Expect::any()).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: truncated: 0 bytes, shorter than the 256-byte header",
            empty.display()
        )
    );
    let b = Fixture::small().bytes();
    std::fs::write(&empty, &b[..b.len() - 1]).unwrap();
    let msg = Pack::open(&empty, &Expect::any()).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: truncated: header says {} bytes, file has {}",
            empty.display(),
            b.len(),
            b.len() - 1
        )
    );
}

#[test]
fn inspect_reports_a_good_pack() {
    let fx = Fixture::small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.pack");
    write_pack(&path, &fx.contents()).unwrap();
    let ins = inspect(&path).unwrap();
    assert_eq!(ins.problem, None);
    assert_eq!(ins.header_checksum, ChecksumStatus::Ok);
    assert_eq!(
        ins.header,
        Pack::open(&path, &Expect::any()).unwrap().header().clone()
    );
    let names: Vec<String> = ins.sections.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "keys",
            "key_scales",
            "class_offsets",
            "labels",
            "class_names",
            "text_classifier"
        ]
    );
    assert!(ins
        .sections
        .iter()
        .all(|s| s.checksum == ChecksumStatus::Ok));
    let classes: Vec<(Option<&str>, usize)> = ins
        .classes
        .iter()
        .map(|c| (c.name.as_deref(), c.keys))
        .collect();
    assert_eq!(
        classes,
        [
            (Some("class-0"), 2),
            (Some("class-1"), 0),
            (Some("class-2"), 3)
        ]
    );
    let text = ins.to_string();
    assert!(
        text.contains("verdict          ok") && text.contains("class-2"),
        "{text}"
    );
}

#[test]
fn inspect_reports_every_bad_checksum_not_just_the_first() {
    let b = Fixture::small().bytes();
    let mut c = b.clone();
    c[section(&b, "keys").1.start] ^= 1;
    c[section(&b, "labels").1.start] ^= 1;
    let ins = inspect_bytes(&c).unwrap();
    let bad: Vec<String> = ins
        .sections
        .iter()
        .filter(|s| matches!(s.checksum, ChecksumStatus::Mismatch { .. }))
        .map(|s| s.name())
        .collect();
    assert_eq!(bad, ["keys", "labels"]);
    assert!(ins
        .problem
        .as_deref()
        .unwrap()
        .contains("section 'keys': crc32c mismatch"));
    assert_eq!(ins.classes.len(), 3);
    // A bad header checksum is reported, not fatal.
    let mut c = b.clone();
    c[60] ^= 4;
    let ins = inspect_bytes(&c).unwrap();
    assert!(matches!(
        ins.header_checksum,
        ChecksumStatus::Mismatch { .. }
    ));
    // Truncated: sections past the end are out of bounds.
    let ins = inspect_bytes(&b[..section(&b, "labels").1.start + 1]).unwrap();
    let oob: Vec<String> = ins
        .sections
        .iter()
        .filter(|s| s.checksum == ChecksumStatus::OutOfBounds)
        .map(|s| s.name())
        .collect();
    assert_eq!(oob, ["labels", "class_names", "text_classifier"]);
    assert!(ins.problem.as_deref().unwrap().contains("truncated"));
    // Not a pack at all.
    let msg = inspect_bytes(b"hello").unwrap_err().to_string();
    assert!(msg.contains("not an adapter pack"), "{msg}");
}

#[test]
fn section_names_match_the_library() {
    for id in pack::SectionId::ALL {
        assert_eq!(section_name(id.code()), id.name());
    }
}

// ---------------------------------------------------------------------------------------------
// Any bytes: Ok or Err, never a panic

/// Uses whatever opened, the way the runtime would.
fn exercise(pack: &Pack) {
    let keys = pack.keys();
    let _ = (pack.labels(), pack.class_names(), pack.text_classifier());
    let mut scratch = Scratch::new(keys.dim());
    let q = vec![0.5f32; keys.dim()];
    let mut out = vec![0.0; keys.n_classes()];
    Kernel::scalar()
        .class_affinity(&q, &keys, pack.params().beta, &mut scratch, &mut out)
        .unwrap();
}

fn fixtures_for_proptest() -> Vec<Vec<u8>> {
    vec![
        Fixture::small().bytes(),
        Fixture::new(KeyDtype::F16, 3, &[1, 0, 2], false).bytes(),
        Fixture::new(KeyDtype::F32, 2, &[1, 1], true).bytes(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_mutations_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        fix_checksums in any::<bool>(),
    ) {
        let mut b = fixtures_for_proptest().swap_remove(which);
        for (at, v) in edits {
            let i = at.index(b.len());
            b[i] = v;
        }
        if let Some(c) = cut {
            let n = c.index(b.len() + 1);
            b.truncate(n);
        }
        // With checksums made valid again the semantic checks are what must hold the line.
        if fix_checksums && b.len() >= HEADER_LEN && section_count(&b) <= 16 && table_end(&b) <= b.len() {
            recrc(&mut b);
        }
        match Pack::from_bytes(&b, &Expect::any()) {
            Ok(p) => exercise(&p),
            Err(e) => prop_assert!(!e.to_string().contains('\n')),
        }
        let _ = inspect_bytes(&b).map(|i| i.to_string());
    }

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2048), magic in any::<bool>()) {
        let mut b = b;
        if magic && b.len() >= 16 {
            b[..8].copy_from_slice(b"TIPEPACK");
            b[8..16].copy_from_slice(&[1, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a]);
        }
        if let Ok(p) = Pack::from_bytes(&b, &Expect::any()) {
            exercise(&p);
        }
        let _ = inspect_bytes(&b);
    }
}

/// Writes valid packs as a seed corpus for the fuzzer (FORMAT.md, "Fuzzing"): run with
/// `TIPEDGE_FUZZ_SEEDS=fuzz/corpus/pack_reader cargo test --no-default-features --test pack
/// -- --ignored write_fuzz_seeds`. Each seed starts with the target's mode byte (odd: the target
/// recomputes checksums after mutating).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("TIPEDGE_FUZZ_SEEDS") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let seeds = [
        ("int8-w", Fixture::small()),
        ("fp16", Fixture::new(KeyDtype::F16, 3, &[1, 0, 2], false)),
        ("f32-w", Fixture::new(KeyDtype::F32, 2, &[1, 1], true)),
        ("int8-1class", Fixture::new(KeyDtype::I8, 1, &[2], false)),
    ];
    let write = |name: &str, pack: Vec<u8>| {
        for mode in [0u8, 1] {
            let mut b = vec![mode];
            b.extend(&pack);
            std::fs::write(Path::new(&dir).join(format!("{name}-{mode}")), b).unwrap();
        }
    };
    for (name, fx) in seeds {
        write(name, fx.bytes());
    }
    // Version 2 (a temperature) and version 3 (stored shots, with and without a temperature).
    let fx = Fixture::small();
    let mut c = fx.contents();
    c.temperature = Some(0.5);
    write("int8-w-v2", encode(&c).unwrap());
    let features: Vec<f32> = (0..3 * 7).map(|i| i as f32 * 0.01).collect();
    let sources = vec![
        "a.jpg sha256 0011".to_string(),
        String::new(),
        "frame 7".into(),
    ];
    c.stored_shots = Some(StoredShots {
        features: &features,
        labels: &[0, 2, 2],
        sources: &sources,
    });
    write("int8-w-v3-t", encode(&c).unwrap());
    c.temperature = None;
    write("int8-w-v3", encode(&c).unwrap());
    // Version 4: a GDA layer (head both, with the stored shots), a GDA head alone, a choice
    // record alone.
    let weights: Vec<f32> = (0..3 * 7).map(|i| i as f32 * 0.5 - 3.0).collect();
    let gda = GdaTerm {
        weights: &weights,
        bias: &[0.25, -1.0, 2.0],
        alpha: 0.1,
    };
    c.head = Head::Both;
    c.gda = Some(gda);
    c.choice = Some(r#"{"recipe":"plain","head":"both"}"#);
    write("int8-w-v4-both", encode(&c).unwrap());
    let mut c = fx.contents();
    c.head = Head::Gda;
    c.gda = Some(gda);
    write("int8-w-v4-gda", encode(&c).unwrap());
    let mut c = fx.contents();
    c.choice = Some(r#"{"recipe":"flip","head":"tip"}"#);
    write("int8-w-v4-choice", encode(&c).unwrap());
    // Version 5: a prompt context.
    let context = context_frame();
    let mut c = fx.contents();
    c.prompt_context = Some(&context);
    write("int8-w-v5-prompt", encode(&c).unwrap());
}
