//! The C ABI called as C calls it (through the `extern "C"` functions): a frame classified
//! through it equals `Session::classify`; swapping packs; and every kind of bad input — NULL
//! pointers, short buffers, a stride below a row, unknown format codes, freed and foreign
//! handles, non-UTF-8 paths, bad options — is an error code and a one-line message, never a
//! crash.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::Arc;

use tipedge::adapter::AdapterParams;
use tipedge::classifier::Classifier;
use tipedge::encoder::{ImageEncoder, RunOptions};
use tipedge::kernel::KeyDtype;
use tipedge::pack::{PackDraft, Provenance};
use tipedge::preprocess::{FrameRef, PixelFormat};
use tipedge::session::{Session, SessionOptions};
use tipedge_c::*;

use tipedge_status::*;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn c(s: &Path) -> CString {
    CString::new(s.to_str().unwrap()).unwrap()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(tipedge_last_error()) }
        .to_str()
        .unwrap()
        .to_string()
}

/// A pack of 3 classes for EfficientNet-Lite0 (random unit keys), written to `dir/name`.
fn pack(dir: &Path, name: &str, names: [&str; 3], seed: u64) -> PathBuf {
    let model = repo("models/fixtures/efficientnet-lite0/image.onnx");
    let expect = ImageEncoder::expect_for(&model).unwrap();
    let dim = expect.dim.unwrap();
    let mut rng = tipedge::rng::Rng::new(seed);
    let mut keys: Vec<f32> = (0..6 * dim).map(|_| rng.uniform() as f32 - 0.5).collect();
    tipedge::kernel::l2_normalize_rows(&mut keys, dim);
    let mut draft = PackDraft::from_f32_keys(
        dim,
        keys,
        vec![0, 0, 1, 1, 2, 2],
        names.iter().map(|n| n.to_string()).collect(),
        None,
        AdapterParams::default(),
        expect.encoder.unwrap(),
        Provenance::default(),
    )
    .unwrap();
    draft.convert_keys(KeyDtype::I8).unwrap();
    let path = dir.join(name);
    draft.write(&path).unwrap();
    path
}

/// A 64 × 48 NV12 frame of a gradient.
fn nv12() -> Vec<u8> {
    let (w, h) = (64usize, 48usize);
    let mut f = vec![0u8; w * h * 3 / 2];
    for (i, b) in f.iter_mut().enumerate() {
        *b = ((i * 7 + i / w * 3) % 251) as u8;
    }
    f
}

fn open(pack: &Path) -> *mut tipedge_session {
    let model = c(&repo("models/fixtures/efficientnet-lite0"));
    let mut s = null_mut();
    let st = unsafe { tipedge_session_open(model.as_ptr(), c(pack).as_ptr(), null(), &mut s) };
    assert_eq!(st, TIPEDGE_STATUS_OK, "{}", last_error());
    s
}

#[test]
fn a_frame_through_the_c_abi_equals_session_classify() {
    let dir = tempfile::tempdir().unwrap();
    let p = pack(dir.path(), "a.pack", ["ok", "scratch", "hole"], 1);
    let s = open(&p);
    let frame = nv12();
    let mut out = std::mem::MaybeUninit::<tipedge_prediction>::uninit();
    let st = unsafe {
        tipedge_session_classify(
            s,
            frame.as_ptr(),
            frame.len(),
            64,
            48,
            0,
            tipedge_format::TIPEDGE_FORMAT_NV12 as u32,
            out.as_mut_ptr(),
        )
    };
    assert_eq!(st, TIPEDGE_STATUS_OK, "{}", last_error());
    let got = unsafe { out.assume_init() };

    let model = repo("models/fixtures/efficientnet-lite0/image.onnx");
    let encoder = Arc::new(ImageEncoder::load(&model, &RunOptions::default()).unwrap());
    let classifier = Arc::new(Classifier::open(&p, &encoder.expect()).unwrap());
    let mut session = Session::new(encoder, classifier, SessionOptions::default()).unwrap();
    let want = session
        .classify(&FrameRef::packed(&frame, 64, 48, PixelFormat::Nv12).unwrap())
        .unwrap();
    assert_eq!((got.frame, got.n as usize), (0, want.top.len()));
    for (g, w) in got.top.iter().zip(&want.top) {
        assert_eq!(
            (g.class_index as usize, g.logit, g.prob),
            (w.class, w.logit, w.prob)
        );
    }
    let mut n = 0u32;
    assert_eq!(
        unsafe { tipedge_session_class_count(s, &mut n) },
        TIPEDGE_STATUS_OK
    );
    assert_eq!(n, 3);
    let name = |i| unsafe { CStr::from_ptr(tipedge_session_class_name(s, i)) };
    assert_eq!(
        name(got.top[0].class_index).to_str().unwrap(),
        want.best().unwrap().0
    );

    // Swapping: by path, and through a classifier handle (freed while the session uses it).
    let q = pack(dir.path(), "b.pack", ["ok-v2", "scratch-v2", "hole-v2"], 2);
    assert_eq!(
        unsafe { tipedge_session_swap_pack(s, c(&q).as_ptr()) },
        TIPEDGE_STATUS_OK
    );
    assert_eq!(name(0).to_str().unwrap(), "ok-v2");
    let mut classifier = null_mut();
    assert_eq!(
        unsafe { tipedge_classifier_open(s, c(&p).as_ptr(), &mut classifier) },
        TIPEDGE_STATUS_OK
    );
    assert_eq!(
        unsafe { tipedge_session_swap(s, classifier) },
        TIPEDGE_STATUS_OK
    );
    assert_eq!(
        unsafe { tipedge_classifier_free(classifier) },
        TIPEDGE_STATUS_OK
    );
    assert_eq!(name(0).to_str().unwrap(), "ok");
    let st = unsafe {
        tipedge_session_classify(
            s,
            frame.as_ptr(),
            frame.len(),
            64,
            48,
            64,
            5,
            out.as_mut_ptr(),
        )
    };
    assert_eq!(st, TIPEDGE_STATUS_OK, "{}", last_error());
    assert_eq!(unsafe { out.assume_init() }.frame, 1);
    assert_eq!(unsafe { tipedge_session_free(s) }, TIPEDGE_STATUS_OK);
}

