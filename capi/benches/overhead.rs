//! The C ABI's per-frame overhead: `tipedge_session_classify` (what a C program calls) against
//! the library's `Session::classify` called from Rust, on the same 640×480 RGB frame with the
//! bundled EfficientNet-Lite0 (1 thread) and a pack of 3 classes × 16 int8 keys. Both are in one
//! run: a criterion group, then blocks of frames alternating between the two paths, reported
//! as the ratio of their medians (the machine is shared; alternating cancels its drift).
//!
//!     cargo bench -p tipedge-capi --bench overhead
//!     TIPEDGE_OVERHEAD_ROUNDS=40 cargo bench -p tipedge-capi --bench overhead -- --skip-criterion

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr;
use std::time::Instant;

#[path = "../../benches/support/mod.rs"]
mod support;

use criterion::{black_box, Criterion};
use tipedge::encoder::{ImageEncoder, ModelPaths, RunOptions};
use tipedge::preprocess::{load_rgb, DecodeLimits, FrameRef, PixelFormat};
use tipedge::session::{Session, SessionOptions};
use tipedge_c::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write_pack(model: &Path, out: &Path) {
    let paths = ModelPaths::resolve(model).unwrap();
    let encoder = ImageEncoder::load(&paths.image, &RunOptions::default()).unwrap();
    support::textile_sized_draft(&encoder).write(out).unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let model = root().join("models/fixtures/efficientnet-lite0");
    let pack = std::env::temp_dir().join(format!("tipedge-overhead-{}.pack", std::process::id()));
    write_pack(&model, &pack);
    let rocket = load_rgb(
        &root().join("models/fixtures/images/rocket.jpg"),
        &DecodeLimits::default(),
    )
    .unwrap();
    let rgb = image::imageops::resize(&rocket, 640, 480, image::imageops::FilterType::Triangle);
    let bytes = rgb.as_raw().clone();

    let mut rust = Session::open(
        &model,
        &pack,
        &RunOptions::default(),
        SessionOptions::default(),
    )
    .unwrap();
    let frame = FrameRef::packed(&bytes, 640, 480, PixelFormat::Rgb24).unwrap();
    let (m, p) = (
        CString::new(model.to_str().unwrap()).unwrap(),
        CString::new(pack.to_str().unwrap()).unwrap(),
    );
    let mut c: *mut tipedge_session = ptr::null_mut();
    // SAFETY: valid strings and output pointer; the defaults (NULL options) match the Rust
    // session's (top-3, 1 thread).
    let status = unsafe { tipedge_session_open(m.as_ptr(), p.as_ptr(), ptr::null(), &mut c) };
    assert_eq!(status, tipedge_status::TIPEDGE_STATUS_OK);
    let mut out = std::mem::MaybeUninit::<tipedge_prediction>::uninit();
    let c_classify = |out: &mut std::mem::MaybeUninit<tipedge_prediction>| {
        // SAFETY: a live session, `bytes.len()` readable bytes, a writable prediction.
        let s = unsafe {
            tipedge_session_classify(
                c,
                bytes.as_ptr(),
                bytes.len(),
                640,
                480,
                0,
                tipedge_format::TIPEDGE_FORMAT_RGB24 as u32,
                out.as_mut_ptr(),
            )
        };
        assert_eq!(s, tipedge_status::TIPEDGE_STATUS_OK);
    };
    // The same answer both ways.
    c_classify(&mut out);
    let want = rust.classify(&frame).unwrap();
    // SAFETY: written by the successful call above.
    let got = unsafe { out.assume_init() };
    assert_eq!(got.top[0].class_index as usize, want.top[0].class);
    assert_eq!(got.top[0].prob, want.top[0].prob);

    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--skip-criterion") {
        let mut criterion = Criterion::default().configure_from_args();
        let mut g = criterion.benchmark_group("640x480 rgb24 frame -> prediction (1 thread)");
        g.sample_size(30);
        g.bench_function("Rust: Session::classify", |b| {
            b.iter(|| black_box(rust.classify(black_box(&frame)).unwrap()))
        });
        g.bench_function("C ABI: tipedge_session_classify", |b| {
            b.iter(|| c_classify(&mut out))
        });
        g.finish();
        criterion.final_summary();
    }

    // Alternating blocks: the ratio of the medians of per-frame times.
    let rounds: usize = std::env::var("TIPEDGE_OVERHEAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    const BLOCK: usize = 10;
    let (mut r_times, mut c_times) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for first_rust in [round % 2 == 0, round % 2 == 1] {
            let t = Instant::now();
            for _ in 0..BLOCK {
                if first_rust {
                    black_box(rust.classify(&frame).unwrap());
                } else {
                    c_classify(&mut out);
                }
            }
            let per = t.elapsed().as_secs_f64() * 1e3 / BLOCK as f64;
            if first_rust {
                r_times.push(per);
            } else {
                c_times.push(per);
            }
        }
    }
    let (r, cm) = (median(r_times), median(c_times));
    println!(
        "alternating blocks of {BLOCK} frames, {rounds} rounds: Rust Session::classify {r:.3} ms, \
         C ABI {cm:.3} ms per frame (medians); C/Rust = {:.4} ({:+.2} %)",
        cm / r,
        (cm / r - 1.0) * 100.0
    );
    // SAFETY: a live handle, freed once.
    unsafe { tipedge_session_free(c) };
    let _ = std::fs::remove_file(&pack);
}