#[test]
fn bad_input_is_an_error_code_and_one_line_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let p = pack(dir.path(), "a.pack", ["ok", "scratch", "hole"], 3);
    let s = open(&p);
    let frame = nv12();
    let mut out = std::mem::MaybeUninit::<tipedge_prediction>::uninit();
    let classify = |s, data: *const u8, len, w, h, stride, format, out| unsafe {
        tipedge_session_classify(s, data, len, w, h, stride, format, out)
    };
    let expect = |st: tipedge_status, want: tipedge_status, words: &str| {
        assert_eq!(st, want, "{}", last_error());
        let e = last_error();
        assert!(e.contains(words), "{e:?} lacks {words:?}");
        assert!(!e.contains('\n'));
    };
    let o = out.as_mut_ptr();
    let (ptr, len) = (frame.as_ptr(), frame.len());
    expect(
        classify(s, null(), len, 64, 48, 0, 5, o),
        TIPEDGE_STATUS_NULL_POINTER,
        "data pointer is NULL",
    );
    expect(
        classify(s, ptr, len, 64, 48, 0, 5, null_mut()),
        TIPEDGE_STATUS_NULL_POINTER,
        "prediction output pointer is NULL",
    );
    expect(
        classify(s, ptr, len - 1, 64, 48, 0, 5, o),
        TIPEDGE_STATUS_BAD_FRAME,
        "frame 0",
    );
    expect(
        classify(s, ptr, len, 64, 48, 32, 5, o),
        TIPEDGE_STATUS_BAD_FRAME,
        "frame 1",
    );
    assert!(last_error().contains("stride"), "{}", last_error());
    expect(
        classify(s, ptr, len, 64, 48, 0, 99, o),
        TIPEDGE_STATUS_INVALID_ARGUMENT,
        "unknown pixel format code 99",
    );
    // A bad call (the format code) is not a frame; a corrupt JPEG is.
    expect(
        classify(s, ptr, 10, 0, 0, 0, 7, o),
        TIPEDGE_STATUS_BAD_FRAME,
        "frame 2: JPEG",
    );
    // The session goes on after bad frames, which count.
    assert_eq!(classify(s, ptr, len, 64, 48, 0, 5, o), TIPEDGE_STATUS_OK);
    assert_eq!(unsafe { out.assume_init() }.frame, 3);
    expect(
        unsafe { tipedge_session_class_count(s, null_mut()) },
        TIPEDGE_STATUS_NULL_POINTER,
        "class count",
    );
    assert!(unsafe { tipedge_session_class_name(s, 3) }.is_null());
    assert!(last_error().contains("class index 3 out of range (3 classes)"));

    // Foreign and freed handles.
    let mut foreign = [0u64; 64];
    let fake = foreign.as_mut_ptr().cast::<tipedge_session>();
    expect(
        classify(fake, ptr, len, 64, 48, 0, 5, o),
        TIPEDGE_STATUS_BAD_HANDLE,
        "not a live tipedge session handle",
    );
    expect(
        unsafe { tipedge_session_free(fake) },
        TIPEDGE_STATUS_BAD_HANDLE,
        "session",
    );
    expect(
        unsafe { tipedge_session_swap(s, fake.cast()) },
        TIPEDGE_STATUS_BAD_HANDLE,
        "classifier",
    );
    assert_eq!(unsafe { tipedge_session_free(s) }, TIPEDGE_STATUS_OK);
    expect(
        classify(s, ptr, len, 64, 48, 0, 5, o),
        TIPEDGE_STATUS_BAD_HANDLE,
        "freed",
    );
    expect(
        unsafe { tipedge_session_free(s) },
        TIPEDGE_STATUS_BAD_HANDLE,
        "session",
    );
    assert_eq!(
        unsafe { tipedge_session_free(null_mut()) },
        TIPEDGE_STATUS_OK
    );
    expect(
        classify(null_mut(), ptr, len, 64, 48, 0, 5, o),
        TIPEDGE_STATUS_BAD_HANDLE,
        "session",
    );

    // Opening: NULL and non-UTF-8 paths, a missing pack, bad options, a pack of another model.
    let model = c(&repo("models/fixtures/efficientnet-lite0"));
    let mut h = null_mut();
    expect(
        unsafe { tipedge_session_open(null(), c(&p).as_ptr(), null(), &mut h) },
        TIPEDGE_STATUS_NULL_POINTER,
        "model path is NULL",
    );
    expect(
        unsafe { tipedge_session_open(model.as_ptr(), c(&p).as_ptr(), null(), null_mut()) },
        TIPEDGE_STATUS_NULL_POINTER,
        "session output pointer",
    );
    let not_utf8 = [0xFFu8, 0xFE, 0];
    expect(
        unsafe {
            tipedge_session_open(
                model.as_ptr(),
                not_utf8.as_ptr() as *const c_char,
                null(),
                &mut h,
            )
        },
        TIPEDGE_STATUS_INVALID_ARGUMENT,
        "pack path is not UTF-8",
    );
    expect(
        unsafe {
            tipedge_session_open(
                model.as_ptr(),
                c(&dir.path().join("missing.pack")).as_ptr(),
                null(),
                &mut h,
            )
        },
        TIPEDGE_STATUS_OPEN_FAILED,
        "missing.pack",
    );
    for (top_k, threads, min_prob, words) in [
        (0, 1, 0.0, "top_k"),
        (17, 1, 0.0, "top_k"),
        (3, 0, 0.0, "threads"),
        (3, 1, 1.0, "min_prob"),
        (3, 1, f32::NAN, "min_prob"),
    ] {
        let options = tipedge_options {
            top_k,
            threads,
            min_prob,
            tda: 0,
        };
        expect(
            unsafe { tipedge_session_open(model.as_ptr(), c(&p).as_ptr(), &options, &mut h) },
            TIPEDGE_STATUS_INVALID_ARGUMENT,
            words,
        );
    }
    let clip = c(&repo("models/fixtures/clip-tiny"));
    let st = unsafe { tipedge_session_open(clip.as_ptr(), c(&p).as_ptr(), null(), &mut h) };
    assert_eq!(st, TIPEDGE_STATUS_OPEN_FAILED);
    assert!(h.is_null());
}

#[test]
fn the_version_and_defaults() {
    let v = unsafe { CStr::from_ptr(tipedge_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    let o = tipedge_options_default();
    assert_eq!((o.top_k, o.threads, o.min_prob, o.tda), (3, 1, 0.0, 0));
}

#[test]
fn a_session_reports_the_encoders_load_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let p = pack(dir.path(), "a.pack", ["ok", "scratch", "hole"], 1);
    let open = |model: &Path| {
        let mut s = null_mut();
        let st = unsafe { tipedge_session_open(c(model).as_ptr(), c(&p).as_ptr(), null(), &mut s) };
        assert_eq!(st, TIPEDGE_STATUS_OK, "{}", last_error());
        s
    };
    let warnings = |s| {
        let w = unsafe { tipedge_session_warnings(s) };
        (!w.is_null()).then(|| unsafe { CStr::from_ptr(w) }.to_str().unwrap().to_string())
    };

    // An f32 graph with nothing compiled beside it: nothing to say, on every CPU.
    let fixture = repo("models/fixtures/efficientnet-lite0");
    let s = open(&fixture);
    assert_eq!(warnings(s), None);
    assert_eq!(unsafe { tipedge_session_free(s) }, TIPEDGE_STATUS_OK);

    // A copy with a compiled form whose tar was damaged: the session opens on the ONNX graph
    // and says which file it did not use and why.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let done = tipedge::encoder::compile(&model, &RunOptions::default(), |_| {}).unwrap();
    let mut tar = std::fs::read(&done[0].path).unwrap();
    let n = tar.len();
    tar[n / 2] ^= 1;
    std::fs::write(&done[0].path, &tar).unwrap();
    let s = open(&model);
    let w = warnings(s).expect("a warning for the damaged compiled form");
    assert!(
        w.contains("image.b1-f32.nnef.tar") && w.contains("loaded the ONNX graph instead"),
        "{w}"
    );
    assert_eq!(unsafe { tipedge_session_free(s) }, TIPEDGE_STATUS_OK);

    assert!(unsafe { tipedge_session_warnings(null_mut()) }.is_null());
    assert!(last_error().contains("not a live tipedge session handle"));
}
